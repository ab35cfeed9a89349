"""The ``stemdeck`` command line.

Every user error ends as one line on stderr (``stemdeck: error: ...``) and a
non-zero exit status; tracebacks are kept for real bugs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from stemdeck.core import __version__
from stemdeck.core.audio import load, write
from stemdeck.core.cache import SeparationCache
from stemdeck.core.errors import AudioFileError, ParameterError, StemdeckError
from stemdeck.core.presets import SeparationParams, list_presets, load_separation_preset
from stemdeck.core.separate import ChannelSink, Separation, separate

from .progress import ProgressBar

log = logging.getLogger("stemdeck")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"stemdeck: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_track_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("track", nargs="?", help="audio file (wav, flac, ogg, mp3)")
    p.add_argument(
        "--demo", action="store_true", help="use the built-in demo track instead of a file"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--stems",
        action="store_true",
        help="four channels drums, bass, vocals, other (the default)",
    )
    mode.add_argument(
        "--components",
        type=_positive_int,
        metavar="K",
        help="K NMF components, one channel each, low to high by spectral centroid",
    )
    p.add_argument(
        "--preset",
        default="default",
        help=f"separation preset: {', '.join(list_presets())} or a .toml file",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stemdeck", description="Live stem remixing with NMF separation.")
    parser.add_argument("--version", action="version", version=f"stemdeck {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("separate", help="write each channel of a track to an audio file")
    _add_track_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--format",
        choices=("wav", "flac"),
        default="wav",
        help="wav (32-bit float, default) or flac (24-bit)",
    )
    p.set_defaults(func=cmd_separate)

    p = sub.add_parser("plot", help="figure of the spectrogram, W, H and the channels")
    _add_track_args(p)
    p.add_argument("-o", "--output", required=True, metavar="FIG.png", help="image file")
    p.set_defaults(func=cmd_plot)
    return parser


# -- shared steps -------------------------------------------------------------------
def _read_track(args: argparse.Namespace) -> tuple[np.ndarray, int, str]:
    if args.demo:
        if args.track:
            raise ParameterError("give a TRACK or --demo, not both")
        from stemdeck.core.demo import demo_track  # synthesis needs scipy.signal: load late

        demo = demo_track()
        return demo.mix, demo.sr, demo.name
    if not args.track:
        raise ParameterError("no TRACK given; name an audio file or use --demo")
    y, sr = load(args.track)
    return y, sr, Path(args.track).stem


def _params(args: argparse.Namespace) -> SeparationParams:
    params = load_separation_preset(args.preset)
    return params.with_overrides(n_components=args.components)


def _separate(
    args: argparse.Namespace,
    y: np.ndarray,
    sr: int,
    name: str,
    *,
    on_channel: ChannelSink | None = None,
) -> Separation:
    params = _params(args)
    cache = None if args.no_cache else SeparationCache()
    if cache is not None:
        cache.clean_stale()
    bar = ProgressBar(f"separating {name}")
    t0 = time.perf_counter()
    try:
        result = separate(
            y,
            sr,
            params=params,
            mode="components" if args.components else "stems",
            cache=cache,
            progress=bar,
            on_channel=on_channel,
        )
    finally:
        bar.close()
    took = time.perf_counter() - t0
    source = "from the cache" if result.from_cache else f"in {took:.1f} s"
    log.info("%s: %d channels %s", name, len(result.names), source)
    return result


def _write_atomic(path: Path, audio: np.ndarray, sr: int, fmt: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=f".{fmt}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp, audio, sr, fmt=fmt)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- commands -----------------------------------------------------------------------
def cmd_separate(args: argparse.Namespace) -> int:
    y, sr, name = _read_track(args)
    folder = Path(args.output) / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AudioFileError(f"cannot create {str(folder)!r}: {exc.strerror}") from None
    written: list[Path] = []
    clipped: list[str] = []
    # One writer thread saves each channel while the next ones are computed.
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = []

        def save(index: int, channel: str, audio: np.ndarray) -> None:
            path = folder / f"{channel}.{args.format}"
            if args.format == "flac" and float(np.abs(audio).max()) > 1.0:
                clipped.append(channel)
            futures.append(pool.submit(_write_atomic, path, audio, sr, args.format))
            written.append(path)

        result = _separate(args, y, sr, name, on_channel=save)
        for f in futures:
            f.result()
    if clipped:
        log.warning(
            "%s peak above full scale and clip in 24-bit flac; "
            "use --format wav (float) to keep them",
            ", ".join(clipped),
        )
    print(f"wrote {len(written)} files to {folder}")
    return 0 if len(written) == len(result.names) else EXIT_ERROR


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_separation

    y, sr, name = _read_track(args)
    result = _separate(args, y, sr, name)
    out = Path(args.output)
    plot_separation(y, result, out, title=name)
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except StemdeckError as exc:
        print(f"stemdeck: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("stemdeck: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
