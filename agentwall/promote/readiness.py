"""The production-readiness review behind ``agentwall promote`` (pure).

``review(view)`` looks at a ``PolicyView`` (built from a loaded ``Policy`` by
``agentwall.promote.view.view_of``, or None when the run has no policy) and
returns every ``Finding`` (severity, code, tool, reason, fix) and a 0-100
``RiskScore`` with its breakdown.  ``promote`` signs only when no finding is
blocking.  docs/promote.md lists every code and the scoring rules; keep the two
in step (a test checks that every code is documented).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final, Literal

import msgspec

from agentwall.policy.patterns import PatternSyntaxError, compile_anchored

Severity = Literal["blocking", "warning"]
Risk = Literal["low", "medium", "high", "critical"]

RISKS: Final[tuple[str, ...]] = ("low", "medium", "high", "critical")
HIGH_RISKS: Final = frozenset({"high", "critical"})
# "Risky" for pattern breadth: anything above low.
RISKY: Final = frozenset({"medium", "high", "critical"})


# --- the policy, as the review sees it -------------------------------------------------


class ParameterView(msgspec.Struct, frozen=True):
    name: str
    type: str | None = None
    pattern: str | None = None  # as written, before anchoring
    has_enum: bool = False
    within: tuple[str, ...] = ()
    max_length: int | None = None
    has_schema: bool = False
    # Numeric bounds: anything that limits a number's value.
    has_bounds: bool = False
    # Arrays: the rule every item must meet (named "<parameter>[]").
    items: ParameterView | None = None


class ToolView(msgspec.Struct, frozen=True):
    name: str
    action: str = "allow"
    risk: str | None = None
    # None: the tool declares no parameters, so it accepts any arguments.
    parameters: tuple[ParameterView, ...] | None = None
    additional_parameters: str = "deny"
    rate_limit: float | None = None
    has_identity_rule: bool = False
    # Safe Mode rule ids switched off for this tool (policy-wide ones included).
    safe_mode_disabled: tuple[str, ...] = ()


class IdentityView(msgspec.Struct, frozen=True):
    issuer: str
    jwks_uri: str | None = None
    audience: str | tuple[str, ...] | None = None


class ResourceView(msgspec.Struct, frozen=True):
    pattern: str
    action: str = "allow"
    # A ``within`` confines file:// URIs to roots, whatever the pattern says.
    has_within: bool = False


class PolicyView(msgspec.Struct, frozen=True):
    default_action: str
    tools: tuple[ToolView, ...] = ()
    session_rate: float | None = None
    # ``client.max_calls_per_second``: one bucket per client across sessions.
    client_rate: float | None = None
    identity: IdentityView | None = None
    # False: Safe Mode is off altogether.  Rule ids switched off are listed
    # on each tool they apply to (``ToolView.safe_mode_disabled``).
    safe_mode_enabled: bool = True
    resources: tuple[ResourceView, ...] = ()
    # Methods the policy allows beyond AgentWall's shipped defaults.
    extra_methods_allowed: tuple[str, ...] = ()
    # Hosts/ranges the SSRF private-network rule lets through.
    safe_mode_allow_private: tuple[str, ...] = ()
    # ``limits.max_string_length``: a bound on every string in the arguments.
    max_string_length: int | None = None


# --- what the review says ---------------------------------------------------------------


class Finding(msgspec.Struct, frozen=True):
    severity: Severity
    code: str
    tool: str | None
    reason: str
    fix: str


class ScorePart(msgspec.Struct, frozen=True):
    name: str
    points: int
    cap: int
    detail: str


class RiskScore(msgspec.Struct, frozen=True):
    total: int
    level: str
    breakdown: tuple[ScorePart, ...]


class Review(msgspec.Struct, frozen=True):
    findings: tuple[Finding, ...]
    score: RiskScore

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "blocking")

    @property
    def ready(self) -> bool:
        return not self.blocking


# Every code the review can emit, with its severity.  The docs table is checked
# against this.
CODES: Final[dict[str, Severity]] = {
    "no_policy": "blocking",
    "default_allow": "blocking",
    "missing_risk": "blocking",
    "unconstrained_arguments": "blocking",
    "overbroad_pattern": "blocking",
    "safe_mode_disabled": "blocking",
    "no_rate_limit": "blocking",
    "insecure_issuer": "blocking",
    "missing_identity_rule": "blocking",
    "identity_not_configured": "blocking",
    "loose_arguments": "warning",
    "broad_pattern": "warning",
    "path_without_within": "warning",
    "no_max_length": "warning",
    "unbounded_number": "warning",
    "no_tool_rate_limit": "warning",
    "no_client_rate_limit": "warning",
    "safe_mode_rules_disabled": "warning",
    "safe_mode_private_allowed": "warning",
    "broad_resource_pattern": "warning",
    "extra_methods_allowed": "warning",
    "nothing_allowed": "warning",
}


def _finding(code: str, tool: str | None, reason: str, fix: str) -> Finding:
    return Finding(severity=CODES[code], code=code, tool=tool, reason=reason, fix=fix)


# --- pattern analysis -----------------------------------------------------------------

# Strings of every shape an attacker might send.  A pattern that accepts all of
# them accepts anything worth worrying about: it is ``.*`` in effect, however
# it is spelt (``.+``, ``(?s).*``, ``[^\x00]+``, ``.{1,1000}``, ...).
_MATCH_ALL_PROBES: Final = (
    "x",
    "../../../etc/passwd",
    "/etc/shadow",
    "a b;c|d&e$(f)`g`>h<i",
    "http://169.254.169.254/latest/meta-data/",
    "\\\\server\\share\\..\\x",
    "%2e%2e%2fetc%2fpasswd",
    "~/.ssh/id_rsa",
    "\u202etxt.exe",
)
# Traversal tails tried after the pattern's literal prefix (``/workspace/``).
_TRAVERSALS: Final = ("../../../etc/passwd", "/../../../etc/passwd", "a/../../../etc/passwd")
_PATH_NAME: Final = re.compile(
    r"(^|_)(path|paths|file|files|filename|filepath|dir|dirs|directory|folder|cwd|root|"
    r"dest|destination|src|source)($|_)",
    re.IGNORECASE,
)
_META: Final = frozenset("\\^$.|?*+()[]{}")


def _compile(pattern: str) -> Callable[[str], bool] | None:
    # Exactly the evaluator's compilation (RE2, ^(?:...)$), so the review judges
    # what is enforced.  A loaded policy's patterns always compile.
    try:
        compiled = compile_anchored(pattern)
    except PatternSyntaxError:
        return None
    return lambda text: compiled.match(text) is not None


def _literal_run(units: list[str]) -> str:
    """The literal characters at the start of ``units`` (single chars or ``\\x`` escapes)."""
    out = []
    for unit in units:
        if len(unit) == 2 and not unit[1].isalnum():
            out.append(unit[1])  # an escaped punctuation character is itself
        elif len(unit) == 1 and unit not in _META:
            out.append(unit)
        else:
            break
    return "".join(out)


def _units(pattern: str) -> list[str]:
    units, i = [], 0
    while i < len(pattern):
        step = 2 if pattern[i] == "\\" and i + 1 < len(pattern) else 1
        units.append(pattern[i : i + step])
        i += step
    return units


def _literal_prefix(pattern: str) -> str:
    return _literal_run(_units(pattern.removeprefix("^")))


def _literal_suffix(pattern: str) -> str:
    units = _units(pattern.removesuffix("$"))
    # A quantifier or a class ends the literal tail: "[a-z]+" has none.
    return _literal_run(units[::-1])[::-1] if units and units[-1] not in _META else ""


def matches_anything(pattern: str) -> bool:
    """True when the anchored pattern accepts every probe: ``.*`` in effect."""
    matcher = _compile(pattern)
    return matcher is not None and all(matcher(p) for p in _MATCH_ALL_PROBES)


def admits_traversal(pattern: str) -> bool:
    """True when the pattern accepts a ``..`` path escaping its own literal prefix."""
    matcher = _compile(pattern)
    if matcher is None:
        return False
    prefix = _literal_prefix(pattern)
    suffix = _literal_suffix(pattern)
    starts = {prefix, prefix.rstrip("/"), ""}
    ends = {suffix, ""}
    return any(matcher(a + tail + b) for a in starts for tail in _TRAVERSALS for b in ends)


def is_path_parameter(param: ParameterView) -> bool:
    if param.within:
        return True
    if _PATH_NAME.search(param.name.removesuffix("[]")):
        return True
    return bool(param.pattern and _literal_prefix(param.pattern).startswith(("/", "~")))


# --- the checks ------------------------------------------------------------------------


def _loose(param: ParameterView) -> list[str]:
    """Why this parameter's values are not constrained (empty: they are)."""
    kind, name = param.type, param.name
    if param.has_enum:
        return []
    if kind is None and not (param.pattern or param.within or param.has_bounds):
        return [f"parameter `{name}` has no type"]
    if kind == "string" and not (param.pattern or param.within):
        return [f"string parameter `{name}` has no pattern, enum or within"]
    if kind == "array" and param.items is not None:
        return _loose(param.items)
    if kind in ("object", "array") and not param.has_schema:
        what = "items or schema" if kind == "array" else "schema"
        return [f"{kind} parameter `{name}` has no {what}"]
    return []


def _unconstrained_parameters(tool: ToolView) -> list[str]:
    """Why this tool's arguments are not constrained (empty: they are)."""
    if tool.parameters is None:
        return ["it declares no `parameters`, so any arguments pass"]
    reasons = []
    if tool.additional_parameters == "allow":
        reasons.append("`additional_parameters: allow` lets undeclared arguments through")
    for param in tool.parameters:
        reasons.extend(_loose(param))
    return reasons


def unbounded_length(pattern: str) -> bool:
    """True when the pattern has a ``*``, ``+`` or ``{n,}`` outside a class."""
    units, in_class = _units(pattern), False
    for i, unit in enumerate(units):
        if in_class:
            in_class = unit != "]"
        elif unit == "[":
            in_class = True
            # "[]...]" and "[^]...]": a leading "]" is a literal inside the class.
            j = i + 1 + (i + 1 < len(units) and units[i + 1] == "^")
            if j < len(units) and units[j] == "]":
                units[j] = "x"
        elif unit in ("*", "+"):
            return True
        elif unit == "{":
            body = "".join(units[i + 1 : i + 12]).split("}", 1)[0]
            if body.endswith(",") and body[:-1].isdigit():
                return True
    return False


def _tool_findings(tool: ToolView, view: PolicyView) -> Iterable[Finding]:
    name = tool.name
    if tool.risk not in RISKS:
        yield _finding(
            "missing_risk",
            name,
            "the tool has no `risk`, so the review cannot weigh it",
            "add `risk: low|medium|high|critical` to the tool",
        )
    if tool.action != "allow":
        return
    risk = tool.risk or "unknown"
    high = tool.risk in HIGH_RISKS
    loose = _unconstrained_parameters(tool)
    if loose and high:
        yield _finding(
            "unconstrained_arguments",
            name,
            f"{risk}-risk tool allows unconstrained arguments: " + "; ".join(loose),
            "declare every parameter with a type and a `pattern`, `enum` or `within` "
            "(`schema` for objects and arrays), and keep `additional_parameters: deny`",
        )
    elif loose:
        yield _finding(
            "loose_arguments",
            name,
            f"{risk}-risk tool allows loosely constrained arguments: " + "; ".join(loose),
            "constrain each parameter with `pattern`, `enum`, `within` or `schema`",
        )
    for param in tool.parameters or ():
        yield from _parameter_findings(tool, param, view)
    if tool.safe_mode_disabled:
        ids = ", ".join(sorted(tool.safe_mode_disabled))
        if high:
            yield _finding(
                "safe_mode_disabled",
                name,
                f"Safe Mode rules are switched off for a {risk}-risk tool: {ids}",
                "remove these ids from `safe_mode.disable`, or narrow the tool so the rules "
                "never fire on legitimate calls",
            )
        else:
            yield _finding(
                "safe_mode_rules_disabled",
                name,
                f"Safe Mode rules are switched off for this tool: {ids}",
                "re-enable them unless a tested false positive requires otherwise",
            )
    if high and not tool.has_identity_rule:
        yield _finding(
            "missing_identity_rule",
            name,
            f"{risk}-risk tool has no identity rule: any caller may use it",
            "add `identity: {subjects: [...]}`, `claims` or `scopes` to the tool",
        )
    if high and tool.rate_limit is None:
        yield _finding(
            "no_tool_rate_limit",
            name,
            f"{risk}-risk tool has no per-tool `rate_limit` (only the session limit applies)",
            "add a per-tool `rate_limit` sized for legitimate use",
        )


def _parameter_findings(
    tool: ToolView, param: ParameterView, view: PolicyView
) -> Iterable[Finding]:
    if param.items is not None:
        yield from _parameter_findings(tool, param.items, view)
    name = tool.name
    where = f"parameter `{param.name}`"
    path_like = is_path_parameter(param)
    if param.pattern:
        anything = matches_anything(param.pattern)
        traversal = path_like and not param.within and admits_traversal(param.pattern)
        if anything or traversal:
            why = (
                f"pattern {param.pattern!r} accepts any string (every probe: traversal, "
                "shell metacharacters, URLs, secrets paths), so it constrains nothing"
                if anything
                else f"pattern {param.pattern!r} admits `/` and `..`, so a path can escape "
                "its prefix, and there is no `within`"
            )
            fix = (
                f"add `within: [ROOT]` to {where}, and narrow the pattern"
                if path_like
                else "narrow the pattern to the values the tool needs, or use `enum`"
            )
            code = "overbroad_pattern" if tool.risk in RISKY else "broad_pattern"
            yield _finding(code, name, f"{where}: {why}", fix)
            return
    if path_like and not param.within and param.type in (None, "string"):
        yield _finding(
            "path_without_within",
            name,
            f"{where} looks like a path but has no `within`: `..` is checked only by pattern",
            f"add `within: [ROOT]` to {where}",
        )
    if param.type in ("integer", "number") and not (param.has_bounds or param.has_enum):
        yield _finding(
            "unbounded_number",
            name,
            f"{where} has no `minimum`/`maximum` or `enum`",
            f"bound {where} to the values the tool needs",
        )
    if (
        param.type == "string"
        and param.max_length is None
        and view.max_string_length is None
        and not param.has_enum
        and (param.pattern is None or unbounded_length(param.pattern))
    ):
        yield _finding(
            "no_max_length",
            name,
            f"{where} has no `max_length` (nor a pattern that bounds its length), so "
            "only the global size limit applies",
            f"add `max_length` to {where}",
        )


def _policy_findings(view: PolicyView) -> Iterable[Finding]:
    if view.default_action != "deny":
        yield _finding(
            "default_allow",
            None,
            f"`default_action` is {view.default_action!r}: unknown tools and methods pass",
            "set `default_action: deny` and allow tools by name",
        )
    allowed = [t for t in view.tools if t.action == "allow"]
    if not allowed:
        yield _finding(
            "nothing_allowed",
            None,
            "the policy allows no tool",
            "allow the tools the agent needs, or this proxy only blocks",
        )
    unlimited = [t.name for t in allowed if t.rate_limit is None]
    # A client rate limits every call of every session: a rate limit too.
    if view.session_rate is None and view.client_rate is None and (unlimited or not allowed):
        yield _finding(
            "no_rate_limit",
            None,
            "there is no rate limit: no `session.max_calls_per_second`"
            + (f" and no `rate_limit` on {', '.join(unlimited)}" if unlimited else ""),
            "set `session: {max_calls_per_second: N}` (and per-tool `rate_limit` where needed)",
        )
    if view.session_rate is not None and view.client_rate is None:
        yield _finding(
            "no_client_rate_limit",
            None,
            "the session rate limit can be reset: over HTTP a client that sends a fresh "
            "`initialize` gets a new session and a full session bucket, so N sessions get "
            "N times `session.max_calls_per_second`",
            "set `client: {max_calls_per_second: N}`, one bucket per client (verified "
            "identity, else address) across all of its sessions",
        )
    if view.identity is not None:
        for label, url in (("issuer", view.identity.issuer), ("jwks_uri", view.identity.jwks_uri)):
            if url is not None and not url.lower().startswith("https://"):
                yield _finding(
                    "insecure_issuer",
                    None,
                    f"identity {label} {url!r} is not https: keys could be swapped in transit",
                    f"use an https:// {label}",
                )
    elif any(t.has_identity_rule for t in view.tools):
        yield _finding(
            "identity_not_configured",
            None,
            "tools have identity rules but the policy has no `identity` section to verify "
            "tokens against",
            "add `identity: {issuer: https://..., audience: ...}`",
        )
    if not view.safe_mode_enabled:
        high = [t.name for t in allowed if t.risk in HIGH_RISKS]
        for tool in high:
            yield _finding(
                "safe_mode_disabled",
                tool,
                "Safe Mode is switched off, and this is a high or critical risk tool",
                "turn Safe Mode back on (switch single rules off by id if you must)",
            )
        if not high:
            yield _finding(
                "safe_mode_rules_disabled",
                None,
                "Safe Mode is switched off",
                "turn Safe Mode back on (switch single rules off by id if you must)",
            )
    if view.safe_mode_allow_private:
        yield _finding(
            "safe_mode_private_allowed",
            None,
            "Safe Mode lets URLs reach private addresses: "
            + ", ".join(view.safe_mode_allow_private),
            "allow only the exact hosts the agent must reach (a /32, not a whole range)",
        )
    for resource in view.resources:
        if (
            resource.action == "allow"
            and not resource.has_within
            and matches_anything(resource.pattern)
        ):
            yield _finding(
                "broad_resource_pattern",
                None,
                f"resource pattern {resource.pattern!r} allows every URI",
                "list the URI schemes and prefixes the agent needs",
            )
    if view.extra_methods_allowed:
        yield _finding(
            "extra_methods_allowed",
            None,
            "methods allowed beyond the defaults: " + ", ".join(view.extra_methods_allowed),
            "allow only the methods the agent needs",
        )


# --- scoring ----------------------------------------------------------------------------

# Points per allowed tool by declared risk; a tool without a risk counts as critical.
EXPOSURE_POINTS: Final[dict[str, int]] = {"low": 1, "medium": 2, "high": 4, "critical": 6}
EXPOSURE_CAP: Final = 30
BLOCKING_POINTS: Final = 15
BLOCKING_CAP: Final = 60
WARNING_POINTS: Final = 2
WARNING_CAP: Final = 20
LEVELS: Final = ((75, "critical"), (50, "high"), (25, "moderate"), (0, "low"))


def score(view: PolicyView | None, findings: tuple[Finding, ...]) -> RiskScore:
    """total = exposure + blocking + warnings, each capped; see docs/promote.md."""
    exposed: dict[str, int] = {}
    if view is not None:
        for tool in view.tools:
            if tool.action == "allow":
                exposed[tool.name] = EXPOSURE_POINTS.get(
                    tool.risk or "", EXPOSURE_POINTS["critical"]
                )
    blocking = sum(1 for f in findings if f.severity == "blocking")
    warnings = len(findings) - blocking
    parts = (
        ScorePart(
            name="exposure",
            points=min(EXPOSURE_CAP, sum(exposed.values())),
            cap=EXPOSURE_CAP,
            detail=(
                ", ".join(f"{name} {points}" for name, points in exposed.items())
                or "no tool allowed"
            ),
        ),
        ScorePart(
            name="blocking",
            points=min(BLOCKING_CAP, BLOCKING_POINTS * blocking),
            cap=BLOCKING_CAP,
            detail=f"{blocking} blocking finding(s) x {BLOCKING_POINTS}",
        ),
        ScorePart(
            name="warnings",
            points=min(WARNING_CAP, WARNING_POINTS * warnings),
            cap=WARNING_CAP,
            detail=f"{warnings} warning(s) x {WARNING_POINTS}",
        ),
    )
    total = min(100, sum(p.points for p in parts))
    level = next(name for floor, name in LEVELS if total >= floor)
    return RiskScore(total=total, level=level, breakdown=parts)


def review(view: PolicyView | None) -> Review:
    if view is None:
        findings: tuple[Finding, ...] = (
            _finding(
                "no_policy",
                None,
                "the run has no policy: Safe Mode alone decides and every other call passes",
                "write a policy (`agentwall init --from-log` can start one) and pass --policy",
            ),
        )
    else:
        findings = (
            *_policy_findings(view),
            *(f for t in view.tools for f in _tool_findings(t, view)),
        )
    ordered = tuple(
        sorted(findings, key=lambda f: (f.severity != "blocking", f.tool or "", f.code))
    )
    return Review(findings=ordered, score=score(view, ordered))
