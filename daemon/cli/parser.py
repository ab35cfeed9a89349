"""The command line's grammar: the argparse parser, the exit statuses, the console log.

:func:`build_parser` knows every command and flag; ``args.command`` names the
command given (``stemdeck.daemon.cli.command`` finds its body in ``COMMANDS``).
:func:`setup_logging` sends every record of the ``stemdeck`` loggers to stderr as
one line.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys

from stemdeck.core import __version__
from stemdeck.core.audiofile.stemfile_write import CODECS
from stemdeck.core.separation.presets import list_presets

from ..osc import FORMS
from ..track_limits import MAX_MINUTES

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "build_parser",
    "send_positionals",
    "setup_logging",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"stemdeck: {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(verbose: bool) -> None:
    """Every record of ``stemdeck`` and the modules below it, as one line on stderr."""
    root = logging.getLogger("stemdeck")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected minutes above 0, got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {text!r}")
    return value


def _host_port(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (an IPv6 host in brackets) as (host, port); host 127.0.0.1 by default."""
    host, _, port_text = text.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {text!r}")
    return host.removeprefix("[").removesuffix("]") or "127.0.0.1", port


def _feedback_target(text: str) -> tuple[str, int, str | None]:
    """``[HOST:]PORT[,FORM]`` as (host, port, form): the form of feedback's addresses
    (``names``, ``index``, or a DAW's, ``reaper`` or ``ardour``); None: the default."""
    target, comma, form = text.partition(",")
    if comma and form not in FORMS:
        raise argparse.ArgumentTypeError(
            f"the form after the comma is one of {', '.join(FORMS)}, got {text!r}"
        )
    host, port = _host_port(target)
    return host, port, form or None


def _http_port(text: str) -> int | None:
    if text == "off":
        return None
    return _port(text)


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--stems", action="store_true", help="drums, bass, vocals, other (default)")
    mode.add_argument(
        "--components", type=_positive_int, metavar="K", help="K NMF components, one channel each"
    )
    p.add_argument("--preset", default="default", help="separation preset or .toml file")
    p.add_argument("--osc-port", type=_port, default=9000, help="UDP port (default 9000)")
    p.add_argument(
        "--osc-host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--osc-allow",
        nargs="+",
        default=[],
        metavar="ADDR",
        help="client addresses or networks allowed to control (with a wider bind)",
    )
    p.add_argument(
        "--feedback",
        action="append",
        default=[],
        type=_feedback_target,
        metavar="HOST:PORT[,FORM]",
        help="send feedback to this control surface until the daemon stops, with no "
        "/subscribe (repeatable); FORM: names, index, or a DAW's reaper or ardour "
        "(docs/daw.md)",
    )
    p.add_argument(
        "--audio",
        choices=("portaudio", "jack"),
        default="portaudio",
        help="portaudio (default), or jack: stemdeck's own JACK client, ports named "
        "after the channels",
    )
    p.add_argument(
        "--connect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--audio jack: connect the ports to the system playback ports "
        "(default: with --outputs mix only)",
    )
    p.add_argument(
        "--sync",
        choices=("off", "jack", "midi", "link"),
        default="off",
        help="who leads the play head: off (default), jack (the JACK transport, with "
        "--audio jack), midi (a MIDI clock, with --sync-midi) or link (an Ableton Link "
        "session; the optional extra: pip install 'stemdeck[link]')",
    )
    p.add_argument(
        "--jack-timebase",
        nargs="?",
        const="always",
        choices=("always", "conditional"),
        help="--audio jack: be the JACK timebase master, filling bars, beats and tempo "
        "from the beat grid and the rate (conditional: only if no other client is)",
    )
    p.add_argument(
        "--sync-midi",
        metavar="PORT",
        help="MIDI clock input: part of a port's name, or virtual:NAME (a port of our own); "
        "the rtmidi API is --midi-api's",
    )
    p.add_argument(
        "--clock-out",
        nargs=2,
        metavar=("midi", "PORT"),
        type=str,
        help="send MIDI clock from the beat grid: PORT part of an input port's name, or "
        "virtual:NAME (with --midi-api jack: a port of stemdeck-clock, time-stamped to the frame)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--audio-device", metavar="NAME", help="output device name (prefix)")
    out.add_argument(
        "--no-audio", action="store_true", help="no sound card: a real-time clock drives the engine"
    )
    p.add_argument("--record", metavar="FILE.wav", help="also write the master output here")
    p.add_argument("--block", type=_positive_int, default=256, help="frames per audio block")
    p.add_argument(
        "--outputs",
        choices=("mix", "channels"),
        default="mix",
        help="stereo mix, or every channel on its own output pair",
    )
    p.add_argument(
        "--keylock-quality",
        choices=("live", "fine"),
        default="live",
        help="keylock's frames: live (21 ms, 24 ms of latency; default) or fine (43 ms, "
        "48 ms of latency: low notes and chords kept in tune; docs/keylock.md)",
    )
    p.add_argument(
        "--library",
        nargs="+",
        default=[],
        metavar="DIR",
        help="folders /track/load may open (default: the track's folder)",
    )
    p.add_argument(
        "--at-end",
        choices=("loop", "stop"),
        default="loop",
        help="what the end of the track does (default loop)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument(
        "--max-minutes",
        type=_positive_minutes,
        default=MAX_MINUTES,
        metavar="M",
        help=f"longest track serve and /track/load accept (default {MAX_MINUTES:g})",
    )
    midi = p.add_mutually_exclusive_group()
    midi.add_argument("--midi", metavar="PORT", help="MIDI input port (name prefix)")
    midi.add_argument("--midi-virtual", metavar="NAME", help="create a virtual MIDI port")
    p.add_argument(
        "--midi-map",
        default="generic",
        metavar="PRESET_OR_FILE",
        help="controller map: generic, nanokontrol2, midimix, launchcontrol-xl, "
        "x-touch-mini, or a .toml file",
    )
    p.add_argument(
        "--midi-api", choices=("alsa", "jack"), help="rtmidi API (default: MIDO_BACKEND or ALSA)"
    )
    p.add_argument(
        "--midi-learn",
        metavar="ADDRESS",
        help="bind the first control moved to ADDRESS and save it in your map",
    )
    p.add_argument(
        "--http",
        type=_http_port,
        default=8080,
        metavar="PORT|off",
        help="browser mixer, OSCQuery and WebSocket port (default 8080; 0 picks one; off)",
    )
    p.add_argument(
        "--http-host",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the web server listens on (default 127.0.0.1; 0.0.0.0 for a phone "
        "on the LAN: a URL with a token is printed)",
    )
    p.add_argument(
        "--advertise",
        action="store_true",
        help="announce _oscjson._tcp and _osc._udp on the LAN (zeroconf)",
    )
    p.add_argument(
        "--no-realtime",
        action="store_true",
        help="do not ask for SCHED_FIFO and locked memory for the audio thread",
    )


def _add_track_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "track", nargs="?", help="audio file (wav, flac, ogg, mp3) or stem file (.stem.mp4)"
    )
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
    """The ``stemdeck`` parser; ``args.command`` is the command given, or None."""
    parser = _Parser(prog="stemdeck", description="Live stem remixing with NMF separation.")
    parser.add_argument("--version", action="version", version=f"stemdeck {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("separate", help="write each channel of a track to an audio file")
    _add_track_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--format",
        choices=("wav", "flac", "stem.mp4"),
        default="wav",
        help="wav (32-bit float, default), flac (24-bit) or stem.mp4 (one NI Stems file "
        "for Traktor and Mixxx)",
    )
    p.add_argument(
        "--codec",
        choices=CODECS,
        default="aac",
        help="audio codec of a stem.mp4: aac (256 kb/s, default) or alac (lossless)",
    )

    for name, helptext in (
        ("serve", "the live daemon: play a track as mixer channels"),
        ("demo", "serve the built-in demo track"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "serve":
            p.add_argument("track", help="audio file (wav, flac, ogg, mp3) or stem file")
        _add_serve_args(p)

    sub.add_parser("devices", help="list audio outputs and MIDI ports")

    p = sub.add_parser("send", help="send one OSC message and print the replies")
    p.add_argument("target", metavar="[HOST:]PORT")
    p.add_argument("address")
    p.add_argument("args", nargs="*", metavar="ARG", help="numbers (1, 0.5, -inf), T/F, or strings")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the daemon's answer (default 1; 60 for /track/load, "
        "answered when the track plays or failed); none, or an /error, exits 1",
    )

    p = sub.add_parser("prep", help="separate every track under folders, in parallel (Dask)")
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="folders (searched recursively) or files"
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="worker processes of the local cluster (default: one per core)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="use this Dask cluster (tcp://HOST:PORT; its workers need stemdeck)",
    )
    p.add_argument(
        "--format",
        choices=("cache", "wav", "flac", "stem.mp4"),
        default="cache",
        help="cache (default: what serve and /track/load start from), or files as "
        "`separate` writes them, under -o DIR",
    )
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (wav, flac, stem.mp4)")
    p.add_argument("--codec", choices=CODECS, default="aac", help="audio codec of stem.mp4 files")
    p.add_argument("--report", metavar="FILE.json", help="write one JSON record per track here")
    p.add_argument(
        "--dashboard", action="store_true", help="start the Dask dashboard (127.0.0.1:8787)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--stems", action="store_true", help="drums, bass, vocals, other (default)")
    mode.add_argument(
        "--components", type=_positive_int, metavar="K", help="K NMF components, one channel each"
    )
    p.add_argument(
        "--preset",
        default="default",
        help=f"separation preset: {', '.join(list_presets())} or a .toml file",
    )

    p = sub.add_parser("beats", help="a track's tempo, beats and downbeats; edit its grid")
    p.add_argument(
        "track", help="audio file (wav, flac, ogg, mp3) or stem file (.stem.mp4: its mix)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"bpm", "beats", "downbeats", "beats_per_bar", "key"} (times in s)',
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write the stored analysis and edit",
    )
    edit = p.add_mutually_exclusive_group()
    edit.add_argument("--halve", action="store_true", help="halve the grid's tempo (kept)")
    edit.add_argument("--double", action="store_true", help="double the grid's tempo (kept)")
    edit.add_argument("--set-bpm", type=_finite, metavar="BPM", help="set the grid's tempo (kept)")
    edit.add_argument(
        "--shift", type=_finite, metavar="MS", help="move the grid later by MS ms (kept)"
    )
    edit.add_argument(
        "--downbeat-at",
        type=_finite,
        metavar="SECONDS",
        help="move the grid so a bar starts at this time of the track (kept)",
    )
    edit.add_argument(
        "--reset-edit", action="store_true", help="drop your edit: the analysis's grid again"
    )

    p = sub.add_parser("plot", help="figure of the spectrogram, W, H and the channels")
    _add_track_args(p)
    p.add_argument("-o", "--output", required=True, metavar="FIG.png", help="image file")
    return parser


def send_positionals(argv: list[str]) -> list[str]:
    """``send`` arguments such as ``-inf`` or ``-1e-3`` are values, not options:
    argparse only knows plain negative numbers, so the values go after ``--``."""
    i = next((k for k, token in enumerate(argv) if not token.startswith("-")), None)
    if i is None or argv[i] != "send":
        return argv
    options, values = [], []
    rest = argv[i + 1 :]
    j = 0
    while j < len(rest):
        t = rest[j]
        if t == "--timeout" and j + 1 < len(rest):
            options += rest[j : j + 2]
            j += 2
            continue
        if t.startswith("--timeout=") or t in ("-h", "--help"):
            options.append(t)
        elif t != "--":
            values.append(t)
        j += 1
    return [*argv[: i + 1], *options, "--", *values]
