"""``stemdeck serve``: the live daemon.

Start-up plays the original track at once; separation runs in a worker process
(the GIL must not stall audio) and its channels replace the original without a
seam, since they add up to it. A cached track starts with its channels.
"""

from __future__ import annotations

import logging
import math
import mmap
import multiprocessing as mp
import os
import re
import signal
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stemdeck.core.audio import load, resample
from stemdeck.core.cache import SeparationCache
from stemdeck.core.engine import Mixer, Play, SetTrack, Track
from stemdeck.core.errors import ParameterError, PresetError, StemdeckError
from stemdeck.core.params import fader_to_gain, gain_to_fader
from stemdeck.core.presets import SeparationParams, read_preset_text
from stemdeck.core.registry import Registry
from stemdeck.core.separate import cached_separation, channel_names, separate

from .audio import NullSink, Recorder, Sink, SoundDeviceSink, output_device
from .osc import Feedback, OscControl, OscServer

log = logging.getLogger("stemdeck")

DEMO = "demo:"  # the built-in demo track, as a track source
_SCENE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}\Z")


@dataclass
class ServeOptions:
    track: str = DEMO
    mode: str = "stems"
    params: SeparationParams = field(default_factory=SeparationParams)
    osc_host: str = "127.0.0.1"
    osc_port: int = 9000
    osc_allow: list[str] = field(default_factory=list)
    audio_device: str | None = None
    no_audio: bool = False
    record: str | None = None
    block: int = 256
    outputs: str = "mix"
    library: list[str] = field(default_factory=list)
    use_cache: bool = True
    at_end: str = "loop"
    midi_port: str | None = None
    midi_virtual: str | None = None
    midi_map: str = "generic"
    midi_api: str | None = None
    midi_learn: str | None = None


def read_source(source: str, sr: int | None) -> tuple[np.ndarray, int, str]:
    """Audio of a track source (a path or the demo), at ``sr`` when given."""
    if source == DEMO:
        from stemdeck.core.demo import demo_track

        demo = demo_track()
        y = demo.mix
        if sr is not None and sr != demo.sr:
            y = resample(y, demo.sr, sr)
        return y, sr or demo.sr, demo.name
    y, file_sr = load(source, sr=sr)
    return y, file_sr, Path(source).stem


def _worker(
    source: str, sr: int, params: SeparationParams, mode: str, cache_root: str | None, conn: Any
) -> None:
    """Separation in its own process; reports progress and 'done' through ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    # Leave a core to the audio server and the parent's audio thread.
    from stemdeck.core import nmf as nmf_module

    nmf_module._THREADS = max(1, (os.cpu_count() or 1) - 1)
    try:
        y, sr, _ = read_source(source, sr)
        cache = SeparationCache(cache_root) if cache_root else None
        last = [0.0]

        def progress(stage: str, fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] > 0.2 or fraction >= 1.0:
                last[0] = now
                conn.send(("progress", stage, fraction))

        result = separate(y, sr, params=params, mode=mode, cache=cache, progress=progress)
        if result.info.get("cache_path"):
            conn.send(("done", None))
        else:  # no cache (disabled or full disk): hand the audio over
            conn.send(("data", np.asarray(result.channels)))
    except StemdeckError as exc:
        conn.send(("error", str(exc)))
    except Exception as exc:  # report, the parent keeps playing the original
        conn.send(("error", f"separation failed: {exc!r}"))
    finally:
        conn.close()


def _will_need(channels: np.ndarray, start: int, end: int) -> None:
    """madvise(WILLNEED) samples ``start:end`` of every row of a memory-mapped
    (n, audio_channels, samples) float32 array; nothing for arrays in memory."""
    mm = getattr(channels, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
        return
    length = channels.shape[2]
    start, end = max(0, start), min(end, length)
    if end <= start:
        return
    base = getattr(channels, "offset", 0)
    page = mmap.PAGESIZE
    for row in range(channels.shape[0] * channels.shape[1]):
        first = base + (row * length + start) * 4
        aligned = first - first % page
        try:
            mm.madvise(mmap.MADV_WILLNEED, aligned, (end - start) * 4 + (first - aligned))
        except (OSError, ValueError):
            return


class Daemon:
    """Engine, audio sink, OSC server, feedback, separation worker and status line."""

    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        self.stop_event = threading.Event()
        self.cache = SeparationCache() if opts.use_cache else None
        if self.cache is not None:
            self.cache.clean_stale()
        self.progress: tuple[str, float] | None = None
        self.track_name = ""
        self._worker: Any = None
        self._watcher: threading.Thread | None = None
        self._morph_stop = threading.Event()
        self._morph_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.recorder: Recorder | None = None
        self.sink: Sink | None = None
        self.server: OscServer | None = None
        self.feedback: Feedback | None = None
        self.midi: Any = None
        self.names = channel_names(opts.mode, opts.params)
        self.registry = Registry(self.names)
        # One strip per channel the separation gives, no more.
        self.engine = Mixer(max_channels=len(self.names), at_end=opts.at_end)
        self.started_at = time.monotonic()
        self.first_sound: float | None = None
        self.library = [Path(p).expanduser().resolve() for p in opts.library]
        if not self.library:
            if opts.track != DEMO:
                self.library = [Path(opts.track).expanduser().resolve().parent]

    # -- Host protocol (used by OSC) --------------------------------------------------
    def post(self, command: object) -> bool:
        return self.engine.post(command)

    def status(self) -> str:
        m = self.engine
        pos = m.position / m.sr if m.sr else 0.0
        sep = "ready" if self.progress is None else f"separating {self.progress[1] * 100:.0f}%"
        xruns = self.sink.xruns if self.sink else 0
        slowest = self.sink.max_render_s * 1000 if self.sink else 0.0
        return (
            f"{self.track_name} {'playing' if m.playing else 'stopped'} {pos:.1f}s {sep} "
            f"xruns {xruns} drops {m.dropped} slowest block {slowest:.2f} ms"
            + (
                f" midi {self.midi.received} in {self.midi.errors} bad"
                if self.midi is not None
                else ""
            )
        )

    def load_track(self, path: str) -> None:
        """OSC /track/load: only audio files under the library folders."""
        target = Path(path).expanduser()
        try:
            resolved = target.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ParameterError(f"refused {path!r}: no such file") from None
        if not any(resolved.is_relative_to(root) for root in self.library):
            roots = ", ".join(str(r) for r in self.library) or "(none: use --library)"
            raise ParameterError(f"refused {path!r}: outside the library folders {roots}")
        if not resolved.is_file():
            raise ParameterError(f"refused {path!r}: not a file")
        threading.Thread(
            target=self._load_in_background,
            args=(str(resolved),),
            name="stemdeck-load",
            daemon=True,
        ).start()

    def _load_in_background(self, path: str) -> None:
        try:
            self._open_track(path)
        except StemdeckError as exc:
            log.warning("track not loaded: %s", exc)

    # -- scenes ------------------------------------------------------------------------
    @staticmethod
    def scene_dir() -> Path:
        env = os.environ.get("STEMDECK_CONFIG")
        if env:
            return Path(env).expanduser() / "scenes"
        import platformdirs

        return Path(platformdirs.user_config_dir("stemdeck")) / "scenes"

    def save_scene(self, name: str) -> None:
        if not _SCENE_NAME.match(name):
            raise ParameterError(f"scene name {name!r}: use letters, digits, space, _ . -")
        folder = self.scene_dir()
        snap = self.registry.snapshot()
        lines = [f"# stemdeck scene {name!r}, saved {time.strftime('%Y-%m-%d %H:%M:%S')}", ""]
        master: dict[str, Any] = snap["master"]
        channels: dict[str, dict[str, Any]] = snap["channels"]
        lines += [
            "[master]",
            f"gain = {master['gain']!r}",
            f"mute = {str(master['mute']).lower()}",
            "",
        ]
        for ch, values in channels.items():
            lines.append(f'[channels."{ch}"]')
            lines += [
                f"gain = {values['gain']!r}",
                f"mute = {str(values['mute']).lower()}",
                f"solo = {str(values['solo']).lower()}",
                f"pan = {values['pan']!r}",
                "",
            ]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.toml.tmp"
            tmp.write_text("\n".join(lines), encoding="utf-8")
            os.replace(tmp, folder / f"{name}.toml")
        except OSError as exc:
            raise ParameterError(
                f"cannot save scene {name!r} in {folder}: {exc.strerror}"
            ) from None

    def load_scene(self, name: str) -> dict[str, Any]:
        own = self.scene_dir() / f"{name}.toml"
        try:
            if own.is_file():
                text = own.read_text(encoding="utf-8")
            else:
                _, text = read_preset_text("scenes", name)
            return tomllib.loads(text)
        except PresetError:
            raise ParameterError(f"no scene {name!r} (saved or shipped)") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ParameterError(f"scene {name!r} is unreadable: {exc}") from None

    def recall_scene(self, name: str, fade: float) -> None:
        """Recall a scene; with ``fade`` > 0 the levels glide there (a morph)."""
        if not _SCENE_NAME.match(name):
            raise ParameterError(f"scene name {name!r}: use letters, digits, space, _ . -")
        scene = self.load_scene(name)
        self._morph_stop.set()
        if self._morph_thread is not None:
            self._morph_thread.join(timeout=1)
        if fade <= 0:
            for cmd in self.registry.restore(scene):
                self.post(cmd)
            return
        probe = Registry(self.registry.names)
        probe.restore(scene)  # validates the whole scene before anything moves
        self._morph_stop = threading.Event()
        self._morph_thread = threading.Thread(
            target=self._morph,
            args=(self.registry.snapshot(), probe.snapshot(), fade, self._morph_stop),
            name="stemdeck-morph",
            daemon=True,
        )
        self._morph_thread.start()

    def _morph(
        self, start: dict[str, Any], end: dict[str, Any], fade: float, stop: threading.Event
    ) -> None:
        """Glide fader positions and pans from ``start`` to ``end``; switches flip at the end."""
        t0 = time.monotonic()

        def glide(a: dict[str, Any], b: dict[str, Any], x: float) -> dict[str, Any]:
            # Levels move along the fader (as a hand would), pan linearly; switches
            # take their new state at the end.
            f = gain_to_fader(a["gain"]) + (gain_to_fader(b["gain"]) - gain_to_fader(a["gain"])) * x
            out: dict[str, Any] = {
                k: (b[k] if x >= 1.0 else a[k]) for k in ("mute", "solo") if k in a
            }
            out["gain"] = fader_to_gain(min(max(f, 0.0), 1.0))  # rounding stays in range
            if "pan" in a:
                out["pan"] = a["pan"] + (b["pan"] - a["pan"]) * x
            return out

        while not stop.is_set():
            x = min((time.monotonic() - t0) / fade, 1.0)
            frame = {
                "channels": {
                    name: glide(a, end["channels"].get(name, a), x)
                    for name, a in start["channels"].items()
                },
                "master": glide(start["master"], end["master"], x),
            }
            for cmd in self.registry.restore(frame):
                self.post(cmd)
            if x >= 1.0:
                return
            stop.wait(0.02)

    # -- tracks and separation -------------------------------------------------------------
    def _open_track(self, source: str) -> None:
        """Play ``source`` now (its channels if cached, else the original while separating)."""
        sr = self.engine.sr
        y, sr, name = read_source(source, sr)
        self._stop_worker()
        self.track_name = name
        opts = self.opts
        cached = (
            cached_separation(y, sr, params=opts.params, mode=opts.mode, cache=self.cache)
            if self.cache is not None
            else None
        )
        if cached is not None:
            self._publish(cached.channels)
            log.info("%s: %d channels from the cache", name, len(cached.names))
            return
        self.post(SetTrack(Track(y[np.newaxis], sr, ("mix",), is_mix=True)))
        self.progress = ("starting", 0.0)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        cache_root = str(self.cache.root) if self.cache is not None else None
        self._worker = ctx.Process(
            target=_worker,
            name="stemdeck-separate",
            daemon=True,
            args=(source, sr, opts.params, opts.mode, cache_root, child),
        )
        self._worker.start()
        try:  # niced from its first instruction, imports included
            os.setpriority(os.PRIO_PROCESS, self._worker.pid, 10)
        except (OSError, AttributeError):
            pass
        child.close()
        self._watcher = threading.Thread(
            target=self._watch, args=(parent, y, sr), name="stemdeck-watch", daemon=True
        )
        self._watcher.start()
        log.info("%s: playing the original while separating (%s mode)", name, opts.mode)

    def _publish(self, channels: np.ndarray) -> None:
        track = Track(channels, self.engine.sr, tuple(self.names))
        _will_need(channels, 0, 10 * self.engine.sr)  # the first seconds, before they play
        self.post(SetTrack(track, same_audio=True))
        for cmd in self.registry.all_commands():
            self.post(cmd)
        self.progress = None

    def _watch(self, conn: Any, y: np.ndarray, sr: int) -> None:
        worker = self._worker
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                if worker is self._worker and self.progress is not None:
                    log.warning("separation stopped before it finished; playing the original")
                    self.progress = None
                return
            if worker is not self._worker:
                return  # superseded by another track
            kind = msg[0]
            if kind == "progress":
                self.progress = (msg[1], float(msg[2]))
            elif kind == "done":
                assert self.cache is not None
                result = cached_separation(
                    y, sr, params=self.opts.params, mode=self.opts.mode, cache=self.cache
                )
                if result is None:
                    log.warning("separated channels vanished from the cache; playing the original")
                    self.progress = None
                    return
                self._publish(result.channels)
                log.info("%s: channels ready", self.track_name)
                return
            elif kind == "data":
                self._publish(msg[1])
                log.info("%s: channels ready (not cached)", self.track_name)
                return
            elif kind == "error":
                log.warning("%s; playing the original", msg[1])
                self.progress = None
                return

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker.is_alive():
            worker.terminate()
            worker.join(timeout=2)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        # The audio callback needs the GIL within a fraction of a block: other
        # threads must hand it over far sooner than CPython's default 5 ms.
        sys.setswitchinterval(0.0005)
        opts = self.opts
        if opts.block < 16 or opts.block > 8192:
            raise ParameterError(f"--block must be 16..8192 frames, got {opts.block}")
        index, rate, reason = (
            (None, None, "--no-audio") if opts.no_audio else output_device(opts.audio_device)
        )
        if index is None:
            rate = 48000
            log.info("no audio output (%s): a real-time null clock drives the engine", reason)
        assert rate is not None
        self.engine.prepare(rate, opts.block, outputs=opts.outputs)
        channels = self.engine.out_channels
        if opts.record:
            self.recorder = Recorder(opts.record, rate, 2, max_block=opts.block * 4)
        for cmd in self.registry.all_commands():
            self.post(cmd)
        self._open_track(opts.track)
        self.post(Play())
        # MIDI before the audio stream: opening a JACK MIDI client while our JACK
        # audio client runs would stall the graph on this process's GIL.
        if opts.midi_port or opts.midi_virtual:
            from .midi import MidiControl, resolve_map

            self.midi = MidiControl(
                self,
                resolve_map(opts.midi_map),
                port=opts.midi_port,
                virtual=opts.midi_virtual,
                api=opts.midi_api,
            )
            self.midi.start()
            if opts.midi_learn:
                self.midi.learn(opts.midi_learn)
        if index is None:
            self.sink = NullSink(self.engine, rate, opts.block, channels, self.recorder)
        else:
            self.sink = SoundDeviceSink(
                self.engine, rate, opts.block, channels, self.recorder, device=index
            )
        self.sink.start()
        self.first_sound = time.monotonic()
        log.info("audio: %s", self.sink.description)
        control = OscControl(self)
        self.server = OscServer(
            control, host=opts.osc_host, port=opts.osc_port, allow=opts.osc_allow
        )
        self.server.start()
        if opts.osc_host not in ("127.0.0.1", "::1", "localhost") and not opts.osc_allow:
            log.warning(
                "OSC listens on %s with no --osc-allow: anyone on the network can control it",
                opts.osc_host,
            )
        self.feedback = Feedback(self.server, extra=lambda: [("/status", [self.status()])])
        self.feedback.start()
        log.info("OSC on %s:%d", *self.server.address)

    def run(self) -> int:
        """Block until SIGINT/SIGTERM; then shut down cleanly. Returns the exit status."""

        def on_signal(signum: int, frame: Any) -> None:
            self.stop_event.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        tty = sys.stderr.isatty()
        last_line = 0.0
        last_blocks, stalled_since = -1, time.monotonic()
        while not self.stop_event.wait(0.25):
            blocks = self.engine.blocks
            if blocks != last_blocks:
                last_blocks, stalled_since = blocks, time.monotonic()
            elif time.monotonic() - stalled_since > 1.0:
                self._restart_audio()
                stalled_since = time.monotonic()
            self._prefetch()
            if tty and time.monotonic() - last_line > 0.25:
                last_line = time.monotonic()
                sys.stderr.write("\r" + self.status_line()[:160].ljust(100))
                sys.stderr.flush()
        if tty:
            sys.stderr.write("\n")
        self.shutdown()
        return 0

    def _prefetch(self, seconds: float = 8.0) -> None:
        """Ask the kernel to read the memory-mapped audio ahead of the play head, so
        the audio callback never waits for the disk (no I/O there, page faults
        included). MADV_WILLNEED starts the reads and returns at once."""
        track = self.engine.track
        if track is None:
            return
        starts = [self.engine.position]
        if self.engine.loop is not None:
            starts.append(self.engine.loop[0])
        for start in starts:
            _will_need(track.channels, start, start + int(seconds * self.engine.sr))

    def _restart_audio(self) -> None:
        """The stream stopped calling us (the audio server dropped the client, or the
        device went away): reopen it. Until it is back, a null clock keeps time."""
        log.warning("audio stream stalled; reopening it")
        old = self.sink
        if old is not None:
            old.stop()
        xruns = old.xruns if old is not None else 0
        opts = self.opts
        try:
            index, _, reason = output_device(opts.audio_device)
            if index is None:
                raise ParameterError(reason)
            sink: Sink = SoundDeviceSink(
                self.engine,
                self.engine.sr,
                opts.block,
                self.engine.out_channels,
                self.recorder,
                device=index,
            )
        except StemdeckError as exc:
            log.warning("audio output unavailable (%s): null clock until it returns", exc)
            sink = NullSink(
                self.engine, self.engine.sr, opts.block, self.engine.out_channels, self.recorder
            )
        sink.xruns = xruns + 1
        sink.start()
        self.sink = sink
        log.info("audio: %s", sink.description)

    def status_line(self) -> str:
        m = self.engine
        pos = m.position / m.sr if m.sr else 0.0
        length = m.track.length / m.sr if m.track is not None else 0.0
        mins = f"{int(pos // 60)}:{pos % 60:04.1f}/{int(length // 60)}:{length % 60:04.1f}"
        levels = " ".join(
            f"{n[:6]} {self.registry.get(f'/ch/{i}/db'):+.0f}"
            if not math.isinf(float(self.registry.get(f"/ch/{i}/db")))
            else f"{n[:6]} off"
            for i, n in enumerate(self.names[:8], 1)
        )
        sep = "" if self.progress is None else f" | separating {self.progress[1] * 100:3.0f}%"
        clients = len(self.server.control.subscribers) if self.server else 0
        xruns = self.sink.xruns if self.sink else 0
        state = ">" if m.playing else "||"
        return (
            f"{state} {mins} | {levels}{sep} | xruns {xruns} | drops {m.dropped} | "
            f"osc clients {clients}"
        )

    def midi_learn(self, address: str) -> None:
        """OSC /midi/learn: bind the next moved control to ``address``."""
        if self.midi is None:
            raise ParameterError("no MIDI input: start with --midi PORT or --midi-virtual NAME")
        self.midi.learn(address)

    def shutdown(self) -> None:
        self._morph_stop.set()
        if self.feedback:
            self.feedback.stop()
        if self.server:
            self.server.stop()
        if self.sink:
            self.sink.stop()
        if self.midi is not None:
            # After the audio stream: closing a JACK MIDI client while our JACK audio
            # client runs would deadlock on the GIL (see start()).
            self.midi.stop()
        if self.recorder:
            self.recorder.close()
            log.info("recorded %s", self.recorder.path)
        self._stop_worker()
        log.info("stopped")
