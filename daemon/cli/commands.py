"""The bodies of the ``stemdeck`` commands but ``send`` (``send.py``) and ``beats`` (``beats.py``).

Each takes the parsed arguments and returns the exit status; a user error
raises a :class:`~stemdeck.core.errors.StemdeckError`, which ``main`` prints as
one line. ``serve`` and ``prep`` import their machinery when they run, so the
other commands start without it; ``separate`` and ``plot`` import the separation
(numpy's and scipy's stack) when they separate, so ``serve``, whose process never
separates (its worker does), runs without scipy.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from stemdeck.core.audiofile.decode import read_stem_file
from stemdeck.core.audiofile.files import load, printable_name, probe_audio
from stemdeck.core.audiofile.mp4 import is_mp4_path
from stemdeck.core.audiofile.roles import channel_keys
from stemdeck.core.audiofile.stemfile import probe, stem_track_name
from stemdeck.core.audiofile.stemfile_write import check_encodable
from stemdeck.core.audiofile.tags import Tags, read_tags
from stemdeck.core.errors import ParameterError
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.keys import Mode, SeparationSpec
from stemdeck.core.separation.presets import load_separation_preset

from ..c_stderr import captured
from ..outputs import (
    ChannelFiles,
    check_format,
    make_folder,
    output_path,
    write_separated_stem_file,
    write_stem_mp4,
)
from ..progress import ProgressLine
from .parser import EXIT_ERROR

if TYPE_CHECKING:  # imported where they separate (the module's docstring)
    from stemdeck.core.separation.separate import ChannelSink, Separation

__all__ = ["cmd_devices", "cmd_plot", "cmd_prep", "cmd_separate", "cmd_serve"]

log = logging.getLogger(__name__)


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


def _mode(args: argparse.Namespace) -> Mode:
    return "components" if args.components else "stems"


def _spec(args: argparse.Namespace) -> SeparationSpec:
    params = load_separation_preset(args.preset).with_overrides(n_components=args.components)
    return SeparationSpec(_mode(args), params)


def _separate(
    args: argparse.Namespace,
    y: np.ndarray,
    sr: int,
    name: str,
    *,
    on_channel: ChannelSink | None = None,
    grid: bool = False,
) -> Separation:
    """Separate ``y`` (through the cache unless ``--no-cache``); with ``grid``, the
    track's beat grid is found or computed and kept in the cache's beat store too."""
    # Here, not at the top: serve's process never imports the separation (scipy).
    from stemdeck.core.separation.prep import track_beats
    from stemdeck.core.separation.separate import separate

    spec = _spec(args)
    cache = None if args.no_cache else SeparationCache()
    if cache is not None:
        cache.clean_stale()
    bar = ProgressLine(f"separating {name}")
    t0 = time.perf_counter()
    try:
        result = separate(
            y,
            sr,
            spec=spec,
            cache=cache,
            progress=bar,
            on_channel=on_channel,
        )
    finally:
        bar.close()
    took = time.perf_counter() - t0
    source = "from the cache" if result.from_cache else f"in {took:.1f} s"
    log.info("%s: %d channels %s", name, len(result.names), source)
    if grid and cache is not None:
        beat_key, record, failed = track_beats(y, sr, str(cache.root))
        if record is None:
            log.warning("%s: no beat grid: %s", name, failed)
        else:
            shown = record.grid
            assert shown is not None
            log.debug("%s: beat grid %.2f BPM kept as %s", name, shown.bpm, beat_key[:12])
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
        path = output_path(out, [name], suffix=".stem.mp4")
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
        print(f"wrote {printable_name(path)}")
        return 0
    folder = output_path(out, [name])
    # Files named by the file's own stems (Vox is vox.wav), not by the mixer's roles.
    with ChannelFiles(folder, stems.sr, args.format) as files:
        for i, (key, audio) in enumerate(zip(channel_keys(stems.names), stems.stems, strict=True)):
            files(i, key, audio)
    print(
        f"wrote {len(stems.names)} files to {printable_name(folder)} "
        "(stems from the file, not separated)"
    )
    return 0


# -- commands -----------------------------------------------------------------------
def cmd_separate(args: argparse.Namespace) -> int:
    check_format(args.format, mode=_mode(args))
    if args.track and not args.demo and is_mp4_path(args.track) and probe(args.track):
        return _separate_stem_file(args)
    y, sr, name = _read_track(args)
    if args.format == "stem.mp4":
        check_encodable(sr, codec=args.codec)  # before the separation, not after it
        out = Path(args.output)
        make_folder(out)
        tags = _source_tags(args, name)
        result = _separate(args, y, sr, name, grid=True)
        path = output_path(out, [name], suffix=".stem.mp4")
        write_separated_stem_file(
            path, y, list(result.names), result.channels, sr, codec=args.codec, tags=tags
        )
        print(f"wrote {printable_name(path)}")
        return 0
    folder = output_path(Path(args.output), [name])
    # The files are written while the next channels are computed.
    with ChannelFiles(folder, sr, args.format) as files:
        result = _separate(args, y, sr, name, on_channel=files, grid=True)
    print(f"wrote {len(files.written)} files to {printable_name(folder)}")
    return 0 if len(files.written) == len(result.names) else EXIT_ERROR


def cmd_prep(args: argparse.Namespace) -> int:
    from ..prep import PrepOptions, run_prep, summary_lines  # the other commands skip it

    opts = PrepOptions(
        paths=list(args.paths),
        spec=_spec(args),
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
    from ..plot import plot_separation  # matplotlib: only this command pays for it

    y, sr, name = _read_track(args)
    result = _separate(args, y, sr, name)
    out = Path(args.output)
    plot_separation(y, result, out, title=name)
    print(f"wrote {printable_name(out)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # The daemon's machinery (aiohttp, mido, sounddevice): only serve pays for it.
    # (The separation's fork server is importing meanwhile: daemon/cli/__init__.py.)
    from ..serve import DEMO, Daemon, ServeOptions

    track = getattr(args, "track", None) or DEMO
    if track != DEMO:
        # A missing, unreadable or damaged file is one clear error before anything
        # starts; the header is enough here (the daemon decodes the file once, itself).
        probe_audio(track)
    opts = ServeOptions(
        track=track,
        spec=_spec(args),
        max_minutes=args.max_minutes,
        osc_host=args.osc_host,
        osc_port=args.osc_port,
        osc_allow=list(args.osc_allow),
        feedback=list(args.feedback),
        audio=args.audio,
        audio_device=args.audio_device,
        connect=args.connect,
        sync=args.sync,
        sync_midi=args.sync_midi,
        jack_timebase=args.jack_timebase,
        clock_out=args.clock_out[1] if args.clock_out else None,
        no_audio=args.no_audio,
        record=args.record,
        block=args.block,
        outputs=args.outputs,
        library=list(args.library),
        use_cache=not args.no_cache,
        at_end=args.at_end,
        keylock_quality=args.keylock_quality,
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
    if args.clock_out and args.clock_out[0] != "midi":
        raise ParameterError(f"--clock-out takes midi PORT, got {args.clock_out[0]!r}")
    if args.advertise and args.http is None:
        raise ParameterError("--advertise announces the web server: drop --http off")
    if args.midi_learn and not (args.midi or args.midi_virtual):
        raise ParameterError("--midi-learn needs --midi PORT or --midi-virtual NAME")
    if args.midi or args.midi_virtual:
        from ..midi import resolve_map

        resolve_map(args.midi_map)  # a broken map is one clear error before anything starts
    daemon = Daemon(opts)
    try:
        daemon.start()
    except BaseException:
        daemon.shutdown()
        raise
    _end_process(daemon.run())


def _end_process(code: int) -> NoReturn:
    """End the daemon's process once it has shut itself down (every thread it owns
    stopped, the worker ended, the recording closed, ``stopped`` logged).

    Not through Python's finalization: the beat analysis runs in a daemon thread
    that may be inside native code at exit, and finalizing around it ended the
    daemon once in a few stops with SIGABRT (libsoxr's C++ unwound by the thread's
    forced exit: std::terminate) or not at all (OpenBLAS's exit handler waiting for
    a helper thread left mid-product).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


#: How ``devices`` names mido's rtmidi backends: by the MIDI system they reach.
_MIDI_SYSTEMS = {
    "mido.backends.rtmidi": "ALSA",
    "mido.backends.rtmidi/LINUX_ALSA": "ALSA",
    "mido.backends.rtmidi/UNIX_JACK": "JACK",
}
_RTMIDI_WHERE = re.compile(r"^\w+::\w+: ")  # the C++ function an rtmidi error names


def cmd_devices(args: argparse.Namespace) -> int:
    """Audio outputs and MIDI ports, in plain lines; what ALSA's and JACK's libraries
    print while they are probed goes to the debug log (``-v``; ``daemon/c_stderr.py``)."""
    # libjack starts a JACK server to answer a probe unless told not to: a list must not.
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    for line in _audio_lines() + _midi_lines():
        print(line)
    return 0


def _audio_lines() -> list[str]:
    lines = ["audio outputs:"]
    with captured(log, "PortAudio"):
        try:
            import sounddevice as sd  # PortAudio starts here: ALSA and JACK are probed

            outputs = [
                f"  {i}: {d['name']} ({sd.query_hostapis(d['hostapi'])['name']}, "
                f"{d['max_output_channels']} out, {d['default_samplerate']:.0f} Hz)"
                for i, d in enumerate(sd.query_devices())
                if d["max_output_channels"] > 0
            ]
        except (OSError, ImportError) as exc:
            return [f"audio outputs: unavailable ({exc})"]
    return lines + (outputs or ["  none (serve runs on a null clock)"])


def _midi_lines() -> list[str]:
    import mido  # only this command and serve need it

    backends = [os.environ.get("MIDO_BACKEND", "mido.backends.rtmidi")]
    if "MIDO_BACKEND" not in os.environ:
        backends.append("mido.backends.rtmidi/UNIX_JACK")  # no ALSA sequencer: try JACK
    problems = []
    for name in backends:
        system = _MIDI_SYSTEMS.get(name, name)
        try:
            with captured(log, "rtmidi"):
                backend = mido.Backend(name, load=True)
                inputs, outputs = backend.get_input_names(), backend.get_output_names()
        except Exception as exc:  # rtmidi raises its own error types per API
            # "MidiInAlsa::initialize: error creating ..." -> "error creating ..."
            reason = _RTMIDI_WHERE.sub("", str(exc).strip())
            problems.append(f"{system}: {reason}")
            continue
        return [
            f"MIDI ({system}):",
            "  inputs: " + (", ".join(inputs) or "none"),
            "  outputs: " + (", ".join(outputs) or "none"),
        ]
    return ["MIDI: unavailable (" + "; ".join(problems) + ")"]
