"""``evaluate(policy, call, now_ns) -> Decision``: pure and total.

Order of judgement for a message:

1. Responses pass (result inspection hooks in here later; see docs).
2. Shape and limits of ``params`` (size, depth, Unicode, JSON types): over a
   limit is a deny, never a reason to skip checks.
3. The policy: tools/call by ``tools:``, resources/read and
   resources/subscribe by ``resources:``, prompts/get by ``prompts:``, every
   other method by ``methods:`` and the shipped defaults; then the target's
   identity rule and its parameters.
4. Safe Mode over every string of a client message's params, whatever
   step 3 said: an allow never overrides it.

Nothing a caller sends can make this raise: an unexpected exception becomes a
deny with rule ``internal.error`` (fail closed).

Verdicts beyond allow/deny (log, redact, approve) slot in as further outcomes
of step 3 (a rule's action) and a post-pass (redactions list pointers); the
Decision already carries ``redactions`` and consumers treat an unknown
verdict as deny.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agentwall.identity.rules import IdentityRule as SharedIdentityRule
from agentwall.policy.compiled import (
    CompiledArgs,
    CompiledPrompt,
    CompiledTool,
    Policy,
    Violation,
    identity_problem,
)
from agentwall.policy.safemode import SCHEME_RULE, SafeModeEngine
from agentwall.policy.secrets import shown
from agentwall.policy.values import Loc, ShapeProblem, pointer, walk
from agentwall.types import Call, Decision, Identity

_LIMIT_RULES = {
    "depth": "limits.max_depth",
    "size": "limits.max_bytes",
    "string": "limits.strings",
    "number": "limits.numbers",
    "type": "limits.json_types",
}
_URI_LOC: Loc = (None, "uri")


class _Outcome:
    """What step 3 decided, before Safe Mode has its say."""

    __slots__ = (
        "cacheable",
        "category",
        "engine",
        "pointer",
        "reason",
        "required_scopes",
        "rule_id",
        "uri_loc",
        "verdict",
    )

    def __init__(
        self,
        verdict: str,
        rule_id: str | None,
        reason: str,
        *,
        pointer: str | None = None,
        category: str | None = None,
        engine: SafeModeEngine | None = None,
        cacheable: bool = True,
        uri_loc: Loc = None,
        required_scopes: tuple[str, ...] = (),
    ) -> None:
        self.verdict = verdict
        self.rule_id = rule_id
        self.reason = reason
        self.pointer = pointer
        self.category = category
        self.engine = engine
        self.cacheable = cacheable
        self.uri_loc = uri_loc
        self.required_scopes = required_scopes


def _decision(
    call: Call,
    policy: Policy,
    verdict: str,
    rule_id: str | None,
    reason: str,
    ptr: str | None,
    category: str | None,
    cacheable: bool = True,
    required_scopes: tuple[str, ...] = (),
) -> Decision:
    return Decision(
        call_id=call.call_id,
        verdict=verdict,  # type: ignore[arg-type]
        rule_id=rule_id,
        reason=reason,
        pointer=ptr,
        policy_hash=policy.hash,
        category=category,
        cacheable=cacheable,
        required_scopes=required_scopes,
    )


def evaluate(policy: Policy, call: Call, now_ns: int) -> Decision:
    """Judge one message.  Pure: no I/O, no clock (``now_ns`` is passed in and
    reserved for time-dependent rules; a decision that used it is marked
    ``cacheable=False``)."""
    try:
        return _evaluate(policy, call, now_ns)
    except Exception as exc:  # noqa: BLE001 -- total: any failure is a deny
        return _internal_error(policy, call, exc)


def _internal_error(policy: Any, call: Any, exc: BaseException) -> Decision:
    try:
        call_id = str(call.call_id)
    except Exception:  # noqa: BLE001 -- even a broken Call gets a Decision
        call_id = ""
    try:
        policy_hash = str(policy.hash)
    except Exception:  # noqa: BLE001
        policy_hash = ""
    return Decision(
        call_id=call_id,
        verdict="deny",
        rule_id="internal.error",
        reason=f"internal error while evaluating ({type(exc).__name__}); denied",
        pointer=None,
        policy_hash=policy_hash,
        category="internal",
        cacheable=False,
    )


def _evaluate(policy: Policy, call: Call, now_ns: int) -> Decision:
    if call.kind == "response":
        # Results are not judged yet; pinning tools/list definitions and
        # redacting results will hook in here.
        return _decision(call, policy, "allow", "builtin.response", "responses pass", None, None)
    limits = policy.model.limits
    params = call.params
    if call.params_json and len(call.params_json) > limits.max_bytes:
        return _decision(
            call,
            policy,
            "deny",
            "limits.max_bytes",
            f"params are larger than the limit of {limits.max_bytes} bytes",
            "",
            "limit",
        )
    scan_strings = call.origin == "client"
    strings: list[tuple[Loc, str]] | None = [] if scan_strings else None
    problem = walk(
        params,
        max_depth=limits.max_depth,
        max_bytes=None if call.params_json else limits.max_bytes,
        max_string_length=limits.max_string_length,
        strings=strings,
    )
    if problem is not None:
        return _shape_denial(call, policy, problem)

    outcome = _judge(policy, call)
    if outcome.verdict != "allow":
        return _decision(
            call,
            policy,
            outcome.verdict,
            outcome.rule_id,
            outcome.reason,
            outcome.pointer,
            outcome.category,
            outcome.cacheable,
            outcome.required_scopes,
        )
    if strings:
        engine = outcome.engine or policy.engine
        uri_loc = outcome.uri_loc
        for loc, text in strings:
            if len(text) < 3:
                continue
            hit = engine.check(text, resource_uri=uri_loc is not None and loc == uri_loc)
            if hit is not None and hit.rule_id == SCHEME_RULE and _is_client_root(loc, text):
                # A root the client hands back in a 2026-07-28 retry is a file:
                # URI by definition; the path it names is still judged.
                hit = engine.check(text[len("file://") :])
            if hit is not None:
                return _decision(
                    call,
                    policy,
                    "deny",
                    hit.rule_id,
                    hit.reason,
                    pointer(loc),
                    hit.category,
                    outcome.cacheable,
                )
        # A command given as argv ({"command": "rm", "args": ["-rf", "/"]})
        # is a command line too: each piece alone looks harmless.
        argv = _argv_lines(params) if b"[" in call.params_json or not call.params_json else ()
        for loc, text in argv:
            hit = engine.check(text)
            if hit is not None:
                return _decision(
                    call,
                    policy,
                    "deny",
                    hit.rule_id,
                    hit.reason,
                    pointer(loc),
                    hit.category,
                    outcome.cacheable,
                )
    return _decision(
        call,
        policy,
        "allow",
        outcome.rule_id,
        outcome.reason,
        None,
        outcome.category,
        outcome.cacheable,
    )


_ROOT_URI = re.compile(r"/inputResponses/(?:[^/]+/)*roots/\d+/uri")


def _is_client_root(loc: Loc, text: str) -> bool:
    return text.startswith("file://") and _ROOT_URI.fullmatch(pointer(loc)) is not None


# Keys that name a program, and keys that hold its argument vector.
_COMMAND_KEYS = frozenset({"command", "cmd", "program", "executable", "binary", "exe", "file"})
_ARGV_KEYS = frozenset({"args", "argv", "arguments", "params", "parameters", "cmd", "command"})


def _argv_lines(params: Any) -> list[tuple[Loc, str]]:
    """Command lines spelt as argument vectors: a list of two or more strings
    (under an argv key, or with no spaces in any piece), and a program name
    beside its argument list, joined with spaces.
    Runs after ``walk`` accepted the shape (bounded depth and size)."""
    out: list[tuple[Loc, str]] = []
    stack: list[tuple[Any, Loc]] = [(params, None)]
    while stack:
        node, loc = stack.pop()
        if type(node) is dict:
            program = next(
                (v for k, v in node.items() if k in _COMMAND_KEYS and type(v) is str), None
            )
            for key, value in node.items():
                child: Loc = (loc, key)
                if type(value) is list and value and all(type(v) is str for v in value):
                    # Argv-shaped: under an argv key, or no piece with spaces
                    # (a list of sentences is not a command line).
                    if program is not None and key in _ARGV_KEYS:
                        # (The joined line contains the list's own join.)
                        out.append((child, program + " " + " ".join(value)))
                    elif len(value) >= 2 and (
                        key in _ARGV_KEYS or not any(" " in v for v in value)
                    ):
                        out.append((child, " ".join(value)))
                elif type(value) in (dict, list):
                    stack.append((value, child))
        elif type(node) is list:
            stack.extend(
                (item, (loc, i)) for i, item in enumerate(node) if type(item) in (dict, list)
            )
    return out


def _shape_denial(call: Call, policy: Policy, problem: ShapeProblem) -> Decision:
    return _decision(
        call,
        policy,
        "deny",
        _LIMIT_RULES[problem.kind],
        f"params rejected: {problem.reason}",
        pointer(problem.loc),
        "limit",
    )


def _malformed(reason: str, ptr: str | None) -> _Outcome:
    return _Outcome("deny", "request.malformed", reason, pointer=ptr, category="malformed")


def _default(policy: Policy, what: str, ptr: str | None) -> _Outcome:
    if policy.model.safe_mode_only:
        return _Outcome("allow", None, "no policy: Safe Mode only")
    action = policy.model.default_action
    reason = f"{what} is not in the policy; default_action is {action}"
    return _Outcome(
        action, None, reason, pointer=ptr if action == "deny" else None, category="default"
    )


def _judge(policy: Policy, call: Call) -> _Outcome:
    method = call.method
    params = call.params
    if call.origin == "client":
        if method == "tools/call":
            return _judge_tool(policy, params, call.identity)
        if method in ("resources/read", "resources/subscribe"):
            return _judge_resource(policy, params, call.identity)
        if method == "prompts/get":
            return _judge_prompt(policy, params, call.identity)
    action, rule_id = policy.method_rule(method, call.origin)
    if rule_id is None:
        if policy.model.safe_mode_only:
            return _Outcome("allow", None, "no policy: Safe Mode only")
        return _Outcome(
            action,
            None,
            f"method {shown(method)} is not in the policy; default_action is {action}",
            category="default",
        )
    if action == "deny":
        return _Outcome(
            "deny", rule_id, f"method {method!r} is denied by the policy", category="method"
        )
    return _Outcome("allow", rule_id, f"method {method!r} is allowed", category="method")


def _identity_denial(
    rule: SharedIdentityRule | None, identity: Identity | None, what: str, rule_base: str
) -> _Outcome | None:
    if rule is None:
        return None
    problem = identity_problem(rule, identity, what)
    if problem is None:
        return None
    category, reason, scopes = problem
    return _Outcome(
        "deny",
        f"{rule_base}.identity",
        reason,
        category=category,
        cacheable=False,
        required_scopes=scopes,
    )


def _args_of(params: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    args = params.get("arguments")
    if args is None:
        return {}, None
    if type(args) is not dict:
        return None, "arguments must be an object"
    return args, None


def _check_args(args_rules: CompiledArgs | None, args: dict[str, Any]) -> Violation | None:
    if args_rules is None:
        return None
    return args_rules.check(args)


def _judge_tool(policy: Policy, params: Any, identity: Identity | None) -> _Outcome:
    return _judge_named("tool", "tools/call", policy._tools, policy, params, identity)


def _judge_prompt(policy: Policy, params: Any, identity: Identity | None) -> _Outcome:
    return _judge_named("prompt", "prompts/get", policy._prompts, policy, params, identity)


def _judge_named(
    kind: str,
    method: str,
    table: Mapping[str, CompiledTool | CompiledPrompt],
    policy: Policy,
    params: Any,
    identity: Identity | None,
) -> _Outcome:
    """tools/call and prompts/get: a named entry, its identity rule, its arguments."""
    if type(params) is not dict:
        return _malformed(f"{method} params must be an object", "")
    name = params.get("name")
    if type(name) is not str:
        return _malformed(f"{method} needs a string 'name'", "/name")
    args, bad = _args_of(params)
    if args is None:
        return _malformed(f"{method} {bad}", "/arguments")
    entry = table.get(name)
    if entry is None:
        return _default(policy, f"{kind} {shown(name)}", "/name")
    rule = entry.rule
    if rule.action == "deny":
        return _Outcome(
            "deny",
            entry.rule_base,
            f"{kind} {name!r} is denied by the policy",
            pointer="/name",
            category=kind,
        )
    denial = _identity_denial(entry.identity, identity, f"{kind} {name!r}", entry.rule_base)
    if denial is not None:
        return denial
    # Identity-dependent answers must not be shared through the decision cache.
    cacheable = rule.identity is None
    violation = _check_args(entry.args, args)
    if violation is not None:
        rule_id, reason, ptr, category = violation
        return _Outcome(
            "deny", rule_id, reason, pointer=ptr, category=category, cacheable=cacheable
        )
    return _Outcome(
        "allow",
        entry.rule_base,
        f"{kind} {name!r} is allowed",
        category=kind,
        engine=entry.engine if isinstance(entry, CompiledTool) else None,
        cacheable=cacheable,
    )


def _judge_resource(policy: Policy, params: Any, identity: Identity | None) -> _Outcome:
    if type(params) is not dict:
        return _malformed("resources/read params must be an object", "")
    uri = params.get("uri")
    if type(uri) is not str:
        return _malformed("resources/read needs a string 'uri'", "/uri")
    for res in policy._resources:
        if not res.matches(uri):
            continue
        rule = res.rule
        if rule.action == "deny":
            return _Outcome(
                "deny",
                res.rule_base,
                "the resource is denied by the policy",
                pointer="/uri",
                category="resource",
            )
        if rule.within is not None and not _file_uri_within(uri, rule.within):
            return _Outcome(
                "deny",
                f"{res.rule_base}.within",
                f"the resource is not a file:// URI inside {', '.join(rule.within)}",
                pointer="/uri",
                category="resource",
            )
        denial = _identity_denial(res.identity, identity, "the resource", res.rule_base)
        if denial is not None:
            return denial
        return _Outcome(
            "allow",
            res.rule_base,
            "the resource is allowed",
            category="resource",
            cacheable=rule.identity is None,
            uri_loc=_URI_LOC,
        )
    outcome = _default(policy, "the resource", "/uri")
    outcome.uri_loc = _URI_LOC
    return outcome


def _file_uri_within(uri: str, roots: tuple[str, ...]) -> bool:
    from urllib.parse import unquote, urlsplit

    from agentwall.policy.paths import is_within

    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return False
    if parts.query or parts.fragment:
        return False
    # The server decodes %2e%2e the way it decodes any escape: judge the
    # decoded path.
    try:
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        # Not UTF-8 (e.g. an overlong "%c0%ae" dot): no path to judge.
        return False
    return is_within(path, roots)


def may_call_tool(policy: Policy, name: str, identity: Identity | None) -> bool:
    """Whether a caller could call ``name`` at all (ignoring its arguments)."""
    tool = policy._tools.get(name)
    if tool is None:
        return policy.model.safe_mode_only or policy.model.default_action == "allow"
    if tool.rule.action != "allow":
        return False
    rule = tool.identity
    return rule is None or identity_problem(rule, identity, name) is None


def filter_tools_list(policy: Policy, result: Any, identity: Identity | None) -> Any:
    """A ``tools/list`` result with only the tools this caller may call.

    Unknown tools go under default deny, denied tools go, and so do tools
    whose identity rule the caller fails.  Malformed entries are dropped.
    The input is not modified.  A result that is not an object with a
    ``tools`` list comes back as an empty list of tools (fail closed)."""
    if type(result) is not dict:
        return {"tools": []}
    tools = result.get("tools")
    if type(tools) is not list:
        out = dict(result)
        out["tools"] = []
        return out
    kept = [
        t
        for t in tools
        if type(t) is dict
        and type(t.get("name")) is str
        and may_call_tool(policy, t["name"], identity)
    ]
    out = dict(result)
    out["tools"] = kept
    return out
