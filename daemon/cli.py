"""The ``stemdeck`` command line.

Every user error ends as one line on stderr (``stemdeck: error: ...``) and a
non-zero exit status; tracebacks are kept for real bugs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stemdeck.core import __version__
from stemdeck.core.audiofile.files import load
from stemdeck.core.audiofile.mp4 import is_mp4_path
from stemdeck.core.audiofile.stemfile import (
    Tags,
    channel_keys,
    probe,
    read_stem_file,
    read_tags,
    stem_track_name,
)
from stemdeck.core.audiofile.stemfile_write import CODECS, check_encodable
from stemdeck.core.errors import ParameterError, StemdeckError
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.presets import SeparationParams, list_presets, load_separation_preset
from stemdeck.core.separation.separate import ChannelSink, Separation, separate

from .outputs import (
    ChannelFiles,
    make_folder,
    write_atomic,
    write_separated_stem_file,
    write_stem_mp4,
)
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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {text!r}")
    return value


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
    p.set_defaults(func=cmd_separate)

    for name, helptext in (
        ("serve", "the live daemon: play a track as mixer channels"),
        ("demo", "serve the built-in demo track"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "serve":
            p.add_argument("track", help="audio file (wav, flac, ogg, mp3) or stem file")
        _add_serve_args(p)
        p.set_defaults(func=cmd_serve)

    p = sub.add_parser("devices", help="list audio outputs and MIDI ports")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("send", help="send one OSC message and print the replies")
    p.add_argument("target", metavar="[HOST:]PORT")
    p.add_argument("address")
    p.add_argument("args", nargs="*", metavar="ARG", help="numbers (1, 0.5, -inf), T/F, or strings")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for replies")
    p.set_defaults(func=cmd_send)

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
    p.set_defaults(func=cmd_prep)

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
        from stemdeck.core.material.demo import (
            demo_track,  # synthesis needs scipy.signal: load late
        )

        demo = demo_track()
        return demo.mix, demo.sr, demo.name
    if not args.track:
        raise ParameterError("no TRACK given; name an audio file or use --demo")
    y, sr = load(args.track)
    return y, sr, stem_track_name(args.track)


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


def _source_tags(args: argparse.Namespace, name: str) -> Tags:
    if args.demo:
        return Tags(title=name, artist="stemdeck")
    return read_tags(args.track)


def _separate_stem_file(args: argparse.Namespace) -> int:
    """A stem file in: its stems are the channels; nothing is separated."""
    if args.components:
        raise ParameterError(
            f"{args.track!r} is a stem file: its channels are its stems; drop --components"
        )
    stems = read_stem_file(args.track)
    name = stem_track_name(args.track)
    out = Path(args.output)
    if args.format == "stem.mp4":
        check_encodable(stems.sr, codec=args.codec)
        make_folder(out)
        path = out / f"{name}.stem.mp4"
        if path.resolve() == Path(args.track).resolve():
            raise ParameterError(f"{str(path)!r} is the input file; choose another -o DIR")
        write_stem_mp4(
            path,
            stems.master if stems.master is not None else stems.mix,
            stems.stems,
            stems.sr,
            names=stems.names,
            colours=stems.colours,
            codec=args.codec,
            tags=stems.tags,
        )
        print(f"wrote {path}")
        return 0
    folder = out / name
    make_folder(folder)
    for key, audio in zip(channel_keys(stems.names), stems.stems, strict=True):
        write_atomic(folder / f"{key}.{args.format}", audio, stems.sr, args.format)
    print(f"wrote {len(stems.names)} files to {folder} (stems from the file, not separated)")
    return 0


# -- commands -----------------------------------------------------------------------
def cmd_separate(args: argparse.Namespace) -> int:
    if args.format == "stem.mp4" and args.components:
        raise ParameterError(
            "--format stem.mp4 holds the four stems; components mode has no stems "
            "(drop --components, or use --format wav or flac)"
        )
    if args.track and not args.demo and is_mp4_path(args.track) and probe(args.track):
        return _separate_stem_file(args)
    y, sr, name = _read_track(args)
    if args.format == "stem.mp4":
        check_encodable(sr, codec=args.codec)  # before the separation, not after it
        out = Path(args.output)
        make_folder(out)
        tags = _source_tags(args, name)
        result = _separate(args, y, sr, name)
        path = out / f"{name}.stem.mp4"
        write_separated_stem_file(
            path, y, list(result.names), result.channels, sr, codec=args.codec, tags=tags
        )
        print(f"wrote {path}")
        return 0
    folder = Path(args.output) / name
    # The files are written while the next channels are computed.
    with ChannelFiles(folder, sr, args.format) as files:
        result = _separate(args, y, sr, name, on_channel=files)
    print(f"wrote {len(files.written)} files to {folder}")
    return 0 if len(files.written) == len(result.names) else EXIT_ERROR


def cmd_prep(args: argparse.Namespace) -> int:
    from .prep import PrepOptions, run_prep, summary_lines

    opts = PrepOptions(
        paths=list(args.paths),
        params=_params(args),
        mode="components" if args.components else "stems",
        fmt=args.format,
        output=args.output,
        codec=args.codec,
        workers=args.workers,
        scheduler=args.scheduler,
        dashboard=args.dashboard,
        report=args.report,
    )
    summary = run_prep(opts)
    for line in summary_lines(summary):
        print(line)
    return EXIT_ERROR if summary.failed or summary.problems else 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_separation

    y, sr, name = _read_track(args)
    result = _separate(args, y, sr, name)
    out = Path(args.output)
    plot_separation(y, result, out, title=name)
    print(f"wrote {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import DEMO, Daemon, ServeOptions

    track = getattr(args, "track", None) or DEMO
    if track != DEMO and is_mp4_path(track):
        probe(track)  # a damaged or non-stem MP4 is one clear error before anything starts
    elif track != DEMO:
        # A missing or unreadable file is one clear error before anything starts; the
        # header is enough here (the daemon decodes the file once, itself).
        import soundfile as sf

        try:
            sf.info(track)
        except Exception:
            load(track)  # raises the AudioFileError that says what is wrong
    params = load_separation_preset(args.preset).with_overrides(n_components=args.components)
    opts = ServeOptions(
        track=track,
        mode="components" if args.components else "stems",
        params=params,
        osc_host=args.osc_host,
        osc_port=args.osc_port,
        osc_allow=list(args.osc_allow),
        audio_device=args.audio_device,
        no_audio=args.no_audio,
        record=args.record,
        block=args.block,
        outputs=args.outputs,
        library=list(args.library),
        use_cache=not args.no_cache,
        at_end=args.at_end,
        midi_port=args.midi,
        midi_virtual=args.midi_virtual,
        midi_map=args.midi_map,
        midi_api=args.midi_api,
        midi_learn=args.midi_learn,
        realtime=not args.no_realtime,
        http_port=args.http,
        http_host=args.http_host,
        advertise=args.advertise,
    )
    if args.advertise and args.http is None:
        raise ParameterError("--advertise announces the web server: drop --http off")
    if args.midi_learn and not (args.midi or args.midi_virtual):
        raise ParameterError("--midi-learn needs --midi PORT or --midi-virtual NAME")
    if args.midi or args.midi_virtual:
        from .midi import resolve_map

        resolve_map(args.midi_map)  # a broken map is one clear error before anything starts
    daemon = Daemon(opts)
    try:
        daemon.start()
    except BaseException:
        daemon.shutdown()
        raise
    return daemon.run()


def cmd_devices(args: argparse.Namespace) -> int:
    try:
        import sounddevice as sd

        print("audio outputs:")
        found = False
        for i, d in enumerate(sd.query_devices()):
            if d["max_output_channels"] > 0:
                api = sd.query_hostapis(d["hostapi"])["name"]
                print(
                    f"  {i}: {d['name']} ({api}, {d['max_output_channels']} out, "
                    f"{d['default_samplerate']:.0f} Hz)"
                )
                found = True
        if not found:
            print("  none (serve runs on a null clock)")
    except (OSError, ImportError) as exc:
        print(f"audio outputs: unavailable ({exc})")
    import mido

    backends = [os.environ.get("MIDO_BACKEND", "mido.backends.rtmidi")]
    if "MIDO_BACKEND" not in os.environ:
        backends.append("mido.backends.rtmidi/UNIX_JACK")  # no ALSA sequencer: try JACK
    problems = []
    for name in backends:
        try:
            backend = mido.Backend(name, load=True)
            inputs, outputs = backend.get_input_names(), backend.get_output_names()
        except Exception as exc:  # rtmidi raises its own error types per API
            problems.append(f"{name}: {str(exc).strip()}")
            continue
        print(f"MIDI ({name}):")
        print("  inputs: " + (", ".join(inputs) or "none"))
        print("  outputs: " + (", ".join(outputs) or "none"))
        break
    else:
        print("MIDI: unavailable (" + "; ".join(problems) + ")")
    return 0


def _osc_arg(text: str) -> object:
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def cmd_send(args: argparse.Namespace) -> int:
    import socket

    from pythonosc import osc_packet

    from .osc import build

    host, _, port_text = args.target.rpartition(":")
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ParameterError(f"target must be [HOST:]PORT, got {args.target!r}") from None
    if not args.address.startswith("/"):
        raise ParameterError(f"an OSC address starts with '/', got {args.address!r}")
    values = [_osc_arg(a) for a in args.args]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(args.timeout)
        try:
            sock.sendto(build(args.address, values), (host, port))
        except OSError as exc:
            raise ParameterError(f"cannot send to {host}:{port}: {exc.strerror}") from None
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            try:
                data, _ = sock.recvfrom(65536)
            except (TimeoutError, ConnectionRefusedError):
                break
            for timed in osc_packet.OscPacket(data).messages:
                msg = timed.message
                print(
                    " ".join(
                        [
                            msg.address,
                            *(repr(p) if isinstance(p, str) else str(p) for p in msg.params),
                        ]
                    )
                )
                if msg.address == "/state/end":
                    return 0
                if args.address != "/state":
                    deadline = min(deadline, time.monotonic() + 0.1)
    return 0


def _send_positionals(argv: list[str]) -> list[str]:
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_send_positionals(list(sys.argv[1:] if argv is None else argv)))
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except StemdeckError as exc:
        print(f"stemdeck: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("stemdeck: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``stemdeck send ... | head``): nothing more to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
