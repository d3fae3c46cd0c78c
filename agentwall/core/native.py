"""How a part with a C extension in ``native/`` picks its implementation.

Each such part has a pure-Python reference with the same API and semantics,
which is also the fallback; tests hold the two to the same results.  The C
one runs when it was built, unless its environment variable says
``python``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def choose(env_var: str, native: Callable[[], T], python: T) -> T:
    """``python`` when ``$env_var`` is ``python``; else ``native()``, or
    ``python`` when the extension was not built (``native()`` raises
    ImportError)."""
    if os.environ.get(env_var, "") == "python":
        return python
    try:
        return native()
    except ImportError:
        return python
