"""One way to compile the quant kernels with numba, shared by every `_*_kernels` module.

Options: `nogil`; `error_model="numpy"` so x/0 gives ±inf/NaN as the numpy twins do instead of raising;
`fastmath={"contract"}`: fused multiply-add only — no reassociation and no finite-math assumptions,
because NaN and inf are inputs these kernels must see through. Compiled code is cached on disk
(`NUMBA_CACHE_DIR` in containers); when no cache location is writable the kernels compile in every
process with a warning, a slow start to fix in the deployment rather than a reason to fail an import.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

from numba import njit

Fn = TypeVar("Fn", bound=Callable[..., Any])


def jit(fn: Fn, *, inline: Literal["never", "always"] = "never") -> Fn:
    """numba-compile `fn` on first call, cached on disk where possible."""
    options: dict[str, Any] = {
        "nogil": True,
        "error_model": "numpy",
        "inline": inline,
        "fastmath": {"contract"},
    }
    try:
        return cast(Fn, njit(cache=True, **options)(fn))
    except RuntimeError as exc:
        # numba raises this when neither __pycache__ nor the user-wide cache dir is writable.
        if "no locator available" not in str(exc):
            raise
        warnings.warn(
            f"numba cache unavailable ({exc}); {fn.__module__} kernels compile on every start",
            RuntimeWarning,
            stacklevel=3,
        )
        return cast(Fn, njit(cache=False, **options)(fn))
