"""``stemdeck serve``: the live daemon, wired from components with one job each.

- :class:`~stemdeck.core.mixer.engine.Mixer`: the audio callback's only call;
- :class:`~stemdeck.core.control.registry.Registry`: every control value; OSC, MIDI,
  scenes and the loader change it only through its transactions, which post to the engine;
- :class:`.transport.TransportControl`: the transport verbs OSC and MIDI share;
- :class:`.scenes.SceneStore`: scene files and morphs;
- :class:`.loader.TrackLoader`: tracks, the separation worker, the cache;
- :class:`.track_beats.TrackBeats`: the playing track's beat grid (found or analysed on
  load, edited over OSC, kept in the beat store);
- :class:`.echo_beats.EchoBeats`: the echo's delay in beats kept on the grid and the
  rate (it hears the grid's changes and posts the MIDI clock follower's rates);
- :class:`.supervisor.AudioSupervisor`: the audio stream (PortAudio, stemdeck's own
  JACK client, or a null clock) and its recovery;
- :class:`.sync.SyncControl` and :class:`.timebase.BbtFollower`: who leads the play
  head (``--sync``, ``/sync/source``), followed in the JACK process callback (bars,
  beats and tempo when a timebase master gives them); :class:`.timebase.TimebaseMaster`
  gives them (``--jack-timebase``);
  :class:`.clock_in.MidiClockIn` follows a MIDI clock (``--sync-midi``) and
  :class:`.clock_out.MidiClockOut` sends one (``--clock-out midi PORT``);
  :class:`.link.LinkFollower` follows an Ableton Link session in the audio callback
  (``--sync link``; :class:`.link.LinkSession` opened the first time it is asked for);
- :class:`.prefetch.Prefetcher`: memory-mapped audio read ahead of the play head;
- :func:`.status.format_status`: the status line (console and OSC ``/status``);
- :class:`.osc.OscServer` and :class:`.midi.MidiControl`: the control surfaces, through
  the :class:`.host.Host` seam this class implements;
- :class:`.web.server.WebServer`: the browser mixer, OSCQuery and the WebSocket.

``docs/architecture.md`` draws the data flow and the threads.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stemdeck.core.audiofile.manifest import channel_colours
from stemdeck.core.beats.store import BeatStore
from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Command, Play
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.keylock import KEYLOCK_QUALITY, MAX_SHIFTED_STRIPS, full_block
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.keys import SeparationSpec

from .audio.jack import JackOutput, JackSink, open_client, playback_latency_s
from .audio.recorder import Recorder
from .audio.sinks import output_device
from .beats_worker import analyze_apart
from .echo_beats import EchoBeats
from .forkserver import warm_up
from .link import DEFAULT_BPM, LinkFollower, LinkSession
from .loader import TrackLoader
from .pathnames import library_files
from .prefetch import Prefetcher
from .quantize import Quantizer
from .realtime import (
    CONTROL_NICE,
    SWITCH_INTERVAL_S,
    GcWatch,
    lock_memory,
    one_blas_thread,
    raise_open_files,
    settle_heap,
)
from .scenes import SceneStore, scene_missing
from .status import Status, format_status
from .supervisor import AudioSupervisor
from .sync import LEADS_THE_RATE, SyncControl
from .timebase import BbtFollower, TimebaseMaster, leader_grid
from .track_beats import TrackBeats
from .track_limits import MAX_MINUTES, TrackLimits
from .track_source import DEMO, LoadDone, read_source
from .transport import TransportControl

if TYPE_CHECKING:  # imported where they start (the OSC server once the audio runs; mido,
    # aiohttp, zeroconf only when used)
    from .clock_in import MidiClockIn
    from .clock_out import MidiClockOut
    from .midi import MidiControl
    from .osc import Feedback, OscServer
    from .web.advertise import Advertiser
    from .web.server import WebServer

__all__ = ["DEMO", "Daemon", "ServeOptions", "read_source"]

log = logging.getLogger(__name__)

LIBRARY_LIST_MAX = 200


@dataclass
class ServeOptions:
    track: str = DEMO
    spec: SeparationSpec = field(default_factory=SeparationSpec)
    max_minutes: float = MAX_MINUTES  # the longest track (daemon/track_limits.py)
    osc_host: str = "127.0.0.1"
    osc_port: int = 9000
    osc_allow: list[str] = field(default_factory=list)
    # fixed surfaces: (host, port, form of the addresses or None for the default)
    feedback: list[tuple[str, int, str | None]] = field(default_factory=list)
    audio: str = "portaudio"  # or "jack": stemdeck's own JACK client (daemon/audio/jack.py)
    audio_device: str | None = None
    no_audio: bool = False
    connect: bool | None = None  # JACK ports to playback; None: for mix only
    sync: str = "off"  # who leads the play head (daemon/sync.py)
    sync_midi: str | None = None  # the MIDI clock input (daemon/clock_in.py)
    jack_timebase: str | None = None  # "always" or "conditional": the master (daemon/timebase.py)
    clock_out: str | None = None  # the MIDI clock output (daemon/clock_out.py)
    record: str | None = None
    block: int = 256
    outputs: str = "mix"
    library: list[str] = field(default_factory=list)
    use_cache: bool = True
    at_end: str = "loop"
    keylock_quality: str = "live"  # the keylock's frames (core/mixer/keylock.py)
    midi_port: str | None = None
    midi_virtual: str | None = None
    midi_map: str = "generic"
    midi_api: str | None = None
    midi_learn: str | None = None
    realtime: bool = True
    http_port: int | None = 8080  # None: no web server (--http off)
    http_host: str = "127.0.0.1"
    advertise: bool = False


class Daemon:
    """The components of one ``serve`` process, and the Host that OSC and MIDI drive."""

    def __init__(self, opts: ServeOptions) -> None:
        if opts.keylock_quality not in KEYLOCK_QUALITY:
            raise ParameterError(
                f"--keylock-quality takes {' or '.join(KEYLOCK_QUALITY)}, "
                f"got {opts.keylock_quality!r}"
            )
        self.opts = opts
        self.stop_event = threading.Event()
        self.cache = SeparationCache(verify_on_load=False) if opts.use_cache else None
        if self.cache is not None:
            self.cache.clean_stale()
        self.recorder: Recorder | None = None
        self.audio: AudioSupervisor | None = None
        self.server: OscServer | None = None
        self.feedback: Feedback | None = None
        self.midi: MidiControl | None = None
        self.web: WebServer | None = None
        self.advertiser: Advertiser | None = None
        self.memory = ""
        self.gc = GcWatch()
        self.names = opts.spec.channel_names()
        self.registry = Registry(self.names)
        # One strip per channel the separation gives, no more.
        self.engine = Mixer(
            max_channels=len(self.names),
            at_end=opts.at_end,
            keylock_frame_s=KEYLOCK_QUALITY[opts.keylock_quality],
        )
        self.transport = TransportControl(
            self.engine,
            grid=lambda: self.beats.require().grid,
            quantize=lambda: self.quantize.mode,
            lead=lambda playing, source: self._lead_transport(playing, source),
            lead_rate=lambda address, rate, grid_bpm, source: self._lead_rate(
                address, rate, grid_bpm, source
            ),
        )
        self.sync = SyncControl(
            jack=opts.audio == "jack", midi=opts.sync_midi is not None, open_link=self._open_link
        )
        # Follows a Link session once one is open (the bindings load only then).
        self.link = LinkFollower(self.engine, self.sync, lambda: self.beats.grid())
        self.link_session: LinkSession | None = None
        self._link_lock = threading.Lock()
        self.clock_in: MidiClockIn | None = None
        self.clock_out: MidiClockOut | None = None
        # Quantize on the leader's bars while a leader holds the track (daemon/timebase.py).
        self.quantize = Quantizer(
            self.engine, lambda: leader_grid(self.beats.grid(), self.sync.bars)
        )
        self.scenes = SceneStore(
            self.registry,
            self.engine.post,
            quantized=self.quantize.post,
            until_grid=self.quantize.seconds_to_target,
        )
        library = [Path(p).expanduser().resolve() for p in opts.library]
        if not library and opts.track != DEMO:
            library = [Path(opts.track).expanduser().resolve().parent]
        # The beat grid's hash and analysis wait for the daemon's BLAS limit, taken
        # once the audio runs (start(): not before the first sound).
        self.blas_limited = threading.Event()
        self.beats = TrackBeats(
            BeatStore(self.cache.root) if self.cache is not None else None,
            current=lambda gen: self.loader.current(gen),
            analyze=analyze_apart,  # in a process of its own, not under the daemon's GIL
            ready=self.blas_limited.wait,
        )
        self.echo_beats = EchoBeats(self.registry, self.beats, self.engine.post)
        self.beats.add_listener(self.echo_beats.grid_changed)
        self.loader = TrackLoader(
            self.engine,
            self.registry,
            self.names,
            spec=opts.spec,
            cache=self.cache,
            library=library,
            limits=TrackLimits(opts.max_minutes, opts.spec.mode, chunked=self.cache is not None),
            beats=self.beats,
        )
        self.prefetcher = Prefetcher(self.engine)
        self.started_at = time.monotonic()
        self._unshifted_said = -1  # the track generation _say_unshifted last spoke of
        self.first_sound: float | None = None

    # -- Host protocol (used by OSC and MIDI) ------------------------------------------
    def post(self, command: Command) -> bool:
        return self.engine.post(command)

    @property
    def colours(self) -> list[str]:
        """#RRGGBB per channel: the track's own (a stem file), else the default colours
        (``core/audiofile/manifest.py``)."""
        return channel_colours(self.registry.names, self.loader.colours)

    @property
    def labels(self) -> list[str]:
        """Each channel's display name: the stem file's own names, else the keys."""
        names, labels = self.registry.names, self.loader.labels
        return list(labels) if len(labels) == len(names) else list(names)

    def load_track(self, path: str, done: LoadDone) -> None:
        """OSC /track/load: checked now (library, regular file, audio header, length
        and memory), loaded in the background; ``done`` is told once how it ended
        (the last request wins)."""
        self.loader.request(path, done)

    def save_scene(self, name: str) -> None:
        self.scenes.save(name)

    def recall_scene(self, name: str, fade: float, extra: Sequence[Command] = ()) -> None:
        """Recall a scene (with ``extra`` commands in the same block: a hot cue's
        jump); one the track lacks channels for is recalled for the rest, then raises
        ParameterError naming them (``/error`` to the sender, one log line)."""
        missing = self.scenes.recall(name, fade, extra=extra)
        if missing:
            raise ParameterError(scene_missing(name, missing))

    def midi_learn(self, address: str, args: Sequence[Any] = ()) -> None:
        """OSC /midi/learn: bind the next moved control to ``address`` (with ``args``)."""
        if self.midi is None:
            raise ParameterError("no MIDI input: start with --midi PORT or --midi-virtual NAME")
        self.midi.learn(address, args)

    def status(self) -> str:
        return format_status(self.status_values())

    def track_info(self) -> tuple[str, str, float]:
        """The track's name and where its separation is: (name, stage, fraction)."""
        return self.loader.track_info()

    def library_tracks(self) -> list[str]:
        """Audio files ``/track/load`` may open: every file under the library folders
        with an audio suffix (docs/osc.md), sorted, at most :data:`LIBRARY_LIST_MAX`
        (checked again when loaded). A name that is not UTF-8 is listed escaped
        (:func:`.pathnames.listed`); ``/track/load`` takes that form back."""
        return library_files(self.loader.library, LIBRARY_LIST_MAX)

    def scene_names(self) -> list[str]:
        return self.scenes.names()

    def status_values(self) -> Status:
        m = self.engine
        sink = self.audio.sink if self.audio is not None else None
        track = m.track
        levels = []
        for i, name in enumerate(self.registry.names[:8], 1):
            db = float(self.registry.get(f"/ch/{i}/db"))
            levels.append((name, -math.inf if math.isinf(db) else db))
        rec = self.recorder
        grid = self.beats.grid()
        return Status(
            track=self.loader.track_name,
            playing=m.rolling,
            position=m.seconds(m.position),
            length=m.seconds(track.length) if track is not None else 0.0,
            progress=self.loader.progress,
            loading=self.loader.requested,
            levels=tuple(levels),
            xruns=sink.xruns if sink else 0,
            drops=m.dropped,
            slowest_ms=sink.max_render_s * 1000 if sink else 0.0,
            recent_slowest_ms=sink.recent_max_render_s * 1000 if sink else None,
            engine_errors=sink.errors if sink else 0,
            nonfinite_blocks=m.nonfinite_blocks,
            osc_clients=self.server.control.subscriber_count() if self.server else 0,
            osc=self.server.control.counts() if self.server else None,
            midi=(self.midi.received, self.midi.errors) if self.midi is not None else None,
            web=(self.web.clients, self.web.refused) if self.web is not None else None,
            recorder=(rec.overruns, rec.error) if rec is not None else None,
            scheduling=", ".join(
                part
                for part in (
                    sink.scheduling if sink else "",
                    # The slow path says so; the compiled kernel is the normal case.
                    "mixer in numpy (no compiled kernel)" if self.engine.kernel == "numpy" else "",
                    self.memory,
                    f"control {self.server.scheduling}" if self.server else "",
                )
                if part
            ),
            problem=self.loader.problem,
            separated=self.loader.separated,
            gc=(self.gc.full, self.gc.longest_s * 1000),
            bpm=grid.bpm if grid is not None else None,
            sync=self.sync.describe(),
            clock_out=(
                (self.clock_out.schedule.ticks, self.clock_out.late)
                if self.clock_out is not None
                else None
            ),
        )

    # -- lifecycle -------------------------------------------------------------------------
    def _output_latency(self) -> float:
        """How long after its block the play head's audio is heard (s): the output's
        latency beyond the block, as its sink reports it now, and the keylock's
        shifter's delay (the MIDI clocks' heard play head; the sink opens after them)."""
        engine = self.engine
        delay = engine.output_delay / engine.sr if engine.sr > 0 else 0.0
        if self.opts.audio == "jack" and self.opts.midi_api == "jack":
            # The clocks' JACK MIDI ports and the audio ports are in one JACK graph:
            # a tick at a port's frame meets the audio of that frame at every client,
            # and both go on to the outputs with the same latency.
            return delay
        audio = self.audio
        return delay + (audio.output_latency_s if audio is not None else 0.0)

    def _lead_transport(self, playing: bool, source: str | None) -> Callable[[], None] | None:
        """A surface's start or stop while Link leads (``source``, a bundle's; None:
        the one in force) goes to the session (the peers with start/stop sync start or
        stop too; the follower plays or pauses)."""
        session = self.link_session
        if (self.sync.source if source is None else source) != "link" or session is None:
            return None
        grid = self.beats.grid()
        return partial(session.request_playing, playing, float(grid.beats_per_bar) if grid else 4.0)

    def _lead_rate(
        self, address: str, rate: float, grid_bpm: float | None, source: str | None
    ) -> Callable[[], None] | None:
        """A rate a surface sets while a leader leads (``source``, the leader as the
        surface's bundle leaves it; None: the one in force): under Link the session's
        tempo (the tempo of ``grid_bpm``, the grid as the bundle leaves it, times the
        rate: every peer follows, and so does the track); a JACK transport or a MIDI
        clock holds it (docs/sync.md)."""
        source = self.sync.source if source is None else source
        if source in LEADS_THE_RATE:
            raise ParameterError(
                f"{address}: the tempo follows {LEADS_THE_RATE[source]}; set it there, "
                "or /sync/source off first"
            )
        session = self.link_session
        if source != "link" or session is None or grid_bpm is None:
            return None  # Link without a grid does not lock the track: the rate is ours
        return partial(session.request_tempo, grid_bpm * rate)

    def _open_link(self) -> None:
        """Open the Link session (``--sync link``, ``/sync/source link``) the first
        time it is asked for; ParameterError without the extra (daemon/link.py)."""
        with self._link_lock:
            if self.link_session is not None:
                return
            grid = self.beats.grid()
            self.link_session = LinkSession(
                self.sync,
                self.link,
                bpm=grid.bpm if grid is not None else DEFAULT_BPM,
                latency=self._link_latency,
                jack_clock=self._jack_clock,
            )
            log.info("Ableton Link: session joined (start/stop sync on)")

    def _link_latency(self) -> float:
        """The output's latency beyond the block (s): under JACK, the playback latency
        of stemdeck's ports; else the stream's (0 for the null clock)."""
        sink = self.audio.sink if self.audio is not None else None
        if isinstance(sink, JackSink):
            return playback_latency_s(sink)
        return sink.output_latency_s if sink is not None else 0.0

    def _jack_clock(self) -> Callable[[], float] | None:
        """The clock of the blocks' times under JACK (``JackSink.clock_us``), else None
        (the null clock's and PortAudio's are ``CLOCK_MONOTONIC``)."""
        sink = self.audio.sink if self.audio is not None else None
        return sink.clock_us if isinstance(sink, JackSink) else None

    def _open_clocks(self, block_s: float) -> None:
        """Open ``--sync-midi`` and ``--clock-out`` (before the audio stream, as MIDI)."""
        opts = self.opts
        if opts.sync_midi is not None:
            from .clock_in import MidiClockIn  # rtmidi: only a daemon with MIDI clock

            self.clock_in = MidiClockIn(
                self.engine,
                self.beats,
                self.sync,
                opts.sync_midi,
                api=opts.midi_api,
                block_s=block_s,
                latency=self._output_latency,
                post=self.echo_beats.post,
            )
            self.clock_in.start()
            log.info("MIDI clock in: %s", self.clock_in.name)
        if opts.clock_out is not None:
            from .clock_out import JackClockPort, MidiClockOut, RtMidiClockPort

            sender: JackClockPort | RtMidiClockPort
            if opts.midi_api == "jack":
                sender = JackClockPort(opts.clock_out)
            else:
                sender = RtMidiClockPort(opts.clock_out, api=opts.midi_api)
            self.clock_out = MidiClockOut(
                self.engine, self.beats, sender, block_s=block_s, latency=self._output_latency
            )
            self.clock_out.start()
            log.info("MIDI clock out: %s", sender.name)

    def start(self) -> None:
        # The audio callback needs the GIL within a fraction of a block: other
        # threads must hand it over far sooner than CPython's default 5 ms.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        # Web connections, tracks, scenes, the cache and the recording share one table
        # of descriptors: the most the system allows (the web keeps some free for the
        # rest, daemon/web/gate.py).
        log.debug("%s", raise_open_files())
        opts = self.opts
        if opts.block < 16 or opts.block > 8192:
            raise ParameterError(f"--block must be 16..8192 frames, got {opts.block}")
        if opts.audio not in ("portaudio", "jack"):
            raise ParameterError(f"--audio must be portaudio or jack, got {opts.audio!r}")
        if opts.audio == "jack" and (opts.no_audio or opts.audio_device):
            raise ParameterError(
                "--audio jack plays through stemdeck's own JACK client: "
                "drop --audio-device and --no-audio"
            )
        if opts.jack_timebase not in (None, "always", "conditional"):
            raise ParameterError(
                f"--jack-timebase must be always or conditional, got {opts.jack_timebase!r}"
            )
        if opts.jack_timebase and opts.audio != "jack":
            raise ParameterError("--jack-timebase needs stemdeck's JACK client: serve --audio jack")
        if opts.sync != "off":
            self.sync.set_source(opts.sync)  # --sync midi, or jack without JACK: said now
        jack_client = None
        block = opts.block
        index: int | None
        rate: int | None
        if opts.audio == "jack":
            # Opened (not activated) now: the engine takes the server's rate and block.
            jack_client = open_client()
            index, rate, block = None, int(jack_client.samplerate), int(jack_client.blocksize)
        else:
            index, rate, reason = (
                (None, None, "--no-audio") if opts.no_audio else output_device(opts.audio_device)
            )
            if index is None:
                rate = 48000
                log.info("no audio output (%s): a real-time null clock drives the engine", reason)
        assert rate is not None
        self.engine.prepare(rate, block, outputs=opts.outputs)
        if opts.realtime:
            self.engine.fault_in()  # in memory, so the lock keeps them (realtime.py)
            self.memory = lock_memory()  # the engine's buffers, before any track is mapped
        if opts.record:
            self.recorder = Recorder(opts.record, rate, 2, max_block=block * 4)
        # The separation's fork server imports beside the decode (forkserver.py).
        warm_up(self.loader.mp_context)
        # The first worker waits for the audio to run: beside the daemon's start it
        # took the first sound 0.2 s later in one start of two (bench/live.py).
        self.loader.sounding.clear()
        try:
            self.loader.open(opts.track)  # the track, with the registry's whole state
        except MemoryError:
            raise ParameterError(f"{opts.track!r}: not enough memory to load it") from None
        self.post(Play())
        # MIDI before the audio stream: opening a JACK MIDI client while our JACK
        # audio client runs would stall the graph on this process's GIL.
        if opts.midi_port or opts.midi_virtual:
            from .midi import MidiControl, resolve_map  # mido: only a daemon with MIDI

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
        # The MIDI clock's ports too (JACK clients of their own under --midi-api jack).
        self._open_clocks(block / rate)
        # Everything alive now lives until exit: out of the collector's sight, so no
        # later pass holds the GIL (and the callback) for tens of ms (daemon/realtime.py).
        frozen = settle_heap()
        self.gc.start()
        log.debug("heap: %d objects at start frozen out of the collector's passes", frozen)
        jack = None
        if jack_client is not None:
            jack = JackOutput(
                jack_client,
                names=lambda: self.registry.names,
                outputs=opts.outputs,
                connect=opts.outputs == "mix" if opts.connect is None else opts.connect,
                follower=BbtFollower(self.engine, self.sync, self.beats.grid),
                timebase=(
                    TimebaseMaster(self.engine, self.sync, self.beats.grid)
                    if opts.jack_timebase
                    else None
                ),
                conditional=opts.jack_timebase == "conditional",
            )
        self.audio = AudioSupervisor(
            self.engine,
            device=index,
            device_name=opts.audio_device,
            block=block,
            recorder=self.recorder,
            realtime=opts.realtime,
            jack=jack,
            on_jack_lost=self.sync.jack_lost,
            link=self.link,
        )
        try:
            sink = self.audio.start()
        finally:
            self.loader.sounding.set()
        self.first_sound = time.monotonic()
        log.info("audio: %s", sink.description)
        try:
            one_blas_thread()
        finally:
            self.blas_limited.set()
        # Imported once the audio runs: 25 ms of the way to the first sound before.
        from .osc import Feedback, OscControl, OscServer

        # Feedback by channel name for stems, by index for components (docs/osc.md).
        control = OscControl(self, feedback_form="names" if opts.spec.mode == "stems" else "index")
        self.server = OscServer(
            control,
            host=opts.osc_host,
            port=opts.osc_port,
            allow=opts.osc_allow,
            nice=CONTROL_NICE if opts.realtime else None,
        )
        for host, port, form in opts.feedback:
            target = self.server.resolve(host, port, what="--feedback")
            control.add_feedback_target(target, form)
            if (
                ip_address(target[0]).is_loopback
                or not ip_address(self.server.address[0]).is_loopback
            ):
                continue
            log.warning(
                "--feedback %s:%d: OSC listens on %s (this machine only), so no feedback "
                "reaches it; listen with --osc-host 0.0.0.0 (and --osc-allow)",
                host,
                port,
                self.server.address[0],
            )
        self.server.start()
        if opts.osc_host not in ("127.0.0.1", "::1", "localhost") and not opts.osc_allow:
            log.warning(
                "OSC listens on %s with no --osc-allow: anyone on the network can control it",
                opts.osc_host,
            )
        self.feedback = Feedback(self.server, extra=lambda: [("/status", [self.status()])])
        self.feedback.start()
        if opts.http_port is not None:
            self.start_web()
        # Said once everything listens: tests and scripts take this line (and the mixer's)
        # as the daemon being up, and SIGTERM is handled from run() on.
        log.info("OSC on %s:%d", *self.server.address)
        for host, port, form in opts.feedback:
            log.info(
                "OSC feedback to %s:%d%s until the daemon stops (--feedback)",
                host,
                port,
                f" ({form} addresses)" if form else "",
            )
        if self.web is not None:
            if self.web.token:
                log.info("mixer on %s (open it from a phone on this network)", self.web.url)
            else:
                log.info("mixer on %s", self.web.url)
        if opts.advertise and self.web is not None:
            from .web.advertise import Advertiser  # zeroconf: only with --advertise

            self.advertiser = Advertiser(
                http_port=self.web.address[1],
                osc_port=self.server.address[1],
                host=opts.http_host,
                osc_host=opts.osc_host,
            )
            self.advertiser.start()
        # The web server's imports (aiohttp) and what OSC, MIDI and the web made since
        # the first settle_heap() live as long as the daemon too: out of sight as well.
        settle_heap()

    def start_web(self) -> None:
        """The browser mixer, OSCQuery and the WebSocket, in their own thread."""
        from .web.server import WebServer  # aiohttp (~0.2 s): --http off never loads it

        opts = self.opts
        assert self.server is not None and self.feedback is not None
        assert opts.http_port is not None
        self.web = WebServer(self.server, self.feedback, host=opts.http_host, port=opts.http_port)
        self.web.start()

    def run(self) -> int:
        """Block until SIGINT/SIGTERM; then shut down cleanly. Returns the exit status."""

        def on_signal(signum: int, frame: Any) -> None:
            self.stop_event.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        tty = sys.stderr.isatty()
        last_line = 0.0
        reported = False
        while not self.stop_event.wait(0.25):
            if self.audio is not None:
                self.audio.check()
                sink = self.audio.sink
                if not reported and sink is not None and sink.scheduling != "not started":
                    reported = True
                    log.debug(
                        "audio thread: %s; %s; mixer kernel %s",
                        sink.scheduling,
                        self.memory or "memory not locked (off)",
                        self.engine.kernel,
                    )
            self.prefetcher.tick()
            self._say_unshifted()
            if self.sync.source in ("jack", "link"):  # the rate is set in the audio thread
                self.echo_beats.leader_tempo(self.sync.tempo())
            if tty and time.monotonic() - last_line > 0.25:
                last_line = time.monotonic()
                sys.stderr.write("\r" + self.status()[:160].ljust(100))
                sys.stderr.flush()
        if tty:
            sys.stderr.write("\n")
        self.shutdown()
        return 0

    def _say_unshifted(self) -> None:
        """Keylock or a pitch under ``--outputs channels`` with a track of more channels
        than the block gives shifters (core/mixer/keylock.py's ``shifted_channels``;
        the transport refuses keylock for one, but not for a track loaded after it):
        the channels past the last play unshifted, which is said once a track."""
        engine = self.engine
        extra = engine.unshifted
        gen = self.loader.generation
        if extra <= 0 or self._unshifted_said == gen:
            return
        self._unshifted_said = gen
        shifted = len(engine.strip_shifters)
        log.warning(
            "keylock with --outputs channels: %d channels have a pitch shifter at "
            "%d-frame blocks; channels %d to %d play unshifted (a larger --block "
            "gives more, %d from %d)",
            shifted,
            engine.max_block,
            shifted + 1,
            shifted + extra,
            MAX_SHIFTED_STRIPS,
            full_block(engine.keylock_frame),
        )

    def shutdown(self) -> None:
        self.scenes.stop()
        if self.advertiser is not None:
            self.advertiser.stop()
        if self.web is not None:
            self.web.stop()
        if self.feedback:
            self.feedback.stop()
        if self.server:
            self.server.stop()
        if self.link_session is not None:
            self.link_session.stop()  # its thread reads the JACK ports' latency
        if self.audio:
            self.audio.stop()
        if self.midi is not None:
            # After the audio stream: closing a JACK MIDI client while our JACK audio
            # client runs would deadlock on the GIL (see start()).
            self.midi.stop()
        if self.clock_in is not None:
            self.clock_in.stop()
        if self.link_session is not None:
            self.link_session.close()
        if self.clock_out is not None:
            self.clock_out.stop()
        if self.recorder:
            self.recorder.close()
            if self.recorder.error:
                log.warning("recorded %s until: %s", self.recorder.path, self.recorder.error)
            else:
                log.info("recorded %s", self.recorder.path)
        self.loader.close()
        self.gc.stop()
        log.info("stopped")
