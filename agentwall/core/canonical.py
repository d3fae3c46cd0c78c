"""The one canonical JSON form: sorted keys, no insignificant whitespace, UTF-8.

Used wherever bytes must be reproducible across processes and by third
parties: argument digests in the audit log, the audit MAC input, decision-cache
keys and the policy content hash.  Non-ASCII is kept as UTF-8 (not escaped),
integers of any size are kept exactly, and floats use the shortest round-trip
form, as in RFC 8785 for the values JSON-RPC messages carry in practice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

_OPTS = orjson.OPT_SORT_KEYS


def canonical_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=_OPTS)
    except (orjson.JSONEncodeError, TypeError):
        # orjson refuses integers beyond 64 bits and lone surrogates; the
        # stdlib encoder takes both, with the same key order and separators.
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8", "surrogatepass")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
