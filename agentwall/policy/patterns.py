"""RE2 and nothing else.

pyre2 quietly falls back to Python's backtracking ``re`` for syntax RE2 lacks
(backreferences, lookaround).  That would give up the linear-time guarantee a
policy engine facing hostile input relies on, so the fallback is turned into
an exception once, at import, and every compiled object is checked to really
be an RE2 pattern.
"""

from __future__ import annotations

from typing import Any

import re2

re2.set_fallback_notification(re2.FALLBACK_EXCEPTION)

_RE2_PATTERN_TYPE: type[Any] = re2.Pattern


class PatternSyntaxError(ValueError):
    """A pattern RE2 will not take (or would only take via fallback)."""


def compile_re2(source: str, *, ignore_case: bool = False) -> Any:
    """Compile ``source`` as is with RE2 (no anchoring).  Used for the built-in
    Safe Mode rules, which search inside strings on purpose."""
    flags = re2.IGNORECASE if ignore_case else 0
    try:
        compiled = re2.compile(source, flags)
    except Exception as exc:  # noqa: BLE001 -- re2 raises re.error, and others for odd input
        raise PatternSyntaxError(str(exc) or type(exc).__name__) from None
    if type(compiled) is not _RE2_PATTERN_TYPE:
        raise PatternSyntaxError("pattern needs Python re fallback, which is not allowed")
    return compiled


def compile_anchored(source: str) -> Any:
    """Compile a policy pattern as ``^(?:source)$`` with RE2.

    The source is first compiled on its own: that rejects an unbalanced
    pattern such as ``a)|(b``, which would otherwise close our group early and
    turn the anchored form into an unanchored alternation.
    """
    if "\x00" in source:
        raise PatternSyntaxError("a pattern may not contain a NUL character; write \\x00")
    compile_re2(source)
    return compile_re2(f"^(?:{source})$")


def is_re2(compiled: Any) -> bool:
    return type(compiled) is _RE2_PATTERN_TYPE
