"""Strict YAML reading that keeps every value's position.

PyYAML's composer gives nodes with marks; we turn them into a small tree of
``YMap``/``YSeq``/``YScalar`` so that every later check can name the file,
line and column of the value it rejects.  Only plain data is accepted:
aliases, merge keys, duplicate keys, non-string keys and non-JSON scalars
(timestamps, binary, non-finite floats) are errors, because each of them is a
way for a policy to mean something other than what it appears to say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from agentwall.errors import PolicyError

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


@dataclass(frozen=True, slots=True)
class Pos:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(slots=True)
class YScalar:
    value: str | int | float | bool | None
    pos: Pos


@dataclass(slots=True)
class YSeq:
    items: list[YNode]
    pos: Pos


@dataclass(slots=True)
class YEntry:
    key: str
    key_pos: Pos
    value: YNode


@dataclass(slots=True)
class YMap:
    entries: list[YEntry]
    pos: Pos
    index: dict[str, YEntry] = field(default_factory=dict)

    def get(self, key: str) -> YNode | None:
        entry = self.index.get(key)
        return entry.value if entry is not None else None

    def key_pos(self, key: str) -> Pos:
        entry = self.index.get(key)
        return entry.key_pos if entry is not None else self.pos


YNode = YScalar | YSeq | YMap


def to_python(node: YNode) -> Any:
    """Plain Python value of a node (dicts keep YAML order)."""
    if isinstance(node, YScalar):
        return node.value
    if isinstance(node, YSeq):
        return [to_python(item) for item in node.items]
    return {entry.key: to_python(entry.value) for entry in node.entries}


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases while composing (billion-laughs and
    action-at-a-distance both start with an alias)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _Refused("YAML aliases (*name) are not allowed in a policy", event.start_mark)
        event = self.peek_event()  # type: ignore[no-untyped-call]
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _Refused("YAML anchors (&name) are not allowed in a policy", event.start_mark)
        return super().compose_node(parent, index)


class _Refused(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _pos(mark: Any) -> Pos:
    return Pos(int(mark.line) + 1, int(mark.column) + 1)


def parse_yaml(text: str, source: str | None) -> YNode:
    """Parse one YAML document into a positioned tree, or raise PolicyError."""
    try:
        loader = _NoAliasLoader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, source) from None
    try:
        try:
            root = loader.get_single_node()
        except _Refused as exc:
            p = _pos(exc.mark)
            raise PolicyError(exc.message, path=source, line=p.line, column=p.column) from None
        except yaml.reader.ReaderError as exc:
            raise _reader_error(exc, text, source) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = int(mark.line) + 1 if mark is not None else None
            column = int(mark.column) + 1 if mark is not None else None
            problem = exc.problem or exc.context or "invalid YAML"
            raise PolicyError(
                f"YAML syntax error: {problem}", path=source, line=line, column=column
            ) from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"YAML error: {exc}", path=source) from None
        except RecursionError:
            raise PolicyError("the policy nests too deeply", path=source) from None
        if root is None:
            raise PolicyError("the policy is empty", path=source, line=1, column=1)
        return _convert(loader, root, source, depth=0)
    finally:
        loader.dispose()


def _reader_error(exc: yaml.reader.ReaderError, text: str, source: str | None) -> PolicyError:
    """A character YAML does not allow; ReaderError gives only an offset."""
    offset = max(0, min(int(exc.position), len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    char = exc.character
    shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
    return PolicyError(
        f"character {shown} is not allowed in YAML",
        path=source,
        line=line,
        column=column,
    )


_MAX_YAML_DEPTH = 200


def _convert(loader: yaml.SafeLoader, node: Any, source: str | None, depth: int) -> YNode:
    pos = _pos(node.start_mark)
    if depth > _MAX_YAML_DEPTH:
        raise PolicyError(
            "the policy nests too deeply", path=source, line=pos.line, column=pos.column
        )
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP:
            raise PolicyError(
                f"unsupported YAML tag {node.tag!r}", path=source, line=pos.line, column=pos.column
            )
        ymap = YMap([], pos)
        for key_node, value_node in node.value:
            kpos = _pos(key_node.start_mark)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise PolicyError(
                    "YAML merge keys (<<) are not allowed in a policy",
                    path=source,
                    line=kpos.line,
                    column=kpos.column,
                )
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                raise PolicyError(
                    "every mapping key must be a plain string",
                    path=source,
                    line=kpos.line,
                    column=kpos.column,
                )
            key = str(key_node.value)
            if key in ymap.index:
                first = ymap.index[key].key_pos
                raise PolicyError(
                    f"duplicate key {key!r} (first defined at line {first.line})",
                    path=source,
                    line=kpos.line,
                    column=kpos.column,
                    key=key,
                )
            entry = YEntry(key, kpos, _convert(loader, value_node, source, depth + 1))
            ymap.entries.append(entry)
            ymap.index[key] = entry
        return ymap
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            raise PolicyError(
                f"unsupported YAML tag {node.tag!r}", path=source, line=pos.line, column=pos.column
            )
        return YSeq([_convert(loader, item, source, depth + 1) for item in node.value], pos)
    tag = node.tag
    if tag not in (_STR, _INT, _FLOAT, _BOOL, _NULL):
        raise PolicyError(
            f"unsupported YAML value type {tag!r}: write it as a quoted string",
            path=source,
            line=pos.line,
            column=pos.column,
        )
    try:
        value = loader.construct_object(node, deep=True)
    except (ValueError, OverflowError, yaml.YAMLError) as exc:
        # e.g. an integer beyond Python's digit limit
        raise PolicyError(
            f"unreadable value: {exc}", path=source, line=pos.line, column=pos.column
        ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise PolicyError(
            "non-finite numbers (.inf, .nan) are not allowed",
            path=source,
            line=pos.line,
            column=pos.column,
        )
    return YScalar(value, pos)
