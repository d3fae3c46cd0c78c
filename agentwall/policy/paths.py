"""Path containment for ``within:``.

The value the upstream receives is what the filesystem will resolve, so the
check resolves it the way a filesystem would, lexically: ``\\`` is a
separator, repeated separators collapse, ``.`` disappears and ``..`` removes
the segment before it (and stops at the root).  The result must be a root or
lie under one.  Relative paths, NUL bytes and ``~`` are refused because their
meaning depends on the server's working directory or shell.  Symlinks are not
resolved: that needs the server's filesystem, so pair ``within`` with a server
that does not follow links out of its roots (see docs/policy.md).
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

from agentwall.policy.patterns import compile_re2


def normalise_path(path: str) -> str | None:
    """Lexically normalised absolute POSIX path, or None when it cannot be
    judged without the server's context."""
    if not path or "\x00" in path:
        return None
    p = path.replace("\\", "/")
    if not p.startswith("/"):
        return None
    out: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


def normalise_root(root: str) -> str | None:
    """Roots are normalised the same way; the loader refuses None."""
    return normalise_path(root)


_ENCODED = ("%2e", "%2f", "%5c")
# IIS "%u002e" escapes, and overlong UTF-8 escapes of ASCII ("%c0%ae" is a
# dot to decoders that do not check for overlong forms).
_ODD_ESCAPES = compile_re2(r"%u[0-9a-f]{4}|%c[01]|%e0%[89][0-9a-f]|%f0%8[0-9a-f]")
_DECODE_ROUNDS = 4
# Characters that Windows "best fit" code page conversion (and some servers'
# own folding) turn into separators, and that NFKC leaves alone.
_BEST_FIT_SEPARATORS = str.maketrans(
    {"\u2215": "/", "\u2044": "/", "\u29f8": "/", "\u2216": "\\", "\u29f5": "\\",
     "\u29f9": "\\", "\u00a5": "\\", "\u20a9": "\\"}
)  # fmt: skip


def _encoded_separator(path: str) -> bool:
    """A percent-escape that decodes (once or after further rounds: a server
    that decodes twice reads "%252e" as ".") to a dot or separator."""
    text = path
    for _ in range(_DECODE_ROUNDS):
        if "%" not in text:
            return False
        low = text.lower()
        if any(enc in low for enc in _ENCODED) or _ODD_ESCAPES.search(low) is not None:
            return True
        decoded = unquote(text, errors="replace")
        if decoded == text:
            return False
        text = decoded
    return "%" in text


def is_within(path: str, roots: tuple[str, ...]) -> bool:
    """True when ``path`` normalises to one of ``roots`` (already normalised)
    or to something below one.

    Spellings that some servers (not the filesystem) would read as
    separators or dots are refused outright rather than guessed at:
    percent-encoded ``.``, ``/`` and ``\\`` (also double-encoded, IIS
    ``%u`` and overlong UTF-8), and compatibility characters (fullwidth
    ``／``, ``．``, division slash ``∕``) that NFKC or Windows "best fit" turn
    into them; for the latter the folded form must be inside a root too.
    """
    if "%" in path and _encoded_separator(path):
        return False
    if not _inside(path, roots):
        return False
    if not path.isascii():
        folded = unicodedata.normalize("NFKC", path).translate(_BEST_FIT_SEPARATORS)
        if folded != path and not _inside(folded, roots):
            return False
    return True


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    norm = normalise_path(path)
    if norm is None:
        return False
    for root in roots:
        if root == "/":
            return True
        if norm == root or norm.startswith(root + "/"):
            return True
    return False
