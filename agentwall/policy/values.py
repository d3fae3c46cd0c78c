"""One bounded, iterative pass over a params value.

Everything hostile about a value's *shape* is found here, before any rule
looks at it: nesting deeper than the limit, a size over the limit, strings
that are not valid Unicode (lone surrogates), numbers that JSON cannot carry,
non-string keys, and non-JSON objects.  The walk uses an explicit stack, so
100,000 nested arrays cost 65 steps and never touch Python's recursion limit.
It also collects every string (object keys included) with its location, for
Safe Mode.
"""

from __future__ import annotations

import math
from typing import Any

# A location is a linked list of path tokens: None for the root, else
# (parent, token).  Pointers are rendered only when a decision needs one.
Loc = tuple[Any, str | int] | None


def escape_token(token: str | int) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(loc: Loc) -> str:
    parts: list[str] = []
    while loc is not None:
        parent, token = loc
        parts.append(escape_token(token))
        loc = parent
    return "".join("/" + p for p in reversed(parts))


def pointer_of(*tokens: str | int) -> str:
    return "".join("/" + escape_token(t) for t in tokens)


class ShapeProblem:
    __slots__ = ("kind", "loc", "reason")

    def __init__(self, kind: str, reason: str, loc: Loc) -> None:
        self.kind = kind  # "depth" | "size" | "string" | "number" | "type"
        self.reason = reason
        self.loc = loc


def _bad_text(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def walk(
    value: Any,
    *,
    max_depth: int,
    max_bytes: int | None,
    max_string_length: int | None,
    strings: list[tuple[Loc, str]] | None,
) -> ShapeProblem | None:
    """Check the shape of ``value``; append (loc, text) for every string and
    key to ``strings`` when given.  ``max_bytes`` None means the caller has
    already checked the encoded size.  Depth counts containers: the params
    object is level 0, its members' containers level 1, and so on."""
    budget = max_bytes if max_bytes is not None else -1
    used = 0
    stack: list[tuple[Any, int, Loc]] = [(value, 0, None)]
    pop = stack.pop
    push = stack.append
    while stack:
        item, depth, loc = pop()
        kind = type(item)
        if kind is str:
            if _bad_text(item):
                return ShapeProblem("string", "a string is not valid Unicode (lone surrogate)", loc)
            if max_string_length is not None and len(item) > max_string_length:
                return ShapeProblem(
                    "string", f"a string is longer than the limit of {max_string_length}", loc
                )
            if strings is not None:
                strings.append((loc, item))
            if budget >= 0:
                used += len(item) + 3
        elif kind is dict:
            if depth > max_depth:
                return ShapeProblem("depth", f"nested deeper than the limit of {max_depth}", loc)
            children: list[tuple[Any, int, Loc]] = []
            for key, child in item.items():
                if type(key) is not str:
                    return ShapeProblem("type", "an object key is not a string", loc)
                child_loc = (loc, key)
                if _bad_text(key):
                    return ShapeProblem(
                        "string", "an object key is not valid Unicode (lone surrogate)", child_loc
                    )
                if strings is not None:
                    strings.append((child_loc, key))
                children.append((child, depth + 1, child_loc))
            if budget >= 0:
                used += 2 + 4 * len(children)
            children.reverse()
            stack.extend(children)
        elif kind is list or kind is tuple:
            if depth > max_depth:
                return ShapeProblem("depth", f"nested deeper than the limit of {max_depth}", loc)
            n = len(item)
            if budget >= 0:
                used += 2 + n
            for i in range(n - 1, -1, -1):
                push((item[i], depth + 1, (loc, i)))
        elif kind is int or kind is bool or item is None:
            if budget >= 0:
                used += 5
        elif kind is float:
            if not math.isfinite(item):
                return ShapeProblem("number", "a number is not finite (NaN or infinity)", loc)
            if budget >= 0:
                used += 8
        else:
            return ShapeProblem("type", f"a value is not JSON ({kind.__name__})", loc)
        if budget >= 0 and used > budget:
            return ShapeProblem("size", f"larger than the limit of {max_bytes} bytes", loc)
    return None
