"""The msgspec Structs of ``agentwall.core.jsonrpc``, kept uncompiled (agentwall/compiled.py)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

RpcId = int | str


class ErrorObject(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: int
    message: str
    data: Any = UNSET


class Request(msgspec.Struct, frozen=True, kw_only=True):
    jsonrpc: Literal["2.0"] = "2.0"
    id: RpcId
    method: str
    params: dict[str, Any] | list[Any] | UnsetType = UNSET


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    jsonrpc: Literal["2.0"] = "2.0"
    method: str
    params: dict[str, Any] | list[Any] | UnsetType = UNSET


class Response(msgspec.Struct, frozen=True, kw_only=True):
    jsonrpc: Literal["2.0"] = "2.0"
    id: RpcId
    result: Any


class ErrorResponse(msgspec.Struct, frozen=True, kw_only=True):
    jsonrpc: Literal["2.0"] = "2.0"
    # null only when the request's id could not be read (parse errors).
    id: RpcId | None
    error: ErrorObject


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """Every member a JSON-RPC message may have; classified afterwards."""

    jsonrpc: Literal["2.0"]
    id: RpcId | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    params: dict[str, Any] | list[Any] | UnsetType = UNSET
    result: Any = UNSET
    error: ErrorObject | UnsetType = UNSET
