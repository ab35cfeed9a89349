"""The loader posts channels at their own rate: the mixer's read head converts it
as it reads, so a cache entry goes live as its memory map, with no resampled copy."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest
from mp4_helpers import mapped_base

from stemdeck.core.control.registry import Registry
from stemdeck.core.mixer.commands import Batch, Command, SetTrack
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.daemon.loader import TrackLoader

NAMES = ("c1", "c2", "c3")


@dataclass
class RecordingEngine:
    """What the loader uses of the mixer: its rate, its strips, and ``post``."""

    sr: int = 48000
    max_channels: int = len(NAMES)
    posted: list[Command] = field(default_factory=list)

    def post(self, command: Command) -> bool:
        self.posted.append(command)
        return True

    def tracks(self) -> list[SetTrack]:
        out = []
        for command in self.posted:
            inner = command.commands if isinstance(command, Batch) else (command,)
            out += [c for c in inner if isinstance(c, SetTrack)]
        return out


def _loader(engine: RecordingEngine) -> TrackLoader:
    spec = SeparationSpec("components")
    return TrackLoader(engine, Registry(NAMES), NAMES, spec=spec, cache=None, library=[])


def test_a_cached_entry_goes_live_as_its_memory_map(tmp_path) -> None:
    path = tmp_path / "channels.f32"
    np.memmap(path, np.float32, "w+", shape=(3, 2, 44100)).flush()
    entry = np.memmap(path, np.float32, "r", shape=(3, 2, 44100))
    engine = RecordingEngine()
    loader = _loader(engine)
    assert loader._publish(entry, 44100, loader.generation)
    (command,) = engine.tracks()
    assert command.track.channels is entry  # no copy, no resampling
    assert command.track.sr == 44100
    assert command.same_audio
    loader.close()


def test_a_rate_the_read_head_does_not_take_is_resampled_to_the_engines() -> None:
    channels = np.zeros((3, 2, 4000), np.float32)
    engine = RecordingEngine()
    loader = _loader(engine)
    assert loader._publish(channels, 4000, loader.generation)  # below 8 kHz
    (command,) = engine.tracks()
    assert command.track.sr == 48000
    assert command.track.channels.shape == (3, 2, 48000)
    loader.close()


class Beats:
    """What the loader hands the beat analysis."""

    def __init__(self) -> None:
        self.started: list[tuple[np.ndarray, int]] = []

    def start(self, y: np.ndarray, sr: int, gen: int, name: str) -> None:
        self.started.append((y, sr))


def _stem_file(path, seconds: float, seed: int):
    from stemdeck.core.audiofile.stemfile_write import write_stem_file

    rng = np.random.default_rng(seed)
    stems = rng.uniform(-0.2, 0.2, (3, 2, int(seconds * 44100))).astype(np.float32)
    colours = ["#000001", "#000002", "#000003"]
    names = ["Vox", "Kick", "Sub"]
    write_stem_file(
        path, stems.sum(axis=0), stems, 44100, names=names, colours=colours, codec="alac"
    )
    return path


def _stem_loader(
    tmp_path, engine: RecordingEngine, beats: Beats, *, cached: bool = True
) -> TrackLoader:
    from stemdeck.core.separation.cache import SeparationCache

    return TrackLoader(
        engine,
        Registry(NAMES),
        NAMES,
        spec=SeparationSpec(),
        cache=SeparationCache(tmp_path / "cache") if cached else None,
        library=[tmp_path],
        beats=cast(Any, beats),
    )


@pytest.mark.parametrize("cached", [True, False])
def test_a_stem_file_goes_live_as_a_memory_map_at_its_own_rate(tmp_path, cached: bool) -> None:
    """A stem file's stems were decoded whole into the daemon's heap at the engine's
    rate, and its mix with them: a 60-minute file took gigabytes. With a cache folder
    they go live as a map of a scratch file there, at the file's own rate (the read
    head converts it), in the mixer's order, and so does the mix the beat analysis
    reads; without one, as before."""
    from stemdeck.core.audiofile.decode import read_stem_file

    path = _stem_file(tmp_path / "three.stem.m4a", 1.0, 7)
    engine, beats = RecordingEngine(), Beats()
    loader = _stem_loader(tmp_path, engine, beats, cached=cached)
    loader.open(str(path))
    loader.close()
    (command,) = engine.tracks()
    track = command.track
    whole = read_stem_file(path, master=False, sr=None if cached else 48000)
    whole.arrange()  # drums (Kick), bass (Sub), then vocals (Vox)
    assert loader.labels == ["Kick", "Sub", "Vox"]
    np.testing.assert_array_equal(track.channels, whole.stems)
    ((mix, mix_sr),) = beats.started
    np.testing.assert_array_equal(mix, whole.mix)
    assert (track.sr, mix_sr) == ((44100, 44100) if cached else (48000, 48000))
    assert (mapped_base(track.channels) is not None) == (mapped_base(mix) is not None) == cached


def test_a_full_cache_disk_decodes_the_stems_into_memory_and_never_kills_the_daemon(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The scratch file was written through a map of a sparse file: a disk that filled
    up was a SIGBUS, the daemon dead mid-set. It is written with pwrite: ENOSPC is an
    OSError, and the stems and their mix go to memory (as without a cache), said."""
    import errno
    import logging
    import os

    from stemdeck.core.audiofile.decode import read_stem_file

    path = _stem_file(tmp_path / "three.stem.m4a", 1.0, 8)
    written = [0]
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: Any, offset: int) -> int:
        written[0] += len(data)
        if written[0] > 100_000:  # the disk fills up a little way in
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    engine, beats = RecordingEngine(), Beats()
    loader = _stem_loader(tmp_path, engine, beats)
    with caplog.at_level(logging.INFO):
        loader.open(str(path))
    loader.close()
    monkeypatch.undo()
    (command,) = engine.tracks()
    whole = read_stem_file(path, master=False, sr=48000)
    whole.arrange()
    np.testing.assert_array_equal(command.track.channels, whole.stems)
    assert command.track.sr == 48000 and mapped_base(command.track.channels) is None
    ((mix, _),) = beats.started
    np.testing.assert_array_equal(mix, whole.mix)
    said = [r.getMessage() for r in caplog.records if "go to memory" in r.getMessage()]
    assert said == [f"the stems go to memory, not {tmp_path / 'cache'}: No space left on device"]


def test_a_long_stem_file_plays_its_first_seconds_while_the_rest_decodes(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stem file played once it was decoded whole: a 10-minute one after 4.5 s, an
    hour's after 32 s. It plays once its first seconds are in, each span of its stems
    as it lands (silence where nothing is yet: a seek ahead), the status saying how
    much; then the whole, and its beat grid."""
    import threading

    from stemdeck.core.audiofile import scratch
    from stemdeck.core.audiofile.decode import read_stem_file
    from stemdeck.daemon import loader as loader_module

    path = _stem_file(tmp_path / "long.stem.m4a", 32.0, 9)
    gate = threading.Event()
    real_flush = scratch.Rows.flush

    def flush(self: Any) -> None:
        if self.count > 12 * 44100:  # the decode held at 12 s until the test lets it on
            assert gate.wait(60), "the test never let the decode on"
        real_flush(self)

    monkeypatch.setattr(scratch.Rows, "flush", flush)
    engine, beats = RecordingEngine(), Beats()
    loader = _stem_loader(tmp_path, engine, beats)
    try:
        loader.open(str(path))
        (first,) = engine.tracks()
        track = first.track
        size = round(loader_module.STEM_CHUNK_S * 44100)
        assert (track.sr, track.chunk, track.channels.shape) == (44100, size, (3, 2, 32 * 44100))
        assert track.ready is not None and len(track.ready) == 7
        assert track.mix is not None and not track.mix.any()  # silence where nothing is
        poll_until = time.monotonic() + 10
        while track.ready[1] == 0 and time.monotonic() < poll_until:
            time.sleep(0.01)
        assert track.ready.tolist() == [1, 1, 0, 0, 0, 0, 0]  # the first 10 s, checked
        assert loader.track_info() == ("long", "stems", pytest.approx(2 / 7))
        assert beats.started == []
        gate.set()
        deadline = time.monotonic() + 30
        while len(engine.tracks()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        gate.set()
        loader.close()
    first, final = engine.tracks()
    whole = read_stem_file(path, master=False)
    whole.arrange()
    assert final.same_audio and final.track.ready is None and final.track.sr == 44100
    np.testing.assert_array_equal(final.track.channels, whole.stems)
    assert first.track.ready is not None and first.track.ready.all()
    assert loader.track_info() == ("long", "ready", 1.0)
    ((mix, _),) = beats.started
    np.testing.assert_array_equal(mix, whole.mix)


def test_a_stem_file_damaged_after_its_first_seconds_plays_what_came_and_says_why(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Damage found 20 s into a stem file that plays (its first spans checked): one
    warning, the status's problem; what was checked plays on, the rest is silence,
    and no whole nor grid comes."""
    import logging
    import threading

    from stemdeck.core.audiofile import scratch
    from stemdeck.core.errors import AudioFileError

    path = _stem_file(tmp_path / "cut.stem.m4a", 40.0, 10)
    real_flush = scratch.Rows.flush
    playing = threading.Event()

    def flush(self: Any) -> None:
        if self.count > 20 * 44100:  # found once the file plays
            assert playing.wait(60), "the file never played"
            raise AudioFileError(f"{str(path)!r} is damaged: its audio cannot be decoded")
        real_flush(self)

    monkeypatch.setattr(scratch.Rows, "flush", flush)
    engine, beats = RecordingEngine(), Beats()
    loader = _stem_loader(tmp_path, engine, beats)
    with caplog.at_level(logging.WARNING):
        try:
            loader.open(str(path))
        finally:
            playing.set()
        deadline = time.monotonic() + 30
        while loader.problem is None and time.monotonic() < deadline:
            time.sleep(0.01)
    loader.close()
    (only,) = engine.tracks()  # no whole: what was checked plays on
    ready = only.track.ready
    assert ready is not None and 2 <= int(ready.sum()) < len(ready)
    assert ready[: int(ready.sum())].all()
    problem = loader.problem
    assert problem == f"cut: {str(path)!r} is damaged: its audio cannot be decoded"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"{problem}; playing what was decoded before it"]
    assert loader.track_info() == ("cut", "stems", int(ready.sum()) / len(ready))
    assert beats.started == []


def test_a_newer_track_stops_a_stem_file_decoding(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A track loaded while a stem file decodes: the decode stops (its threads and
    scratch file go) and nothing more of the stem file is posted."""
    import threading

    import soundfile as sf

    from stemdeck.core.audiofile import scratch
    from stemdeck.daemon import track_source

    path = _stem_file(tmp_path / "long.stem.m4a", 32.0, 11)
    sf.write(tmp_path / "next.wav", np.zeros((44100, 2), np.float32), 44100)
    gate = threading.Event()
    real_flush = scratch.Rows.flush

    def flush(self: Any) -> None:
        if self.count > 12 * 44100:
            assert gate.wait(60), "the test never let the decode on"
        real_flush(self)

    opened: list[Any] = []
    real_open = track_source.open_stem_file

    def open_stem_file(*args: Any, **kwargs: Any) -> Any:
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(scratch.Rows, "flush", flush)
    monkeypatch.setattr(track_source, "open_stem_file", open_stem_file)
    engine, beats = RecordingEngine(), Beats()
    loader = _stem_loader(tmp_path, engine, beats)
    try:
        loader.open(str(path))
        done: list[str | None] = []
        loader.request(str(tmp_path / "next.wav"), done.append)
        deadline = time.monotonic() + 30
        while not done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done == [None] and loader.track_name == "next"
        gate.set()
        (decode,) = opened
        assert decode._done.wait(30)
        assert decode._error is not None and "not decoded (another failed)" in str(decode._error)
        time.sleep(0.2)  # the stem file's thread, were it to post
    finally:
        gate.set()
        loader.close()
    first, *rest = [c.track for c in engine.tracks()]
    assert first.ready is not None and first.names == ("drums", "bass", "vocals")
    assert rest and all(t.names != first.names for t in rest)  # the next track's alone
    assert all(y.shape[-1] == 44100 for y, _ in beats.started)  # no grid of the stem file


@pytest.mark.parametrize("seconds", [4.0, 20.0])
def test_deafening_samples_in_a_stem_files_first_seconds_fail_its_load(
    tmp_path, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> None:
    """Damaged audio 2 s into a stem file: a short one was posted unchecked (peaks of
    +66 dBFS played), a long one was posted before its first spans were checked
    (its load answered a success, the track before it replaced by silence). Both
    fail the load, and nothing is posted."""
    from stemdeck.core.audiofile import scratch
    from stemdeck.core.errors import AudioFileError

    path = _stem_file(tmp_path / "loud.stem.m4a", seconds, 12)
    real_put = scratch.Rows.put

    def put(self: Any, y: np.ndarray) -> None:
        real_put(self, y * 1e4 if self.count > 2 * 44100 else y)

    monkeypatch.setattr(scratch.Rows, "put", put)
    engine, beats = RecordingEngine(), Beats()
    loader = _stem_loader(tmp_path, engine, beats)
    with pytest.raises(AudioFileError) as loud:
        loader.open(str(path))
    loader.close()
    assert str(loud.value).startswith(f"{str(path)!r} is damaged: its stem 'Kick' peaks at +")
    assert engine.tracks() == [] and beats.started == []


def test_a_cancelled_stem_decode_closes_its_files_at_once(tmp_path) -> None:
    """A newer track cancels a stem file's decode: its inputs and its scratch file
    (as large as the track) stayed open until a full garbage collection, held by
    the decodes left suspended and the stored error's traceback."""
    import gc
    import os

    from stemdeck.core.audiofile.decode import StemDecode, open_stem_file

    path = _stem_file(tmp_path / "long.stem.m4a", 30.0, 13)

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    gc.disable()
    try:
        before = open_files()
        decode = open_stem_file(path, tmp_path / "scratch", check=False)
        assert isinstance(decode, StemDecode)
        decode.cancel()
        with pytest.raises(Exception, match="another failed"):
            decode.result()
        del decode
        assert open_files() == before
    finally:
        gc.enable()
