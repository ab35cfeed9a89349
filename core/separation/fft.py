"""The separation's real FFTs: scipy's pocketfft, without ``scipy.fft``'s imports.

``import scipy.fft`` costs a separation worker's fork server about 0.25 s of its 0.5 s
of imports (scipy 1.17: ``scipy._lib._array_api`` star-imports numpy, which loads
``numpy.testing``, ``numpy.f2py`` and ``numpy.ma``), and the first worker of every
load waits for those imports. The transforms themselves are one compiled module,
``scipy.fft._pocketfft.pypocketfft``, which this module loads from its file alone
(0.01 s). It is scipy's private module: it is used only if it is there, loads, and
gives on a test signal what :mod:`numpy.fft` gives; otherwise ``scipy.fft`` does the
same transforms (the same bits: ``scipy.fft.rfft``/``irfft`` call these two functions
with these arguments). ``docs/separation.md`` has the figures.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["BARE", "irfft_rows", "rfft_rows"]

#: pocketfft's normalizations (``inorm``): 0 none, 2 by 1/n.
_NONE, _BY_N = 0, 2


def _bare_pocketfft() -> ModuleType | None:
    """scipy's ``pypocketfft`` loaded from its file (no ``scipy`` package import), if it
    works as scipy's ``rfft``/``irfft`` use it; else None."""
    try:
        spec = importlib.util.find_spec("scipy")
        if spec is None or spec.origin is None:
            return None
        folder = Path(spec.origin).parent / "fft" / "_pocketfft"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"pypocketfft{suffix}"
            if path.is_file():
                break
        else:
            return None
        name = "scipy.fft._pocketfft.pypocketfft"
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        module_spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        if module_spec is None:
            return None
        module = importlib.util.module_from_spec(module_spec)
        loader.exec_module(module)
        # The calls below on a test signal, against numpy's transforms: another
        # scipy's module with other arguments fails here, not in a separation.
        x = np.random.default_rng(0).standard_normal((3, 48)).astype(np.float32)
        X = np.full((4, 25), np.nan, np.complex64)
        module.r2c(x, (1,), True, _NONE, X[:3], 1)
        back = module.c2r(X[:3], (1,), 48, False, _BY_N, None, 1)
        if (
            back.dtype != np.float32
            or not np.isnan(X[3]).all()  # nothing written past the rows asked for
            or not np.allclose(X[:3], np.fft.rfft(x.astype(np.float64)), atol=1e-4)
            or not np.allclose(back, x, atol=1e-5)
        ):
            return None
        return module
    except Exception:  # any failure at all: scipy.fft does it
        return None


_pocketfft = _bare_pocketfft()
#: True when the transforms run on scipy's pocketfft module loaded alone.
BARE = _pocketfft is not None


def rfft_rows(x: np.ndarray, out: np.ndarray) -> None:
    """The real FFT of each row of ``x`` (float32, shape (rows, n)) into ``out``
    (complex64, shape (rows, n // 2 + 1)), as ``out[...] = scipy.fft.rfft(x, axis=1,
    workers=1)`` (written in place: no array of the result made and copied).

    Raises
    ------
    ValueError
        ``x`` or ``out`` not of those types and shapes (the compiled module would write
        past a smaller ``out``).
    """
    if (
        x.dtype != np.float32
        or x.ndim != 2
        or out.dtype != np.complex64
        or out.shape != (x.shape[0], x.shape[1] // 2 + 1)
    ):
        raise ValueError(
            f"rfft_rows takes float32 rows into complex64 (rows, n // 2 + 1), got "
            f"{x.dtype} {x.shape} into {out.dtype} {out.shape}"
        )
    if _pocketfft is not None:
        _pocketfft.r2c(x, (1,), True, _NONE, out, 1)
        return
    import scipy.fft

    out[...] = scipy.fft.rfft(x, axis=1, workers=1)


def irfft_rows(X: np.ndarray, n: int) -> np.ndarray:
    """The inverse real FFT of each row of ``X`` (complex, shape (rows, n // 2 + 1)):
    real of the matching precision (float32 from complex64), shape (rows, n);
    ``scipy.fft.irfft(X, n=n, axis=1, workers=1)``.

    Raises
    ------
    ValueError
        ``X`` not complex rows of ``n // 2 + 1`` bins (``scipy.fft`` would pad or cut
        them, the compiled module refuses them).
    """
    if X.dtype not in (np.complex64, np.complex128) or X.ndim != 2 or X.shape[1] != n // 2 + 1:
        raise ValueError(
            f"irfft_rows takes complex rows of n // 2 + 1 = {n // 2 + 1} bins, "
            f"got {X.dtype} {X.shape}"
        )
    if _pocketfft is not None:
        out: np.ndarray = _pocketfft.c2r(X, (1,), n, False, _BY_N, None, 1)
        return out
    import scipy.fft

    fallback: Any = scipy.fft.irfft(X, n=n, axis=1, workers=1, overwrite_x=True)
    return np.asarray(fallback)
