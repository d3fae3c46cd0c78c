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


def is_within(path: str, roots: tuple[str, ...]) -> bool:
    """True when ``path`` normalises to one of ``roots`` (already normalised)
    or to something below one.

    Two spellings that some servers (not the filesystem) would read as
    separators or dots are refused outright rather than guessed at:
    percent-encoded ``.``, ``/`` and ``\\``, and compatibility characters
    (fullwidth ``／``, ``．``) that NFKC or Windows "best fit" turn into them;
    for the latter the folded form must be inside a root too.
    """
    if "%" in path and any(enc in path.lower() for enc in _ENCODED):
        return False
    if not _inside(path, roots):
        return False
    if not path.isascii():
        folded = unicodedata.normalize("NFKC", path)
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
