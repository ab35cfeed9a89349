"""``stemdeck plot``: the figures a user of NMF looks at, in one PNG.

Input spectrogram, component spectra W, activations H, the model W·H, and each
channel's spectrogram; frequency in Hz (log axis), time in seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from stemdeck.core.errors import AudioFileError
from stemdeck.core.separation.separate import Separation
from stemdeck.core.separation.spectral import magnitude
from stemdeck.core.separation.stft import stft

_MAX_COLUMNS = 1200  # display columns: frames are max-pooled down to this
_FMIN = 30.0


def _pool_frames(S: np.ndarray) -> np.ndarray:
    frames = S.shape[1]
    step = max(1, math.ceil(frames / _MAX_COLUMNS))
    if step == 1:
        return S
    cut = (frames // step) * step
    pooled = S[:, :cut].reshape(S.shape[0], -1, step).max(axis=2)
    return pooled


def _db(S: np.ndarray, ref: float) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(S, ref * 1e-5) / ref)


def plot_separation(y: np.ndarray, result: Separation, path: Path, *, title: str) -> None:
    """Render the separation figure to ``path`` (PNG, or any format matplotlib knows)."""
    # matplotlib here, not at the top: the backend is chosen (Agg: no display) before
    # pyplot is imported, and importing this module chooses nothing for its importer.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage

    p = result.settings
    sr = result.sr
    V = magnitude(stft(y, n_fft=p.n_fft, hop=p.hop))
    ref = max(float(V.max()), 1e-12)
    W, H = result.W, result.H
    WH = W @ H
    freqs = np.arange(V.shape[0]) * sr / p.n_fft
    duration = y.shape[1] / sr
    extent = (0.0, duration, freqs[1], freqs[-1])
    n_ch = len(result.names)
    cols = 4
    ch_rows = math.ceil(n_ch / cols)

    fig = plt.figure(figsize=(16, 11 + 2.6 * ch_rows), layout="constrained")
    grid = fig.add_gridspec(3 + ch_rows, cols, height_ratios=[3, 3, 3] + [2.2] * ch_rows)

    def spectro(ax: Axes, S: np.ndarray, label: str) -> AxesImage:
        img = ax.imshow(
            _db(_pool_frames(S[1:]), ref),
            origin="lower",
            aspect="auto",
            extent=extent,
            cmap="magma",
            vmin=-80,
            vmax=0,
            interpolation="nearest",
        )
        ax.set_yscale("log")
        ax.set_ylim(max(_FMIN, freqs[1]), freqs[-1])
        ax.set_title(label)
        ax.set_ylabel("Hz")
        ax.set_xlabel("time (s)")
        return img

    ax = fig.add_subplot(grid[0, :2])
    img = spectro(ax, V, f"input spectrogram |X| — {title}")
    ax = fig.add_subplot(grid[0, 2:])
    spectro(ax, WH, "reconstruction W·H")
    fig.colorbar(img, ax=ax, label="dB")

    k = W.shape[1]
    if result.spec.mode == "stems":
        # Templates come grouped by stem: one tick per stem, lines between stems.
        ticks = [float(np.mean(g)) + 1 for g in result.groups]
        labels = list(result.names)
        bounds = sorted(g[-1] + 1.5 for g in result.groups)[:-1]  # channel order != W's
        axis_label = "templates, grouped by stem"
    else:
        ticks = list(range(1, k + 1))
        labels = [str(c) for c in ticks]
        bounds = []
        axis_label = "component (low to high spectral centroid)"
    ax = fig.add_subplot(grid[1, :2])
    Wdb = 20 * np.log10(np.maximum(W[1:], W.max() * 1e-4) / W.max())
    ax.imshow(
        Wdb,
        origin="lower",
        aspect="auto",
        cmap="viridis",
        extent=(0.5, k + 0.5, freqs[1], freqs[-1]),
        interpolation="nearest",
    )
    ax.set_yscale("log")
    ax.set_ylim(max(_FMIN, freqs[1]), freqs[-1])
    ax.set_xticks(ticks, labels, fontsize=8)
    for x in bounds:
        ax.axvline(x, color="white", lw=0.8)
    ax.set_xlabel(axis_label)
    ax.set_ylabel("Hz")
    ax.set_title("component spectra W (dB)")

    ax = fig.add_subplot(grid[1, 2:])
    Hn = _pool_frames(H) / max(float(H.max()), 1e-12)
    ax.imshow(
        20 * np.log10(np.maximum(Hn, 1e-4)),
        origin="lower",
        aspect="auto",
        cmap="viridis",
        extent=(0.0, duration, 0.5, k + 0.5),
        interpolation="nearest",
        vmin=-60,
        vmax=0,
    )
    ax.set_yticks(ticks, labels, fontsize=8)
    for x in bounds:
        ax.axhline(x, color="white", lw=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(axis_label.split(",")[0])
    ax.set_title("activations H (dB)")

    ax = fig.add_subplot(grid[2, :])
    t = np.arange(H.shape[1]) * p.hop / sr
    energy = H * W.sum(axis=0)[:, None]
    for i, group in enumerate(result.groups):
        ax.plot(t, energy[group].sum(axis=0), lw=0.7, label=result.names[i])
    ax.set_xlim(0, duration)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("activation")
    ax.set_title("channel activations")
    ax.legend(ncol=8, fontsize=7, loc="upper right")

    for i, name in enumerate(result.names):
        ax = fig.add_subplot(grid[3 + i // cols, i % cols])
        Vi = magnitude(stft(np.asarray(result.channels[i]), n_fft=p.n_fft, hop=p.hop))
        spectro(ax, Vi, name)
    fig.suptitle(
        f"stemdeck separation of {title}: {result.spec.mode}, K = {k}, "
        f"n_fft {p.n_fft}, hop {p.hop}, beta {p.beta:g}"
    )
    try:
        fig.savefig(path, dpi=90)
    except (OSError, ValueError) as exc:
        raise AudioFileError(f"cannot write {str(path)!r}: {exc}") from None
    finally:
        plt.close(fig)
