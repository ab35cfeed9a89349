"""The track loader's separation: one decode and one hash per load, the worker
separating exactly the audio that plays, and its shared memory released on every path.

An in-process :class:`TrackLoader` on an engine that records what it is posted,
with a real worker process (``e2e``).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing as mp
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import poll
from mp4_helpers import damaged_stem_file

from conftest import SR, tone_mix
from stemdeck.core.audiofile.decode import read_stem_file
from stemdeck.core.audiofile.files import MappedDecode
from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import AudioFileError, ParameterError
from stemdeck.core.mixer.commands import Batch, Command, SetTrack
from stemdeck.core.separation import keys as keys_module
from stemdeck.core.separation.cache import SeparationCache, file_identity
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.presets import SeparationParams
from stemdeck.daemon import separation_run
from stemdeck.daemon import separation_worker as worker_module
from stemdeck.daemon import track_source as source_module
from stemdeck.daemon.loader import TrackLoader
from stemdeck.daemon.separation_worker import SHARED_PREFIX, SeparationWorker
from stemdeck.daemon.track_limits import TrackLimits, mem_available

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a separation worker process each

PARAMS = SeparationParams(
    n_fft=512, hop=128, n_components=4, n_iter=30, fit_frames=0, refine_iter=0, tol=0.0
)
SPEC = SeparationSpec("components", PARAMS)
NAMES = tuple(SPEC.channel_names())


@dataclass
class RecordingEngine:
    """What the loader uses of the mixer: its rate, its strips, its play head (in the
    frames of the track it plays: ``frame_rate``) and ``post``."""

    sr: int = SR
    max_channels: int = len(NAMES)
    position: int = 0
    posted: list[Command] = field(default_factory=list)

    def post(self, command: Command) -> bool:
        self.posted.append(command)
        return True

    @property
    def frame_rate(self) -> int:
        """The rate of the last track posted (the mixer's :attr:`frame_rate`)."""
        tracks = self.tracks()
        return tracks[-1].track.sr if tracks else self.sr

    def tracks(self) -> list[SetTrack]:
        """Every ``SetTrack`` posted, in order."""
        out = []
        for command in self.posted:
            inner = command.commands if isinstance(command, Batch) else (command,)
            out += [c for c in inner if isinstance(c, SetTrack)]
        return out


def _library(tmp_path: Path, y: np.ndarray) -> Path:
    library = tmp_path / "library"
    library.mkdir()
    sf.write(library / "song.wav", y.T, SR, subtype="FLOAT")
    return library / "song.wav"


def _settled(loader: TrackLoader) -> None:
    poll(
        lambda: (loader.separated, loader.problem),
        lambda state: state[0] or state[1] is not None,
        "the channels, or a problem",
        timeout=120,
    )


@dataclass
class WorkerStart:
    """One :meth:`SeparationWorker.start`: its keyword arguments, when it was called,
    and the worker it started (None: it did not)."""

    kwargs: dict[str, Any]
    at: float
    worker: SeparationWorker | None


def _worker_starts(
    monkeypatch: pytest.MonkeyPatch, on_start: Callable[[dict[str, Any]], None] = lambda kw: None
) -> list[WorkerStart]:
    """Record every worker's start, in order (``on_start`` sees its keyword arguments
    before it starts)."""
    starts: list[WorkerStart] = []
    real_start = worker_module.SeparationWorker.start

    def start(*args: Any, **kwargs: Any) -> SeparationWorker | None:
        at = time.monotonic()
        on_start(kwargs)
        worker = real_start(*args, **kwargs)
        starts.append(WorkerStart(kwargs, at, worker))
        return worker

    monkeypatch.setattr(worker_module.SeparationWorker, "start", start)
    return starts


def _loaded(tmp_path: Path, path: Path) -> tuple[RecordingEngine, TrackLoader, SeparationCache]:
    """One load of ``path`` (the test's spec, a cache of its own), settled and closed."""
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine()
    loader = TrackLoader(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    loader.request(str(path))
    _settled(loader)
    loader.close()
    return engine, loader, cache


def _entries(cache: SeparationCache) -> list[str]:
    return sorted(p.name for p in cache.root.iterdir() if not p.name.startswith("."))


def _segments() -> list[str]:
    """This process's shared memory segments (the workers' audio)."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"{SHARED_PREFIX}{os.getpid()}-*"))


@pytest.fixture
def shared_memory_checked() -> Iterator[None]:
    """No segment of this process before the test, and none left after it."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm to look at")
    assert _segments() == []
    yield
    assert _segments() == []


def test_a_file_replaced_after_the_read_is_separated_as_it_plays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shared_memory_checked: None
) -> None:
    """The file changes between the loader's read and the worker's start (a file still
    being written): the channels are those of the audio that plays, filed under its key,
    with no warning and no other entry."""
    y = tone_mix(3.0, seed=1)
    path = _library(tmp_path, y)
    later = 0.5 * tone_mix(3.0, seed=2)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine()

    class Replacing(TrackLoader):
        def _spawn(self, *args: Any, **kwargs: Any) -> SeparationWorker | None:
            sf.write(path, later.T, SR, subtype="FLOAT")  # the file changes under the load
            return super()._spawn(*args, **kwargs)

    loader = Replacing(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    with caplog.at_level(logging.INFO):
        loader.request(str(path))
        _settled(loader)
    loader.close()
    assert loader.problem is None and loader.separated
    original, progressive, separated = engine.tracks()
    np.testing.assert_array_equal(original.track.channels[0], y)
    # The entry played as it filled, over the same original, then alone once complete.
    assert progressive.same_audio and progressive.track.names == NAMES
    assert progressive.track.ready is not None and progressive.track.mix is not None
    np.testing.assert_array_equal(progressive.track.mix[0], y)
    assert progressive.track.ready.tolist() == [1]  # one chunk: 3 s
    assert separated.track.channels is progressive.track.channels
    assert separated.same_audio and separated.track.names == NAMES
    np.testing.assert_allclose(np.asarray(separated.track.channels).sum(axis=0), y, atol=1e-5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
    assert _entries(cache) == [SPEC.key(y, SR)]


def test_a_track_at_another_rate_than_the_engines_is_separated_as_it_plays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    """A track at 22.05 kHz on a 48 kHz engine: its partial entry plays as it fills,
    at the track's own rate (the mixer's read head converts it), over the original
    at that rate; the worker separates from the play head in the track's frames."""
    y = tone_mix(3.0, seed=4)
    path = _library(tmp_path, y)
    starts = _worker_starts(monkeypatch)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine(sr=48000, position=SR)  # one second into the track
    loader = TrackLoader(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    loader.request(str(path))
    _settled(loader)
    loader.close()
    assert loader.problem is None and loader.separated
    original, progressive, separated = engine.tracks()
    assert original.track.sr == SR and original.track.is_mix
    np.testing.assert_array_equal(original.track.channels[0], y)
    assert progressive.same_audio and progressive.track.sr == SR
    assert progressive.track.ready is not None and progressive.track.mix is not None
    np.testing.assert_array_equal(progressive.track.mix[0], y)
    assert progressive.track.ready.tolist() == [1]
    assert separated.track.sr == SR and separated.track.channels is progressive.track.channels
    # The engine's position counts the playing track's frames.
    assert [s.kwargs["position"] for s in starts] == [SR]


def test_one_decode_and_one_hash_per_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    """Counted in the daemon and in the worker (forked here, so it runs the counting
    functions too): the file is decoded once and the audio hashed once."""
    y = tone_mix(3.0, seed=3)
    path = _library(tmp_path, y)
    counts = tmp_path / "counts"
    counts.touch()

    def counted(what: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with counts.open("a") as f:
                f.write(f"{what}\n")
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(source_module, "load", counted("decode", source_module.load))
    monkeypatch.setattr(
        source_module, "decode_mapped", counted("decode", source_module.decode_mapped)
    )
    monkeypatch.setattr(keys_module, "cache_key", counted("hash", keys_module.cache_key))
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine()
    loader = TrackLoader(
        engine,
        Registry(NAMES),
        NAMES,
        spec=SPEC,
        cache=cache,
        library=[path.parent],
        mp_context=mp.get_context("fork"),
    )
    loader.request(str(path))
    _settled(loader)
    loader.close()
    assert loader.problem is None and loader.separated
    assert sorted(counts.read_text().split()) == ["decode", "hash"]


class HeldContext:
    """A fork context whose workers wait for :meth:`go` before they start separating:
    a test sees a worker alive and its audio in shared memory for as long as it needs.

    The gate is a file (an ``mp.Event`` would hang ``set()`` on a waiter that was
    killed, as a superseded worker is)."""

    def __init__(self, gate: Path) -> None:
        self.context = mp.get_context("fork")
        self.gate = gate
        self.processes: list[BaseProcess] = []

    def go(self) -> None:
        self.gate.touch()

    def Pipe(self, duplex: bool = True) -> tuple[Connection, Connection]:
        return self.context.Pipe(duplex)

    def RawValue(self, typecode_or_type: Any, *args: Any) -> Any:
        return self.context.RawValue(typecode_or_type, *args)

    def Process(self, *, target: Callable[..., None], args: tuple, **kwargs: Any) -> BaseProcess:
        process = self.context.Process(target=_held, args=(self.gate, target, *args), **kwargs)
        self.processes.append(process)
        return process


def _held(gate: Path, target: Callable[..., None], *args: Any) -> None:
    while not gate.exists():
        time.sleep(0.01)
    target(*args)


def _held_loader(tmp_path: Path, context: HeldContext) -> tuple[TrackLoader, Path]:
    library = tmp_path / "library"
    library.mkdir()
    for i, name in enumerate(("first.wav", "second.wav")):
        sf.write(library / name, tone_mix(3.0, seed=10 + i).T, SR, subtype="FLOAT")
    loader = TrackLoader(
        RecordingEngine(),
        Registry(NAMES),
        NAMES,
        spec=SPEC,
        cache=SeparationCache(tmp_path / "cache", verify_on_load=False),
        library=[library],
        mp_context=context,
    )
    return loader, library


def test_a_superseded_load_releases_its_shared_memory(
    tmp_path: Path, shared_memory_checked: None
) -> None:
    context = HeldContext(tmp_path / "go")
    loader, library = _held_loader(tmp_path, context)
    loader.request(str(library / "first.wav"))
    (first,) = poll(_segments, lambda names: len(names) == 1, "the first track's audio shared")
    loader.request(str(library / "second.wav"))
    poll(_segments, lambda names: len(names) == 1 and names != [first], "only the second's shared")
    assert not context.processes[0].is_alive()
    context.go()
    _settled(loader)
    assert loader.problem is None and loader.track_name == "second"
    poll(_segments, lambda names: names == [], "the second's audio released once separated")
    loader.close()


def test_a_killed_worker_releases_its_shared_memory(
    tmp_path: Path, shared_memory_checked: None
) -> None:
    context = HeldContext(tmp_path / "go")
    loader, library = _held_loader(tmp_path, context)
    loader.request(str(library / "first.wav"))
    poll(_segments, lambda names: len(names) == 1, "the track's audio shared")
    (worker,) = poll(
        lambda: list(context.processes),
        lambda started: len(started) == 1 and started[0].pid is not None,
        "the worker started",
    )
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    _settled(loader)
    assert loader.problem == "separation stopped before it finished"
    poll(_segments, lambda names: names == [], "the audio released")
    loader.close()


def test_close_releases_the_shared_memory_at_once(
    tmp_path: Path, shared_memory_checked: None
) -> None:
    context = HeldContext(tmp_path / "go")
    loader, library = _held_loader(tmp_path, context)
    loader.request(str(library / "first.wav"))
    poll(_segments, lambda names: len(names) == 1, "the track's audio shared")
    loader.close()  # the daemon's exit
    assert _segments() == []
    # Ended (SIGTERM, then SIGKILL after 2 s): gone for good, if not yet reaped on a
    # machine so busy that the killed child waited over 4 s for a CPU to exit on
    # (seen once in CI beside a compiler and a benchmark).
    (worker,) = context.processes
    worker.join(timeout=30)
    assert not worker.is_alive()


def test_without_room_in_shared_memory_the_audio_goes_with_the_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    shared_memory_checked: None,
) -> None:
    """A full /dev/shm (a container's 64 MB) is no reason not to separate."""

    def full(y: np.ndarray) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(worker_module, "share_audio", full)
    y = tone_mix(3.0, seed=4)
    path = _library(tmp_path, y)
    engine = RecordingEngine()
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    loader = TrackLoader(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    with caplog.at_level(logging.INFO):
        loader.request(str(path))
        _settled(loader)
    loader.close()
    assert loader.problem is None
    _, progressive, separated = engine.tracks()  # the entry as it filled, then whole
    assert progressive.track.ready is not None
    np.testing.assert_allclose(np.asarray(separated.track.channels).sum(axis=0), y, atol=1e-5)
    assert (
        "no room in shared memory (No space left on device): the track goes to the "
        "separation with its start"
    ) in caplog.messages
    assert _entries(cache) == [SPEC.key(y, SR)]


# -- loads are transactions (#21 items 1, 4) ---------------------------------------------


def _playing_and_separating(tmp_path: Path) -> tuple[TrackLoader, HeldContext, Path]:
    """A loader whose track ``first`` plays its original while its worker is held."""
    context = HeldContext(tmp_path / "go")
    loader, library = _held_loader(tmp_path, context)
    loader.request(str(library / "first.wav"))
    poll(_segments, lambda names: len(names) == 1, "the first track's audio shared")
    poll(lambda: context.processes, lambda started: len(started) == 1, "its worker started")
    assert loader.track_name == "first" and loader.generation == 1
    return loader, context, library


def _bad_load(
    case: str, loader: TrackLoader, library: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str | None], str]:
    """Request the bad track of ``case``; what its requester is told, and the reason
    it should be told."""
    told: list[str | None] = []
    bad = library / "bad.wav"
    y = tone_mix(2.0, seed=20)
    if case == "nan":
        y[0, 1000] = np.nan  # the header is fine
        sf.write(bad, y.T, SR, subtype="FLOAT")
        loader.request(str(bad), told.append)
        return told, f"{str(bad)!r}: 1 samples are NaN or infinite; re-export the file"
    if case == "damaged stem file":
        bad = damaged_stem_file(library / "bad.stem.mp4", SR)
        with pytest.raises(AudioFileError) as damaged:
            read_stem_file(bad, sr=SR, master=False)
        loader.request(str(bad), told.append)
        return told, str(damaged.value)
    if case == "replaced":
        sf.write(bad, y.T, SR, subtype="FLOAT")
        resolved = loader.check(str(bad))
        bad.write_bytes(b"not audio any more" * 100)  # between the check and the read
        loader.start(resolved, told.append)
        with pytest.raises(AudioFileError) as unreadable:
            source_module.load(bad)
        return told, str(unreadable.value)
    assert case == "MemoryError"
    sf.write(bad, y.T, SR, subtype="FLOAT")

    def no_memory(path: str, *, sr: int | None = None) -> tuple[np.ndarray, int]:
        raise MemoryError

    def no_memory_mapped(path: str, folder: Path) -> MappedDecode:
        raise MemoryError

    monkeypatch.setattr(source_module, "load", no_memory)
    monkeypatch.setattr(source_module, "decode_mapped", no_memory_mapped)
    loader.request(str(bad), told.append)
    return told, "bad: not enough memory to load it"


@pytest.mark.parametrize("case", ["nan", "damaged stem file", "replaced", "MemoryError"])
def test_a_load_that_fails_late_leaves_the_playing_track_separating(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    shared_memory_checked: None,
) -> None:
    """#21 item 1: the failed load ended the playing track's worker and bumped the
    generation; the requester was told it succeeded. Now the requester is told why,
    once, and the first track plays and separates on untouched."""
    loader, context, library = _playing_and_separating(tmp_path)
    engine = loader.engine
    (worker,) = context.processes
    with caplog.at_level(logging.INFO):
        told, reason = _bad_load(case, loader, library, monkeypatch)
        poll(lambda: list(told), lambda t: t != [], "the requester told")
        assert told == [reason]
        assert loader.problem == reason and loader.requested is None
        assert loader.generation == 1 and worker.is_alive()  # untouched
        assert loader.track_info() == ("first", "load failed", 0.0)
        assert len(engine.tracks()) == 1  # the first's original only
        context.go()  # its separation goes on to the end
        poll(lambda: loader.separated, bool, "the first track's channels", timeout=120)
    assert loader.track_name == "first" and loader.problem == reason
    original, progressive, separated = engine.tracks()
    assert progressive.same_audio and progressive.track.ready is not None
    assert separated.same_audio
    np.testing.assert_allclose(
        np.asarray(separated.track.channels).sum(axis=0),
        original.track.channels[0],
        atol=1e-5,
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"track not loaded: {reason}"]
    loader.close()


def test_two_loads_in_a_row_the_first_requester_is_told_it_was_superseded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    loader, context, library = _playing_and_separating(tmp_path)
    for name, seed in (("slow", 30), ("fast", 31)):
        sf.write(library / f"{name}.wav", tone_mix(2.0, seed=seed).T, SR, subtype="FLOAT")
    reading = threading.Event()
    release = threading.Event()
    real_load = source_module.load

    def held_load(path: str, *, sr: int | None = None) -> tuple[np.ndarray, int]:
        if Path(path).stem == "slow":  # still being read when the next request comes
            reading.set()
            assert release.wait(30)
        return real_load(path, sr=sr)

    real_mapped = source_module.decode_mapped

    def held_mapped(path: str, folder: Path) -> MappedDecode:
        if Path(path).stem == "slow":  # still being read when the next request comes
            reading.set()
            assert release.wait(30)
        return real_mapped(path, folder)

    monkeypatch.setattr(source_module, "load", held_load)
    monkeypatch.setattr(source_module, "decode_mapped", held_mapped)
    first: list[str | None] = []
    second: list[str | None] = []
    loader.request(str(library / "slow.wav"), first.append)
    assert reading.wait(30)
    assert loader.requested == "slow"
    loader.request(str(library / "fast.wav"), second.append)
    assert first == ["superseded by fast"]  # at once, not when its read ends
    poll(lambda: list(second), lambda t: t != [], "the second requester told")
    assert second == [None] and loader.track_name == "fast" and loader.generation == 2
    release.set()  # the first read ends: nothing of it is played, nobody told twice
    context.go()
    _settled(loader)
    assert first == ["superseded by fast"] and second == [None]
    assert loader.track_name == "fast" and loader.problem is None
    # Both originals, then the second's entry as it filled, then whole.
    tracks = loader.engine.tracks()
    assert [t.track.names for t in tracks] == [("mix",), ("mix",), NAMES, NAMES]
    assert tracks[2].track.ready is not None and tracks[3].track.ready is None
    loader.close()


def test_a_track_longer_than_the_limit_is_refused_before_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#21 item 4: a three-minute silent FLAC (a few KiB) against a two-minute limit,
    and a one-minute one against the memory a small machine has."""
    library = tmp_path / "library"
    library.mkdir()
    long = library / "long.flac"
    sf.write(long, np.zeros((180 * SR, 2), np.float32), SR, subtype="PCM_16")
    short = library / "short.flac"
    sf.write(short, np.zeros((60 * SR, 2), np.float32), SR, subtype="PCM_16")
    assert long.stat().st_size < 200_000

    def decoded(path: str, *, sr: int | None = None) -> tuple[np.ndarray, int]:
        raise AssertionError("decoded")

    monkeypatch.setattr(source_module, "load", decoded)
    engine = RecordingEngine()
    limits = TrackLimits(2.0, "components", available=lambda: 200 * 2**20)
    loader = TrackLoader(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=None, library=[library], limits=limits
    )
    with pytest.raises(ParameterError) as too_long:
        loader.request(str(long))
    assert str(too_long.value) == (
        f"refused {str(long)!r}: 3 minutes long; at most 2 (serve --max-minutes)"
    )
    # 60 s of stereo at 48 kHz: 22 MiB decoded, (2 + 32) x that and the original.
    need = limits.needed(60 * SR, 2, SR, SR, outputs=len(NAMES), stems=0)
    assert need == 34 * 60 * SR * 2 * 4 + 60 * SR * 2 * 4
    with pytest.raises(ParameterError) as no_room:
        loader.request(str(short))
    assert str(no_room.value) == (
        f"refused {str(short)!r}: it needs about {need / 2**30:.1f} GiB of memory to "
        "load and separate (1 minute of audio); 0.2 GiB available"
    )
    with pytest.raises(ParameterError) as at_start:
        loader.open(str(long))  # serve's own track too
    assert str(at_start.value) == f"{str(long)!r}: 3 minutes long; at most 2 (serve --max-minutes)"
    assert engine.posted == [] and loader.track_name == ""


def test_a_stem_file_mapped_in_the_cache_counts_its_stems_and_mix_once() -> None:
    """With a cache folder a stem file's stems are mapped at the file's rate (and their
    mix beside them); without, decoded into the heap at the engine's rate, twice."""
    frames, stems = 60 * 44100, 4
    mapped = TrackLimits(chunked=True).needed(frames, 2, 44100, 48000, outputs=4, stems=stems)
    assert mapped == (stems + 1) * frames * 2 * 4
    heap = TrackLimits(chunked=False).needed(frames, 2, 44100, 48000, outputs=4, stems=stems)
    assert heap == int(2 * stems * frames * 48000 / 44100 * 2 * 4)
    # A rate the read head does not take is resampled whatever the folder.
    low = TrackLimits(chunked=True).needed(60 * 4000, 2, 4000, 48000, outputs=4, stems=stems)
    assert low == int(2 * stems * 60 * 48000 * 2 * 4)


def test_mem_available_reads_proc_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemFree:  100 kB\nMemAvailable:  2048 kB\n")
    assert mem_available(meminfo) == 2048 * 1024
    meminfo.write_text("MemTotal:  8000000 kB\n")
    assert mem_available(meminfo) is None
    assert mem_available(tmp_path / "absent") is None


def test_a_worker_out_of_memory_reports_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(separation_run, "separate", no_memory)  # forked: the worker has it
    context = mp.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    y = tone_mix(1.0, seed=40)
    job = worker_module.WorkerJob(y, SR, SPEC, None, None, os.getpid())
    process = context.Process(target=separation_run.run, args=(job, child))
    process.start()
    child.close()
    assert parent.poll(60)
    assert parent.recv() == ("error", "separation failed: not enough memory")
    process.join(10)
    assert process.exitcode == 0


def test_a_release_during_another_returns_once_the_segment_is_gone(
    monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    """The watcher (the worker ended) and close() release at once: the second call
    returned while the first was still unlinking, and close() left the segment."""
    shm = worker_module.share_audio(tone_mix(0.5, seed=41))
    receiving, sending = mp.Pipe(duplex=False)
    worker = worker_module.SeparationWorker(BaseProcess(), receiving, shm)
    unlinking = threading.Event()
    real_unlink = type(shm).unlink

    def slow_unlink(self: Any) -> None:
        unlinking.set()
        time.sleep(0.3)  # a busy machine
        real_unlink(self)

    monkeypatch.setattr(type(shm), "unlink", slow_unlink)
    first = threading.Thread(target=worker.release)
    first.start()
    assert unlinking.wait(10)
    worker.release()  # the second call, while the first unlinks
    assert _segments() == []
    first.join()
    receiving.close()
    sending.close()


def test_an_end_during_the_watchers_finish_returns_once_the_provisional_entry_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker ended (a damaged file) while its watcher, seeing the pipe close,
    finishes it: end() returned while the watcher was still removing the entry under
    the provisional name, and the loader went on as if it were gone (CI saw it left)."""
    from stemdeck.core.separation.partial import LOCK, PARTIAL_PREFIX

    folder = tmp_path / f"{PARTIAL_PREFIX}new-{'0' * 32}"
    folder.mkdir()
    (folder / LOCK).touch()
    (folder / "channels.f32").write_bytes(bytes(64))
    receiving, sending = mp.Pipe(duplex=False)
    gone = SimpleNamespace(join=lambda timeout=None: None, is_alive=lambda: False)
    worker = worker_module.SeparationWorker(cast(BaseProcess, gone), receiving, None)
    worker._provisional = (tmp_path, folder.name.removeprefix(PARTIAL_PREFIX))
    removing = threading.Event()
    real_discard = worker_module.discard_partial

    def slow_discard(root: Path, key: str) -> None:
        removing.set()
        time.sleep(0.3)  # a busy machine
        real_discard(root, key)

    monkeypatch.setattr(worker_module, "discard_partial", slow_discard)
    watcher = threading.Thread(target=worker.finish)
    watcher.start()
    assert removing.wait(10)
    worker.end()  # the loader's, while the watcher removes the entry
    assert not folder.exists()
    watcher.join()
    sending.close()


def test_a_cached_track_plays_its_stems_as_its_blocks_are_verified_head_first(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    shared_memory_checked: None,
) -> None:
    """A cached 48 s track, verified 12 s at a time, the play head at 13 s: the span
    under it plays its stems before any other is read; a damaged block further on
    leaves its span on the original (never played from the entry), the entry is
    removed and separated again, and the new channels play."""
    from stemdeck.core.separation.separate import separate
    from stemdeck.daemon import loader_cache

    monkeypatch.setattr(loader_cache, "VERIFY_CHUNK_S", 12.0)
    y = tone_mix(48.0, seed=6)
    path = _library(tmp_path, y)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    separate(y, SR, spec=SPEC, cache=cache)
    key = SPEC.key(y, SR)
    data = cache.root / key / "channels.f32"
    with data.open("r+b") as f:  # the first channel's left side at 47.8 s: the last span's
        f.seek(int(47.8 * SR) * 4)
        f.write(np.full(64, np.nan, np.float32).tobytes())
    at_post: list[list[int]] = []

    class Snapshot(RecordingEngine):
        def post(self, command: Command) -> bool:
            for c in command.commands if isinstance(command, Batch) else (command,):
                if isinstance(c, SetTrack) and c.track.ready is not None:
                    at_post.append(c.track.ready.tolist())
            return super().post(command)

    engine = Snapshot(position=13 * SR)
    loader = TrackLoader(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    with caplog.at_level(logging.INFO):
        loader.request(str(path))
        _settled(loader)
    loader.close()
    assert loader.problem is None and loader.separated
    original, cached, rebuilt, separated = engine.tracks()
    np.testing.assert_array_equal(original.track.channels[0], y)
    assert at_post[0] == [0, 1, 0, 0]  # the span under the head, and nothing else, checked
    assert cached.same_audio and cached.track.mix is not None and cached.track.ready is not None
    assert cached.track.ready.tolist() == [0, 1, 1, 0]  # the damaged span never plays
    assert rebuilt.track.channels is not cached.track.channels
    assert separated.track.channels is rebuilt.track.channels
    channels = np.asarray(separated.track.channels)
    assert np.isfinite(channels).all()
    np.testing.assert_allclose(channels.sum(axis=0), y, atol=1e-5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"cache entry {key[:12]} was damaged (channels.f32 checksum mismatch); rebuilding it"
    ]
    assert _entries(cache) == [key]


def test_a_cached_track_plays_from_the_entry_once_every_block_is_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    """No worker for a sound entry: the span under the head first, then every span."""
    from stemdeck.core.separation.separate import separate
    from stemdeck.daemon import loader_cache

    monkeypatch.setattr(loader_cache, "VERIFY_CHUNK_S", 12.0)
    y = tone_mix(48.0, seed=7)
    path = _library(tmp_path, y)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    separate(y, SR, spec=SPEC, cache=cache)
    at_post: list[list[int]] = []

    class Snapshot(RecordingEngine):
        def post(self, command: Command) -> bool:
            for c in command.commands if isinstance(command, Batch) else (command,):
                if isinstance(c, SetTrack) and c.track.ready is not None:
                    at_post.append(c.track.ready.tolist())
            return super().post(command)

    def no_worker(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a worker started for a sound entry")

    monkeypatch.setattr(worker_module.SeparationWorker, "start", no_worker)
    engine = Snapshot(position=40 * SR)
    loader = TrackLoader(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    loader.request(str(path))
    _settled(loader)
    loader.close()
    assert loader.problem is None and loader.separated
    original, cached, separated = engine.tracks()
    assert original.track.is_mix
    assert at_post == [[0, 0, 0, 1]]
    assert cached.track.ready is not None and cached.track.ready.tolist() == [1, 1, 1, 1]
    assert separated.track.channels is cached.track.channels and separated.track.ready is None


@pytest.mark.parametrize("cached_alike", [False, True])
def test_the_worker_starts_before_the_hash_when_no_entry_can_match(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cached_alike: bool,
    shared_memory_checked: None,
) -> None:
    """No entry of the track's shape and rate in the cache: the worker starts on the
    chunk under the play head first and files it under the key taken meanwhile. An
    entry of another track of the same length: the key first (it may be a hit)."""
    from stemdeck.core.separation.separate import separate

    y = tone_mix(3.0, seed=8)
    path = _library(tmp_path, y)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    if cached_alike:
        separate(tone_mix(3.0, seed=9), SR, spec=SPEC, cache=cache)
    events: list[str] = []
    real_key = keys_module.cache_key

    def key(*args: Any, **kwargs: Any) -> str:
        events.append("hash")
        return real_key(*args, **kwargs)

    monkeypatch.setattr(keys_module, "cache_key", key)
    _worker_starts(monkeypatch, lambda kwargs: events.append("worker"))
    engine, loader, _ = _loaded(tmp_path, path)  # the cache folder above
    assert loader.problem is None and loader.separated
    assert events == (["hash", "worker"] if cached_alike else ["worker", "hash"])
    _original, progressive, separated = engine.tracks()
    assert progressive.track.ready is not None and progressive.track.ready.tolist() == [1]
    assert separated.track.channels is progressive.track.channels
    assert SPEC.key(y, SR) in _entries(cache)
    np.testing.assert_allclose(np.asarray(separated.track.channels).sum(axis=0), y, atol=1e-5)


def _decode_by_seconds(monkeypatch: pytest.MonkeyPatch) -> list[MappedDecode]:
    """Loads decode a second a block and play once 2 s are in (``FIRST_PIECE_S``);
    returns the decodes made, in order, as the test's thread sees them."""
    from stemdeck.daemon import loader as loader_module

    decodes: list[MappedDecode] = []
    real_decode = source_module.decode_mapped

    def decode_mapped(path: str, folder: Path) -> MappedDecode:
        decodes.append(real_decode(path, folder, block=SR))
        return decodes[-1]

    monkeypatch.setattr(source_module, "decode_mapped", decode_mapped)
    monkeypatch.setattr(loader_module, "FIRST_PIECE_S", 2.0)
    return decodes


@pytest.mark.parametrize("rewritten", [False, True])
def test_a_file_found_by_its_identity_plays_its_stems_before_it_is_decoded_and_is_confirmed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rewritten: bool,
    shared_memory_checked: None,
) -> None:
    """#22: the cache entry a file's identity indexes plays its stems while the file
    is still being decoded (held after its first pieces until they are posted), then
    is confirmed by the key of the whole audio. A file rewritten in place with its
    size and mtime kept has the same identity: its stale stems go once the key says
    so (the original plays again), and it is separated anew under its own key."""
    from stemdeck.core.audiofile import files as files_module
    from stemdeck.core.separation.cache import SOURCE_PREFIX, file_identity, identity_pieces

    y = tone_mix(20.0, seed=40)
    path = _library(tmp_path, y)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    first = TrackLoader(
        RecordingEngine(), Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    first.request(str(path))
    _settled(first)
    first.close()
    old_key = SPEC.key(y, SR)
    identity = file_identity(path, SPEC.digest)
    assert cache.indexed_key(identity) == old_key
    played = y
    if rewritten:  # bytes no piece of the identity covers, the size and mtime kept
        st = path.stat()
        raw = bytearray(path.read_bytes())
        data = len(raw) - y.size * 4  # the samples end the file, interleaved float32
        pieces = identity_pieces(len(raw))
        gap = (pieces[0][0] + pieces[0][1] + pieces[1][0]) // 2
        frame = (gap - data) // 8
        played = y.copy()
        played[:, frame : frame + 64] *= -0.5
        raw[data + frame * 8 : data + (frame + 64) * 8] = played[:, frame : frame + 64].T.tobytes()
        assert gap + 512 < pieces[1][0]
        path.write_bytes(bytes(raw))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert file_identity(path, SPEC.digest) == identity
        np.testing.assert_array_equal(sf.read(path, dtype="float32")[0].T, played)
    else:

        def no_worker(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("a worker started for a sound entry")

        monkeypatch.setattr(worker_module.SeparationWorker, "start", no_worker)

    # The decode 1 s at a time, held after 3 s until stems are posted.
    stems_posted = threading.Event()
    decoded_at_post: list[int] = []
    decodes = _decode_by_seconds(monkeypatch)
    real_landed = files_module.MappedDecode._landed

    def landed(self: MappedDecode, at: int) -> bool:
        going = real_landed(self, at)
        if at >= 3 * SR:
            assert stems_posted.wait(30)
        return going

    class Snapshot(RecordingEngine):
        def post(self, command: Command) -> bool:
            for c in command.commands if isinstance(command, Batch) else (command,):
                if isinstance(c, SetTrack) and c.track.ready is not None:
                    decoded_at_post.append(decodes[0].decoded)
                    stems_posted.set()
            return super().post(command)

    monkeypatch.setattr(files_module.MappedDecode, "_landed", landed)
    engine = Snapshot()
    loader = TrackLoader(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    with caplog.at_level(logging.INFO):
        loader.request(str(path))
        _settled(loader)
    loader.close()
    assert loader.problem is None and loader.separated
    assert decoded_at_post[0] == 3 * SR  # the first stems while the rest was held
    tracks = engine.tracks()
    original, indexed = tracks[:2]
    assert original.track.is_mix and not original.same_audio
    assert indexed.same_audio and indexed.track.ready is not None
    assert indexed.track.mix is not None
    assert np.shares_memory(indexed.track.mix, original.track.channels)  # the same map
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    if not rewritten:
        (separated,) = tracks[2:]
        assert separated.track.channels is indexed.track.channels
        assert separated.track.ready is None
        assert _entries(cache) == [old_key]
        assert (
            "song: the cache entry its file named is not of its audio; separating it" not in infos
        )
    else:
        again, progressive, separated = tracks[2:]
        assert again.same_audio and again.track.is_mix and again.track.names == ("mix",)
        np.testing.assert_array_equal(again.track.channels[0], played)
        assert progressive.track.ready is not None
        assert progressive.track.channels is not indexed.track.channels
        assert separated.track.channels is progressive.track.channels
        new_key = SPEC.key(played, SR)
        assert _entries(cache) == sorted([old_key, new_key])
        assert cache.indexed_key(identity) == new_key
        np.testing.assert_allclose(
            np.asarray(separated.track.channels).sum(axis=0), played, atol=1e-5
        )
        assert "song: the cache entry its file named is not of its audio; separating it" in infos
    assert sorted(p.name for p in cache.root.glob(f"{SOURCE_PREFIX}*")) == [
        f"{SOURCE_PREFIX}{identity}"
    ]


def test_a_forged_or_damaged_index_file_is_ignored(tmp_path: Path) -> None:
    """An index file is a hint a hostile user could write: only a key (40 hex digits)
    is taken from it, never a path; nothing is read for an identity that is not one."""
    from stemdeck.core.separation.cache import SOURCE_PREFIX

    cache = SeparationCache(tmp_path / "cache")
    identity = "a" * 40
    cache.index_source(identity, "b" * 40)
    assert cache.indexed_key(identity) == "b" * 40
    (cache.root / f"{SOURCE_PREFIX}{identity}").write_text("../../etc/passwd\n")
    assert cache.indexed_key(identity) is None
    (cache.root / f"{SOURCE_PREFIX}{identity}").write_bytes(b"\xff" * 40)
    assert cache.indexed_key(identity) is None
    assert cache.indexed_key("../" + "a" * 37) is None
    cache.index_source("not an identity", "b" * 40)
    cache.index_source(identity, "../x")
    assert sorted(p.name for p in cache.root.iterdir()) == [f"{SOURCE_PREFIX}{identity}"]


def test_a_track_superseded_while_it_decodes_stops_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    """#22: the original plays from its first pieces while the rest decodes; a newer
    track that plays meanwhile stops that decode at its next block (bounded work for
    a track nobody hears), and nothing of the older one is posted after it."""
    from stemdeck.core.audiofile import files as files_module

    library = tmp_path / "library"
    library.mkdir()
    sf.write(library / "long.wav", tone_mix(20.0, seed=41).T, SR, subtype="FLOAT")
    sf.write(library / "short.wav", tone_mix(2.0, seed=42).T, SR, subtype="FLOAT")
    release = threading.Event()
    decodes = _decode_by_seconds(monkeypatch)
    real_landed = files_module.MappedDecode._landed

    def landed(self: MappedDecode, at: int) -> bool:
        # The long track's decode (known by its length: its thread may land blocks
        # before decode_mapped has returned it) holds after 3 s.
        if self.audio.shape[-1] == 20 * SR and at >= 3 * SR:
            assert release.wait(30)
        return real_landed(self, at)

    monkeypatch.setattr(files_module.MappedDecode, "_landed", landed)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine()
    loader = TrackLoader(engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[library])
    told: list[str | None] = []
    loader.request(str(library / "long.wav"), told.append)
    poll(lambda: list(told), lambda t: t == [None], "the long track playing")
    assert loader.track_name == "long" and not decodes[0].done
    loader.request(str(library / "short.wav"), told.append)
    poll(lambda: decodes[0].cancelled, bool, "the long track's decode cancelled")
    assert loader.track_name == "short"
    release.set()
    poll(lambda: decodes[0].done, bool, "the long track's decode ended")
    assert decodes[0].decoded == 3 * SR  # not one block more
    with pytest.raises(AudioFileError, match="decode cancelled"):
        decodes[0].result()
    _settled(loader)
    loader.close()
    assert told == [None, None] and loader.problem is None
    long_original, short_original, *rest = engine.tracks()
    assert long_original.track.channels.shape == (1, 2, 20 * SR)
    assert short_original.track.channels.shape == (1, 2, 2 * SR)
    assert all(t.track.channels.shape[-1] == 2 * SR for t in rest) and rest != []


@pytest.mark.parametrize("mode", ["components", "stems"])
def test_a_block_damaged_after_the_first_pieces_is_one_clear_problem_and_no_nan_plays(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    shared_memory_checked: None,
    mode: str,
) -> None:
    """#22: the original plays from its first pieces, so NaN samples 72 s into an
    80 s file are found after it plays: said once (the log, the status line's
    problem), the damaged block never reaches the map the engine reads. The worker
    started on the decoded part is ended and its entry removed; in stems mode its
    first chunk's stems played meanwhile, and the original plays again (the status
    says so). Nothing is hashed or cached."""

    y = tone_mix(80.0, seed=43)
    y[0, 72 * SR + 5] = np.nan
    path = _library(tmp_path, y)
    with pytest.raises(AudioFileError) as damaged:
        source_module.load(path)
    from stemdeck.core.audiofile import files as files_module

    _decode_by_seconds(monkeypatch)
    real_landed = files_module.MappedDecode._landed
    # Stems mode: the chunk under the play head plays its stems once the first minute
    # (the level) is in, before the damage is found; components mode waits for the
    # whole track, so never does.
    posted = 2 if mode == "stems" else 1

    def landed(self: MappedDecode, at: int) -> bool:
        # On a busy machine the decode could reach the damage before the original is
        # posted (the load is then refused, as a file damaged early is): it waits.
        if at >= 71 * SR:
            poll(engine.tracks, first_played, "the original, or its first stems", timeout=60)
        return real_landed(self, at)

    def first_played(tracks: list[Any]) -> bool:
        if len(tracks) != posted:
            return False
        return posted == 1 or tracks[1].track.ready[0] == 1  # the chunk under the head

    monkeypatch.setattr(files_module.MappedDecode, "_landed", landed)
    spec = SPEC if mode == "components" else SeparationSpec()
    names = tuple(spec.channel_names())
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine()
    loader = TrackLoader(
        engine, Registry(names), names, spec=spec, cache=cache, library=[path.parent]
    )
    told: list[str | None] = []
    with caplog.at_level(logging.INFO):
        loader.request(str(path), told.append)
        _settled(loader)
        tracks = poll(engine.tracks, lambda t: len(t) == posted + 1, "the original again")
    worker = loader._worker
    loader.close()
    reason = f"song: {damaged.value}"
    assert told == [None] and loader.problem == reason and not loader.separated
    assert loader.track_info() == ("song", "original only", 1.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"{reason}; playing the original"]
    assert worker is None
    original, again = tracks[0], tracks[-1]
    assert again.same_audio and again.track.channels is original.track.channels
    if mode == "stems":
        stems = tracks[1].track
        assert stems.mix is not None and stems.ready is not None
        assert stems.ready[0] == 1 and not stems.ready.all()  # the last never came
    played = np.asarray(original.track.channels[0])
    assert np.isfinite(played).all()
    np.testing.assert_array_equal(played[:, : 72 * SR], y[:, : 72 * SR])
    assert not played[:, 73 * SR :].any()  # never decoded: silence, not NaN
    assert _entries(cache) == []
    assert list(cache.root.glob(".partial-*")) == []  # the worker's entry removed


def test_a_long_track_plays_its_stems_before_it_is_decoded_and_is_filed_under_its_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    shared_memory_checked: None,
) -> None:
    """#22: the worker starts on the first minute of a track still being decoded (the
    file the decode writes, no shared copy), its entry plays under a provisional
    name as its chunks come, and once the track is decoded and hashed the entry is
    filed under the key: the stems under the play head play before the decode ends."""
    y = tone_mix(80.0, seed=44)
    path = _library(tmp_path, y)
    spec = SeparationSpec()
    names = tuple(spec.channel_names())
    from stemdeck.core.audiofile import files as files_module

    _decode_by_seconds(monkeypatch)
    real_landed = files_module.MappedDecode._landed

    def landed(self: MappedDecode, at: int) -> bool:
        if at >= 70 * SR:  # the stems under the play head, before the rest decodes
            poll(engine.tracks, stems_played, "the first chunk's stems", timeout=60)
        return real_landed(self, at)

    def stems_played(tracks: list[Any]) -> bool:
        return len(tracks) == 2 and tracks[1].track.ready[0] == 1

    started: list[tuple[int, int]] = []

    def count_at_start(kwargs: dict[str, Any]) -> None:  # the count moves on after
        decode = kwargs["decode"]
        started.append((decode.decoded, decode.audio.shape[1]) if decode else (-1, -1))

    monkeypatch.setattr(files_module.MappedDecode, "_landed", landed)
    _worker_starts(monkeypatch, count_at_start)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine()
    loader = TrackLoader(
        engine, Registry(names), names, spec=spec, cache=cache, library=[path.parent]
    )
    with caplog.at_level(logging.INFO):
        loader.request(str(path))
        _settled(loader)
    loader.close()
    assert loader.problem is None and loader.separated
    ((decoded, frames),) = started  # one worker, on the track as it was decoded
    assert 2 * SR <= decoded < frames == y.shape[1]
    original, progressive, separated = engine.tracks()
    np.testing.assert_array_equal(original.track.channels[0], y)
    assert progressive.same_audio and progressive.track.mix is not None
    assert progressive.track.ready is not None and progressive.track.ready.all()
    assert separated.same_audio and separated.track.channels is progressive.track.channels
    np.testing.assert_allclose(np.asarray(separated.track.channels).sum(axis=0), y, atol=1e-5)
    key = spec.key(y, SR)
    assert _entries(cache) == [key] and list(cache.root.glob(".partial-*")) == []
    assert cache.indexed_key(file_identity(str(path), spec.digest)) == key
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


def test_a_track_being_decoded_is_hashed_while_its_worker_waits_for_the_fork_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    """#22: the worker's start waits for the fork server's imports (0.4 s into a
    load); the loader's thread meanwhile waits for the decode, starts the beat
    analysis and hashes the track, rather than doing all that once the worker runs.
    The worker's start here returns only once the track is hashed (or after 10 s)."""
    import threading

    y = tone_mix(5.0, seed=45)
    path = _library(tmp_path, y)
    _decode_by_seconds(monkeypatch)
    hashed = threading.Event()
    real_key = keys_module.cache_key

    def key(*args: Any, **kwargs: Any) -> str:
        out = real_key(*args, **kwargs)
        hashed.set()
        return out

    waited: list[bool] = []
    monkeypatch.setattr(keys_module, "cache_key", key)
    starts = _worker_starts(monkeypatch, lambda kwargs: waited.append(hashed.wait(10.0)))
    engine, loader, cache = _loaded(tmp_path, path)
    assert waited == [True]  # hashed while the start waited
    assert [s.kwargs["decode"] is not None for s in starts] == [True]  # as it decoded
    assert loader.problem is None and loader.separated
    assert _entries(cache) == [SPEC.key(y, SR)]
    np.testing.assert_allclose(
        np.asarray(engine.tracks()[-1].track.channels).sum(axis=0), y, atol=1e-5
    )


@pytest.mark.parametrize("end", ["superseded", "closed"])
def test_a_worker_ended_under_its_provisional_name_leaves_no_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None, end: str
) -> None:
    """A track separated as it decodes, ended before its key came (a newer track, the
    daemon's exit): its worker is gone and so is the entry under the provisional name,
    which nobody could resume."""
    y = tone_mix(80.0, seed=45)
    path = _library(tmp_path, y)
    sf.write(path.parent / "next.wav", tone_mix(3.0, seed=46).T, SR, subtype="FLOAT")
    spec = SeparationSpec()
    names = tuple(spec.channel_names())
    from stemdeck.core.audiofile import files as files_module

    _decode_by_seconds(monkeypatch)
    real_landed = files_module.MappedDecode._landed
    gate = threading.Event()

    def landed(self: MappedDecode, at: int) -> bool:
        if at >= 70 * SR and self.audio.shape[1] == y.shape[1]:
            assert gate.wait(60), "the test never let the decode on"
        return real_landed(self, at)

    monkeypatch.setattr(files_module.MappedDecode, "_landed", landed)
    starts = _worker_starts(monkeypatch)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine()
    loader = TrackLoader(
        engine, Registry(names), names, spec=spec, cache=cache, library=[path.parent]
    )
    loader.request(str(path))

    def first_stems(tracks: list[Any]) -> bool:
        return len(tracks) == 2 and tracks[1].track.ready[0] == 1

    poll(engine.tracks, first_stems, "the first chunk's stems, provisionally", timeout=60)
    (provisional,) = [p.name for p in cache.root.glob(".partial-*")]
    assert re.fullmatch(r"\.partial-new-[0-9a-f]{32}", provisional)
    if end == "superseded":
        loader.request(str(path.parent / "next.wav"))
        poll(lambda: loader.track_name, lambda n: n == "next", "the next track plays")
    else:
        loader.close()
    first = starts[0].worker
    assert first is not None
    try:
        poll(lambda: first.process.is_alive(), lambda alive: not alive, "the worker gone")
        poll(
            lambda: (cache.root / provisional).exists(),
            lambda there: not there,
            "the provisional entry removed",
        )
    finally:
        gate.set()
        loader.close()


def test_a_worker_dropped_while_its_entry_is_opened_posts_no_stems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    """The decode fails while the watcher opens the worker's entry (a watcher thread
    descheduled there): the worker is dropped and the original posted again, and the
    entry the watcher opened is not posted after it (the stems of a dead worker over
    the original, the status saying the original plays)."""
    y = tone_mix(80.0, seed=47)
    y[0, 72 * SR + 5] = np.nan
    path = _library(tmp_path, y)
    spec = SeparationSpec()
    names = tuple(spec.channel_names())
    _decode_by_seconds(monkeypatch)
    from stemdeck.core.audiofile import files as files_module

    real_landed = files_module.MappedDecode._landed
    entered = threading.Event()

    def landed(self: MappedDecode, at: int) -> bool:
        if at >= 71 * SR:  # the damage is found once the watcher is opening the entry
            assert entered.wait(60), "the worker's entry never came"
        return real_landed(self, at)

    monkeypatch.setattr(files_module.MappedDecode, "_landed", landed)
    real_progressive = TrackLoader._progressive

    def progressive(self: TrackLoader, *args: Any) -> Any:
        opened = real_progressive(self, *args)
        entered.set()
        # Let go once the worker is dropped and the original posted again.
        poll(engine.tracks, lambda t: len(t) == 2, "the original again", timeout=60)
        return opened

    monkeypatch.setattr(TrackLoader, "_progressive", progressive)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine()
    loader = TrackLoader(
        engine, Registry(names), names, spec=spec, cache=cache, library=[path.parent]
    )
    loader.request(str(path))
    original, again = poll(engine.tracks, lambda t: len(t) == 2, "the original again")
    assert again.same_audio and again.track.channels is original.track.channels
    poll(lambda: list(cache.root.glob(".partial-*")), lambda p: p == [], "the entry removed")
    time.sleep(0.5)  # the watcher, let go, had time to post
    loader.close()
    assert len(engine.tracks()) == 2
    assert loader.track_info() == ("song", "original only", 1.0)


def test_no_worker_starts_before_the_daemons_audio_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    """The daemon's first track plays (the original) before its audio runs; its worker
    waits for the audio (LoaderBase.sounding): beside the daemon's start it delayed the
    first sound. Once the audio runs, the worker starts and the stems come."""
    y = tone_mix(3.0, seed=4)
    path = _library(tmp_path, y)
    starts = _worker_starts(monkeypatch)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    engine = RecordingEngine(sr=SR)
    loader = TrackLoader(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    loader.sounding.clear()
    loader.open(str(path))
    try:
        poll(lambda: len(engine.tracks()), lambda n: n >= 1, "the original posted")
        time.sleep(0.5)
        assert starts == [] and not loader.separated
        sounding = time.monotonic()
        loader.sounding.set()
        _settled(loader)
        assert loader.problem is None and loader.separated
        assert len(starts) == 1 and starts[0].at >= sounding
    finally:
        loader.close()


@pytest.mark.parametrize("long", [False, True])
def test_a_worker_that_cannot_start_is_one_clear_problem_and_the_original_plays_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None, long: bool
) -> None:
    """A worker's start that raises something unforeseen (here in the spawn's own
    thread for a track separated as it decodes, ``long``) is said once as the load's
    problem; it was lost before (the request had been answered: the original plays)."""
    if long:
        _decode_by_seconds(monkeypatch)

    def broken(*args: Any, **kwargs: Any) -> SeparationWorker:
        raise RuntimeError("no worker today")

    monkeypatch.setattr(worker_module.SeparationWorker, "start", broken)
    y = tone_mix(5.0, seed=46)
    path = _library(tmp_path, y)
    engine, loader, _cache = _loaded(tmp_path, path)
    assert loader.problem == f"{path.stem}: separation not started: RuntimeError('no worker today')"
    assert not loader.separated and loader.progress is None
    (original,) = engine.tracks()
    np.testing.assert_array_equal(original.track.channels[0], y)


def test_the_stems_model_is_loaded_once_the_audio_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_memory_checked: None
) -> None:
    """The model's arrays (40 ms to load, 12 ms to hash) join the file's identity in
    the loader's thread once the daemon's audio runs (``sounding``), not on the way to
    its first sound nor beside it; the file's pieces are read before the decode."""
    spec = SeparationSpec("stems", SeparationParams(stems_iter=2))
    names = tuple(spec.channel_names())
    y = tone_mix(3.0, seed=41)
    path = _library(tmp_path, y)
    engine = RecordingEngine(max_channels=len(names))
    asked: list[int] = []
    real_load = keys_module.load_stem_model

    def load_stem_model(name: str = "default") -> Any:
        asked.append(len(engine.tracks()))
        return real_load(name)

    monkeypatch.setattr(keys_module, "load_stem_model", load_stem_model)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    loader = TrackLoader(
        engine, Registry(names), names, spec=spec, cache=cache, library=[path.parent]
    )
    loader.sounding.clear()
    try:
        loader.open(str(path))
        assert [t.track.names for t in engine.tracks()] == [("mix",)]
        time.sleep(0.5)
        assert asked == []
        loader.sounding.set()
        poll(
            lambda: cache.indexed_key(file_identity(path, spec.digest)),
            lambda key: key == spec.key(y, SR),
            "the file's identity filed under the track's key",
        )
        assert asked[0] == 1
    finally:
        loader.close()


@pytest.mark.parametrize("start", [False, True])
def test_a_file_damaged_in_its_first_30_s_is_refused_while_a_track_plays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, start: bool
) -> None:
    """A requested track plays once its first 30 s are decoded and checked
    (``FIRST_PIECE_S``): a NaN 5 s into a 10 s file refuses the load, the requester is
    told why, and the playing track (separated) plays on untouched. The daemon's first
    track, with nothing playing to keep, plays from its first second
    (``START_PIECE_S``): the damage is said once and its decoded part plays."""
    y = tone_mix(10.0, seed=44)
    y[0, 5 * SR + 3] = np.nan
    path = _library(tmp_path, y)
    sf.write(path.parent / "good.wav", tone_mix(3.0, seed=46).T, SR, subtype="FLOAT")
    engine = RecordingEngine()
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    loader = TrackLoader(
        engine, Registry(NAMES), NAMES, spec=SPEC, cache=cache, library=[path.parent]
    )
    told: list[str | None] = []
    try:
        if start:
            loader.sounding.clear()  # the worker's start waits: the decode is looked at
            with caplog.at_level(logging.WARNING, logger="stemdeck"):
                loader.open(str(path))
                assert [t.track.names for t in engine.tracks()] == [("mix",)]
                poll(lambda: loader.problem, bool, "the damage said")
        else:
            loader.request(str(path.parent / "good.wav"))
            _settled(loader)
            assert loader.separated and loader.generation == 1
            posted = len(engine.posted)
            with caplog.at_level(logging.WARNING, logger="stemdeck"):
                loader.request(str(path), told.append)
                poll(lambda: list(told), bool, "the requester told")
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        reason = f"'{path}': 1 samples are NaN or infinite; re-export the file"
        if start:
            assert loader.generation == 1
            assert warnings == [f"song: {reason}; playing the original"]
        else:
            assert told == [reason]
            assert warnings == [f"track not loaded: {reason}"]
            assert len(engine.posted) == posted and loader.generation == 1
            assert loader.separated and loader.track_name == "good"
    finally:
        loader.close()


class RecordingBeats:
    """What the loader uses of the beat grid: ``start``, recorded."""

    def __init__(self) -> None:
        self.started: list[tuple[tuple[int, int], int, int, str]] = []

    def start(self, y: np.ndarray, sr: int, gen: int, name: str) -> None:
        self.started.append((y.shape, sr, gen, name))


def test_a_stems_model_that_cannot_be_loaded_is_one_line_and_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The channel names come from the model's description (the daemon starts on it);
    arrays that cannot be loaded are found once the audio runs: one line, the original
    plays on with its beat grid found, no worker starts for nothing."""
    from dataclasses import replace

    from stemdeck.core.separation.stem_model import load_stem_model

    model = load_stem_model()
    replace(model, maps=model.maps[:, :10]).save(tmp_path / "wrong.npz")
    spec = SeparationSpec("stems", SeparationParams(stems_model=str(tmp_path / "wrong.npz")))
    names = tuple(spec.channel_names())
    path = _library(tmp_path, tone_mix(3.0, seed=45))
    starts = _worker_starts(monkeypatch)
    engine = RecordingEngine(max_channels=len(names))
    beats = RecordingBeats()
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    loader = TrackLoader(
        engine,
        Registry(names),
        names,
        spec=spec,
        cache=cache,
        library=[path.parent],
        beats=cast(Any, beats),
    )
    loader.sounding.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="stemdeck"):
            loader.open(str(path))
            time.sleep(0.3)
            assert loader.problem is None  # the model waits for the audio
            loader.sounding.set()
            poll(lambda: loader.problem, bool, "the model's problem said")
            poll(lambda: list(beats.started), bool, "the beat grid sought")
            time.sleep(0.3)  # nothing more comes
        reason = (
            f"song: separation not started: {tmp_path / 'wrong.npz'}: not a valid stems "
            "model (maps must be finite, shape (4, 256, 1280))"
        )
        assert loader.problem == reason
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
            f"{reason}; playing the original"
        ]
        assert starts == [] and [t.track.names for t in engine.tracks()] == [("mix",)]
        assert beats.started == [((2, 3 * SR), SR, 1, "song")]
    finally:
        loader.close()


def test_a_track_is_shared_in_pieces_of_at_most_write_piece(
    pwrites: list[int], shared_memory_checked: None
) -> None:
    from stemdeck.core.audiofile.scratch import WRITE_PIECE

    y = tone_mix(1.0, seed=42)  # two channels of a second: 344.5 KiB
    shm = worker_module.share_audio(y)
    try:
        whole, rest = divmod(y.astype(np.float32).nbytes, WRITE_PIECE)
        assert pwrites == [WRITE_PIECE] * whole + ([rest] if rest else [])
        shared = np.ndarray(y.shape, np.float32, buffer=shm.buf)
        assert np.array_equal(shared, y.astype(np.float32))
        del shared
    finally:
        shm.close()
        shm.unlink()
