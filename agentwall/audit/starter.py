"""``agentwall init --from-log``: a tight starter policy from what an agent did.

Folds decision entries into a policy in the YAML format of docs/policy.md:
``default_action: deny``; every observed tool allowed with its parameters,
their types, ``enum`` for small value sets, ``within`` roots for paths, host
patterns for URLs and bounds for numbers; observed resources, prompts and
non-default methods; and ``# DECIDE:`` comments wherever a person must choose.

It allows every call in the log except those Safe Mode denied: a tool's
``allow`` never overrides Safe Mode, and the starter policy does not switch
Safe Mode rules off for you (it says where one fired).  Values from
Safe-Mode-denied calls are left out of the inference so they cannot widen a
root or an enum.  Parameters are only known when the proxy ran with
``--log-params``; without them, each tool accepts any arguments and a comment
says so.  Pure: entries in, text out.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from agentwall.policy.methods import TARGETED, builtin_allows
from agentwall.policy.paths import is_within, normalise_path

ENUM_MAX: Final = 5
URL_RE: Final = re.compile(r"^(https?)://([^/?#\s]+)(?:[/?#].*)?$", re.DOTALL)


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar that PyYAML reads back exactly."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code in (0x2028, 0x2029, 0xFEFF):
            out.append(f"\\u{code:04x}")  # line breaks / BOM to some YAML readers
        elif (
            0x20 <= code <= 0x7E
            or (0xA0 <= code <= 0xD7FF)
            or (0xE000 <= code <= 0xFFFD)
            or code >= 0x10000
        ):
            out.append(ch)
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return yaml_str(str(value))


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _bound(n: int) -> int:
    size = 32
    while size < 2 * n:
        size *= 2
    return size


def _is_path(value: str) -> bool:
    return value.startswith("/") and "\x00" not in value


def path_roots(values: Iterable[str]) -> list[str] | None:
    """The narrowest directories that hold every observed path, one per
    top-level directory.  A last segment without a dot is taken to be a
    directory itself (``/workspace``), one with a dot a file in its parent.

    Each root must admit its paths by the evaluator's own rule
    (``is_within``): a spelling that NFKC folds to something else (``/¯``
    folds to ``/ ̄``) must fold inside a root too, so its root widens to the
    parent until it does.  None when no root can admit a path (a
    percent-encoded separator is refused whatever the root)."""
    paths = list(values)
    groups: dict[str, list[str]] = {}
    for raw in paths:
        path = posixpath.normpath(raw.replace("\\", "/"))
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        leaf = posixpath.basename(path)
        directory = posixpath.dirname(path) if "." in leaf else path
        first = directory.split("/")[1] if directory != "/" else ""
        groups.setdefault(first, []).append(directory or "/")
    roots = {posixpath.commonpath(group) for group in groups.values()}
    for raw in paths:
        while not is_within(raw, tuple(sorted(roots))):
            holder = _holding_root(raw, roots)
            if holder is None or holder == "/":
                return None
            roots.discard(holder)
            roots.add(posixpath.dirname(holder))
    return sorted(roots)


def _holding_root(path: str, roots: set[str]) -> str | None:
    """The deepest root that lexically holds ``path``."""
    norm = normalise_path(path)
    if norm is None:
        return None
    holding = [r for r in roots if r == "/" or norm == r or norm.startswith(r + "/")]
    return max(holding, key=len) if holding else None


def url_pattern(values: Iterable[str]) -> tuple[str, list[str]]:
    origins = sorted({f"{m.group(1)}://{m.group(2)}" for v in values if (m := URL_RE.match(v))})
    alternatives = "|".join(re.escape(o) for o in origins)
    return f"(?:{alternatives})(?:[/?#].*)?", origins


@dataclass
class _Param:
    values: list[Any] = field(default_factory=list)
    present: int = 0
    masked: bool = False


@dataclass
class _Target:
    calls: int = 0
    with_args: int = 0
    params: dict[str, _Param] = field(default_factory=dict)
    no_params: int = 0
    safe_mode_denied: Counter[str] = field(default_factory=Counter)
    non_object_args: int = 0


def _observe(target: _Target, args: Any, masked: Iterable[str], prefix: str) -> None:
    if args is None:
        args = {}
    if not isinstance(args, dict):
        target.non_object_args += 1
        return
    target.with_args += 1
    masked_names = {p[len(prefix) :].split("/")[0] for p in masked if p.startswith(prefix)}
    for name, value in args.items():
        param = target.params.setdefault(name, _Param())
        param.present += 1
        if name in masked_names:
            param.masked = True
        param.values.append(value)


def _param_lines(name: str, param: _Param, total: int, indent: str) -> list[str]:
    lines = [f"{indent}- name: {yaml_str(name)}"]
    inner = indent + "  "
    values = param.values
    types = {json_type(v) for v in values}
    if param.present == total:
        lines.append(f"{inner}required: true")
    if param.masked:
        lines.append(f"{inner}# DECIDE: this value was masked as a secret in the log")
    if types == {"string"}:
        lines.append(f"{inner}type: string")
        strings: list[str] = values
        longest = max(len(s) for s in strings)
        distinct = sorted(set(strings))
        if param.masked:
            lines.append(f"{inner}max_length: {_bound(longest)}")
        elif all(_is_path(s) for s in strings) and (roots := path_roots(strings)) is not None:
            lines.append(f"{inner}within: [{', '.join(yaml_str(r) for r in roots)}]")
            lines.append(f"{inner}max_length: {_bound(longest)}")
            if "/" in roots:
                lines.append(f"{inner}# DECIDE: a root of / allows any path; narrow it")
            if any(posixpath.normpath(s) != s for s in strings):
                lines.append(f"{inner}# DECIDE: some observed paths used '..', '.' or '//'")
        elif len(distinct) <= ENUM_MAX:
            lines.append(f"{inner}enum: [{', '.join(yaml_str(s) for s in distinct)}]")
        elif all(URL_RE.match(s) for s in strings):
            pattern, origins = url_pattern(strings)
            lines.append(f"{inner}pattern: {yaml_str(pattern)}")
            lines.append(f"{inner}max_length: {_bound(longest)}")
            lines.append(f"{inner}# observed hosts: {', '.join(origins)}")
        else:
            lines.append(f"{inner}max_length: {_bound(longest)}")
            lines.append(
                f"{inner}# DECIDE: free text ({len(distinct)} distinct values seen); "
                "add a pattern if it has a shape"
            )
    elif types == {"integer"}:
        lines.append(f"{inner}type: integer")
        distinct_ints = sorted(set(values))
        if len(distinct_ints) <= ENUM_MAX:
            lines.append(f"{inner}enum: [{', '.join(str(v) for v in distinct_ints)}]")
        else:
            lines.append(f"{inner}minimum: {distinct_ints[0]}")
            lines.append(f"{inner}maximum: {distinct_ints[-1]}")
            lines.append(f"{inner}# DECIDE: bounds are the observed range")
    elif types <= {"integer", "number"}:
        lines.append(f"{inner}type: number")
        lines.append(f"{inner}minimum: {yaml_scalar(min(values))}")
        lines.append(f"{inner}maximum: {yaml_scalar(max(values))}")
        lines.append(f"{inner}# DECIDE: bounds are the observed range")
    elif types == {"boolean"}:
        lines.append(f"{inner}type: boolean")
    elif types == {"array"}:
        lines.append(f"{inner}type: array")
        lines.append(f"{inner}max_items: {_bound(max(len(v) for v in values))}")
        items = [item for v in values for item in v]
        item_roots = (
            path_roots(items)
            if items and all(isinstance(i, str) and _is_path(i) for i in items)
            else None
        )
        if item_roots is not None:
            listed = ", ".join(yaml_str(r) for r in item_roots)
            lines.append(f"{inner}items: {{type: string, within: [{listed}]}}")
        else:
            lines.append(f"{inner}# DECIDE: describe the items (items: or schema:)")
    elif types == {"object"}:
        lines.append(f"{inner}type: object")
        lines.append(f"{inner}# DECIDE: describe this object with a schema:")
    else:
        lines.append(f"{inner}# DECIDE: seen as {' and '.join(sorted(types))}; pick a type")
    return lines


@dataclass
class StarterPolicy:
    text: str
    tools: int
    decisions: int
    skipped: int
    notes: list[str]


def _safe_mode_comment(target: _Target, indent: str) -> list[str]:
    if not target.safe_mode_denied:
        return []
    rules = ", ".join(f"{rule} ({n}x)" for rule, n in sorted(target.safe_mode_denied.items()))
    return [
        f"{indent}# Safe Mode denied calls here: {rules}. They stay denied; to allow one on",
        f"{indent}# purpose, add safe_mode: {{disable: [RULE]}} to this entry.",
    ]


def starter_policy(entries: Iterable[dict[str, Any]], *, source: str = "the log") -> StarterPolicy:
    tools: dict[str, _Target] = {}
    prompts: dict[str, _Target] = {}
    resources: dict[str, int] = {}
    resources_denied: Counter[str] = Counter()
    methods: Counter[str] = Counter()
    subjects: set[str] = set()
    per_second: Counter[tuple[str, str]] = Counter()
    decisions = 0
    skipped = 0
    for entry in entries:
        if entry.get("event") != "decision":
            continue
        decisions += 1
        detail = entry.get("detail")
        origin = entry.get("origin") or (detail.get("origin") if isinstance(detail, dict) else None)
        if origin == "server":
            skipped += 1
            continue
        method = entry.get("method")
        if not isinstance(method, str):
            skipped += 1
            continue
        if isinstance(entry.get("subject"), str):
            subjects.add(entry["subject"])
        ts, session = entry.get("ts"), entry.get("session")
        if isinstance(ts, str) and isinstance(session, str):
            per_second[(session, ts[:19])] += 1
        rule = entry.get("rule_id")
        by_safe_mode = (
            isinstance(rule, str)
            and rule.startswith("safe_mode.")
            and entry.get("decision") in ("deny", "dry_run_deny")
        )
        params = entry.get("params")
        raw_masked = entry.get("masked")
        masked = [str(p) for p in raw_masked] if isinstance(raw_masked, list) else []
        target = entry.get("target")
        if method == "tools/call" or method == "prompts/get":
            name = (
                target
                if isinstance(target, str)
                else (params.get("name") if isinstance(params, dict) else None)
            )
            if not isinstance(name, str):
                skipped += 1
                continue
            table = tools if method == "tools/call" else prompts
            observed = table.setdefault(name, _Target())
            observed.calls += 1
            key = "arguments"
            if by_safe_mode:
                observed.safe_mode_denied[str(rule)] += 1
            elif "params" not in entry or params is None:
                observed.no_params += 1
            elif isinstance(params, dict):
                _observe(observed, params.get(key), masked, f"/{key}/")
            else:
                observed.non_object_args += 1
        elif method in ("resources/read", "resources/subscribe"):
            uri = (
                target
                if isinstance(target, str)
                else (params.get("uri") if isinstance(params, dict) else None)
            )
            if not isinstance(uri, str):
                skipped += 1
                continue
            if by_safe_mode:
                resources_denied[uri] += 1
            else:
                resources[uri] = resources.get(uri, 0) + 1
        elif method not in TARGETED and not builtin_allows(method, "client"):
            methods[method] += 1

    out: list[str] = [
        f"# Starter policy generated by `agentwall init --from-log` from {source}",
        f"# ({decisions} decisions).  It allows what the agent did and nothing else:",
        "# review every '# DECIDE:' line, then check it with",
        "#   agentwall test --policy THIS_FILE LOG",
        'version: "2"',
        "default_action: deny",
    ]
    if subjects:
        names = ", ".join(sorted(subjects)[:10])
        out.append(
            f"# DECIDE: callers seen: {names}; consider an identity: block and per-tool "
            "identity rules"
        )
    if per_second:
        peak = max(per_second.values())
        out.append(f"# DECIDE: peak rate seen: {peak} calls in one second in one session;")
        out.append(f"# session: {{max_calls_per_second: {max(1, 2 * peak)}}} would leave headroom")
    notes: list[str] = []

    if tools:
        out.append("tools:")
        for name, tool in sorted(tools.items()):
            out.append(f"  - name: {yaml_str(name)}")
            out.append("    action: allow")
            out.append(f"    # {tool.calls} calls observed")
            out += _safe_mode_comment(tool, "    ")
            if not (tool.no_params or tool.non_object_args or tool.with_args):
                out.append("    parameters: []  # DECIDE: every call seen was denied by Safe Mode")
                continue
            if tool.no_params or tool.non_object_args:
                # Without logged params nothing can be inferred: accept any
                # arguments rather than deny calls the agent makes.
                out.append(
                    "    # DECIDE: parameters were not logged for some calls (run the "
                    "proxy with --log-params); this tool accepts any arguments until "
                    "you declare them"
                )
                notes.append(f"tool {name!r}: parameters unknown, any arguments allowed")
                continue
            out.append("    parameters:")
            if not tool.params:
                out[-1] = "    parameters: []"
            for pname, param in sorted(tool.params.items()):
                out += _param_lines(pname, param, tool.with_args, "      ")

    if resources or resources_denied:
        out.append("resources:")
        file_uris = sorted(u for u in resources if u.startswith("file://"))
        other_uris = sorted(u for u in resources if not u.startswith("file://"))
        for uri in other_uris:
            out.append(f"  - uri: {yaml_str(re.escape(uri))}")
            out.append("    action: allow")
        if file_uris:
            paths = [re.sub(r"^file://(localhost)?", "", u) or "/" for u in file_uris]
            # None: a path no root admits (an encoded separator); "/" keeps
            # the rule loadable, and the note says to decide.
            file_roots = path_roots(paths)
            roots = ", ".join(yaml_str(r) for r in (file_roots or ["/"]))
            alternatives = "|".join(re.escape(u) for u in file_uris)
            if len(file_uris) <= 20:
                out.append(f"  - uri: {yaml_str(alternatives)}")
            else:
                out.append(f"  - uri: {yaml_str('file://.*')}")
                out.append(f"    # DECIDE: {len(file_uris)} file URIs seen; narrowed by within")
            out.append("    action: allow")
            out.append(f"    within: [{roots}]")
            if file_roots is None:
                out.append("    # DECIDE: some file URIs are refused by any within root")
        for uri, n in sorted(resources_denied.items()):
            out.append(f"  # Safe Mode denied {n} read(s) of {yaml_str(uri)}; they stay denied")
        if not resources:
            out[-1 - len(resources_denied)] = "resources: []"

    if prompts:
        out.append("prompts:")
        for name, prompt in sorted(prompts.items()):
            out.append(f"  - name: {yaml_str(name)}")
            out.append("    action: allow")
            out += _safe_mode_comment(prompt, "    ")
            if not (prompt.no_params or prompt.non_object_args or prompt.with_args):
                out.append("    arguments: []  # DECIDE: every call seen was denied by Safe Mode")
                continue
            if prompt.no_params or prompt.non_object_args:
                out.append("    # DECIDE: arguments were not logged; any arguments allowed")
                continue
            out.append("    arguments:" if prompt.params else "    arguments: []")
            for pname, param in sorted(prompt.params.items()):
                out += _param_lines(pname, param, prompt.with_args, "      ")

    if methods:
        out.append("methods:")
        out.append("  # DECIDE: methods beyond the shipped defaults that the agent used")
        for method, n in sorted(methods.items()):
            out.append(f"  {yaml_str(method)}: allow  # {n} call(s)")

    return StarterPolicy("\n".join(out) + "\n", len(tools), decisions, skipped, notes)


__all__ = ["StarterPolicy", "path_roots", "starter_policy", "url_pattern", "yaml_str"]
