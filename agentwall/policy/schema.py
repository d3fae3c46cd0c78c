"""Nested JSON Schema (``schema:`` on a parameter), compiled once at load.

fastjsonschema generates a Python validator; four things are tightened:

* Unknown keywords are load errors with "did you mean" (fastjsonschema would
  ignore ``maximun`` silently, and the schema would allow what it seems to
  forbid).  Keywords it does not implement are refused rather than ignored.
* Every object schema that names no ``additionalProperties`` gets ``false``.
  Writing ``additionalProperties`` yourself (``true`` or a schema) opts out
  for that object.
* ``pattern`` and ``patternProperties`` are compiled with RE2, anchored as
  ``^(?:...)$`` like every AgentWall pattern, and swapped into the generated
  validator in place of the ``re`` objects fastjsonschema made; format
  regexes are swapped for RE2 too.  No backtracking engine ever sees data.
* ``$ref`` must point inside the schema (``#...``) and ``$id`` is refused, so
  compiling never fetches anything; defaults are never written into data.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from typing import Any

import fastjsonschema
from fastjsonschema.draft07 import CodeGeneratorDraft07

from agentwall.errors import PolicyError
from agentwall.policy.patterns import PatternSyntaxError, compile_anchored, compile_re2
from agentwall.policy.yamlsrc import Pos, YMap, YNode, YScalar, YSeq, to_python

# Keywords whose value is a map of name -> schema.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions", "$defs"})
# Keywords whose value is one schema (or, for items, a list of schemas).
_SCHEMA_ONE = frozenset(
    {
        "additionalProperties",
        "additionalItems",
        "items",
        "contains",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
    }
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_VALUE_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "format",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxProperties",
        "minProperties",
        "required",
        "dependencies",
        "contentEncoding",
        "contentMediaType",
    }
)
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$ref",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "readOnly",
        "writeOnly",
        "deprecated",
    }
)
KNOWN_KEYWORDS = _SCHEMA_MAPS | _SCHEMA_ONE | _SCHEMA_LISTS | _VALUE_KEYWORDS | _ANNOTATIONS
_REFUSED = {
    "$id": "$id changes the base URI and can make the validator fetch remote schemas",
    "id": "id changes the base URI and can make the validator fetch remote schemas",
}
_DRAFT07 = ("http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-07/schema")
_JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")

# Format regexes RE2 can run.  fastjsonschema's email regex uses lookaround;
# this one is the same shape without it.
_FORMAT_OVERRIDES = {"email": r"^[^@.\s][^@\s]*@[^@\s]+\.[^@\s]+$"}
_REFUSED_FORMATS = {
    "regex": "it compiles the data as a Python regex",
    "idn-hostname": "its regex needs backtracking",
}


def _err(
    msg: str, source: str | None, pos: Pos, key: str | None = None, suggestion: str | None = None
) -> PolicyError:
    return PolicyError(
        msg, path=source, line=pos.line, column=pos.column, key=key, suggestion=suggestion
    )


def _suggest(word: str, choices: Any) -> str | None:
    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class CompiledSchema:
    """A validator plus the effective schema it enforces."""

    __slots__ = ("effective", "validate")

    def __init__(self, effective: dict[str, Any], validate: Callable[[Any], Any]) -> None:
        self.effective = effective
        self.validate = validate


def _check(node: YNode, source: str | None, patterns: dict[str, Any], where: str) -> None:
    """Walk one schema node: keywords known, patterns RE2, refs local."""
    if isinstance(node, YScalar) and isinstance(node.value, bool):
        return  # true/false are valid schemas
    if not isinstance(node, YMap):
        raise _err(f"{where}: a JSON Schema must be a mapping (or true/false)", source, node.pos)
    for entry in node.entries:
        key, value = entry.key, entry.value
        if key in _REFUSED:
            raise _err(
                f"{where}: {key!r} is not allowed: {_REFUSED[key]}", source, entry.key_pos, key=key
            )
        if key not in KNOWN_KEYWORDS:
            raise _err(
                f"{where}: unknown or unsupported JSON Schema keyword {key!r} "
                "(the validator implements draft-07)",
                source,
                entry.key_pos,
                key=key,
                suggestion=_suggest(key, KNOWN_KEYWORDS),
            )
        if key in _SCHEMA_MAPS:
            if not isinstance(value, YMap):
                raise _err(f"{where}: {key} must be a mapping", source, value.pos, key=key)
            for sub in value.entries:
                if key == "patternProperties":
                    _compile_pattern(sub.key, source, sub.key_pos, patterns, key)
                _check(sub.value, source, patterns, f"{where}.{key}.{sub.key}")
        elif key in _SCHEMA_ONE:
            if key == "items" and isinstance(value, YSeq):
                for i, item in enumerate(value.items):
                    _check(item, source, patterns, f"{where}.items[{i}]")
            else:
                _check(value, source, patterns, f"{where}.{key}")
        elif key in _SCHEMA_LISTS:
            if not isinstance(value, YSeq) or not value.items:
                raise _err(
                    f"{where}: {key} must be a non-empty list of schemas",
                    source,
                    value.pos,
                    key=key,
                )
            for i, item in enumerate(value.items):
                _check(item, source, patterns, f"{where}.{key}[{i}]")
        elif key == "dependencies":
            if not isinstance(value, YMap):
                raise _err(f"{where}: dependencies must be a mapping", source, value.pos, key=key)
            for sub in value.entries:
                if not isinstance(sub.value, YSeq):
                    _check(sub.value, source, patterns, f"{where}.dependencies.{sub.key}")
        elif key == "pattern":
            if not isinstance(value, YScalar) or not isinstance(value.value, str):
                raise _err(f"{where}: pattern must be a string", source, value.pos, key=key)
            _compile_pattern(value.value, source, value.pos, patterns, key)
        elif key == "$ref":
            if (
                not isinstance(value, YScalar)
                or not isinstance(value.value, str)
                or not value.value.startswith("#")
            ):
                raise _err(
                    f"{where}: $ref must point inside this schema (start with '#')",
                    source,
                    value.pos,
                    key=key,
                )
        elif key == "$schema":
            if not isinstance(value, YScalar) or value.value not in _DRAFT07:
                raise _err(
                    f"{where}: only draft-07 schemas are supported ($schema: {_DRAFT07[0]!r})",
                    source,
                    value.pos,
                    key=key,
                )
        elif key == "format":
            fmt = value.value if isinstance(value, YScalar) else None
            if not isinstance(fmt, str):
                raise _err(f"{where}: format must be a string", source, value.pos, key=key)
            if fmt in _REFUSED_FORMATS:
                raise _err(
                    f"{where}: format {fmt!r} is not supported: "
                    f"{_REFUSED_FORMATS[fmt]}; use a pattern",
                    source,
                    value.pos,
                    key=key,
                )
            known = set(CodeGeneratorDraft07.FORMAT_REGEXS) - set(_REFUSED_FORMATS)
            if fmt not in known:
                raise _err(
                    f"{where}: unknown format {fmt!r}",
                    source,
                    value.pos,
                    key=key,
                    suggestion=_suggest(fmt, known),
                )
        elif key == "type":
            names = value.items if isinstance(value, YSeq) else [value]
            for n in names:
                if not isinstance(n, YScalar) or n.value not in _JSON_TYPES:
                    shown = n.value if isinstance(n, YScalar) else "?"
                    raise _err(
                        f"{where}: unknown type {shown!r}",
                        source,
                        n.pos,
                        key=key,
                        suggestion=_suggest(str(shown), _JSON_TYPES),
                    )


def _compile_pattern(
    src: str, source: str | None, pos: Pos, patterns: dict[str, Any], key: str
) -> None:
    try:
        patterns[src] = compile_anchored(src)
    except PatternSyntaxError as exc:
        raise _err(f"RE2 cannot compile pattern {src!r}: {exc}", source, pos, key=key) from None


def _is_object_schema(schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    if t == "object" or (isinstance(t, list) and "object" in t):
        return True
    return any(k in schema for k in ("properties", "patternProperties", "required"))


def _inject(schema: Any) -> None:
    """additionalProperties: false into every object schema that names none."""
    if not isinstance(schema, dict):
        return
    if _is_object_schema(schema) and "additionalProperties" not in schema and "$ref" not in schema:
        schema["additionalProperties"] = False
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            for sub in value.values():
                _inject(sub)
        elif key in _SCHEMA_ONE:
            if isinstance(value, list):
                for sub in value:
                    _inject(sub)
            else:
                _inject(value)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            for sub in value:
                _inject(sub)
        elif key == "dependencies" and isinstance(value, dict):
            for sub in value.values():
                _inject(sub)


def compile_schema(node: YNode, source: str | None, where: str) -> CompiledSchema:
    patterns: dict[str, Any] = {}
    _check(node, source, patterns, where)
    effective = to_python(node)
    if isinstance(effective, dict):
        effective = copy.deepcopy(effective)
        _inject(effective)
        # fastjsonschema picks its newest generator when $schema is absent;
        # pin draft-07, the keyword and format set checked above.
        effective.setdefault("$schema", _DRAFT07[0])
    try:
        validate = fastjsonschema.compile(
            effective,
            handlers={},
            formats=dict(_FORMAT_OVERRIDES),
            use_default=False,
            use_formats=True,
        )
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise _err(f"{where}: invalid JSON Schema: {exc}", source, node.pos) from None
    except Exception as exc:  # noqa: BLE001 -- odd schemas can break code generation
        raise _err(
            f"{where}: invalid JSON Schema: {type(exc).__name__}: {exc}", source, node.pos
        ) from None
    _swap_regexes(validate, patterns, source, node.pos, where)
    return CompiledSchema(effective, validate)


def _swap_regexes(
    validate: Any, patterns: dict[str, Any], source: str | None, pos: Pos, where: str
) -> None:
    # fastjsonschema returns the generated function, or a functools.partial of
    # it when custom formats are given; its module globals hold the table.
    func = getattr(validate, "func", validate)
    table = getattr(func, "__globals__", {}).get("REGEX_PATTERNS")
    if table is None:
        # Fail closed: without the table we cannot prove no backtracking
        # regex runs on data.
        raise _err(f"{where}: internal: cannot find the compiled schema's regex table", source, pos)
    for key in list(table):
        if key in patterns:
            table[key] = patterns[key]
        elif key.endswith("_re_pattern"):
            fmt = key[: -len("_re_pattern")]
            src = _FORMAT_OVERRIDES.get(fmt) or CodeGeneratorDraft07.FORMAT_REGEXS[fmt]
            try:
                table[key] = compile_re2(src)
            except PatternSyntaxError as exc:
                raise _err(
                    f"{where}: format {fmt!r} cannot run on RE2: {exc}", source, pos
                ) from None
        else:
            raise _err(
                f"{where}: internal: unexpected regex {key!r} in compiled schema", source, pos
            )
