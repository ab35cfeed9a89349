import contextlib
import errno
import gc
import logging
import mmap
import os
import re
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemdeck.core.audiofile.files import (
    AUDIO_SUFFIXES,
    FIRST_MAPPED_BLOCK,
    MappedDecode,
    decode_mapped,
    load,
    load_mapped,
    printable_name,
    probe_audio,
    write,
)
from stemdeck.core.audiofile.mp4 import MP4_SUFFIXES
from stemdeck.core.errors import AudioFileError

# The format and encoding libsndfile writes each of its suffixes in AUDIO_SUFFIXES with.
SNDFILE_SUFFIXES = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
    ".oga": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".aif": ("AIFF", "PCM_16"),
    ".aiff": ("AIFF", "PCM_24"),
    ".aifc": ("AIFF", "FLOAT"),  # float AIFF is AIFF-C
    ".w64": ("W64", "FLOAT"),
    ".rf64": ("RF64", "PCM_24"),
    ".caf": ("CAF", "ALAC_16"),
}


@pytest.mark.parametrize(
    ("ext", "fmt", "subtype", "tol"),
    [
        ("wav", "WAV", "FLOAT", 0.0),
        ("flac", "FLAC", "PCM_24", 1e-6),
        ("ogg", "OGG", "VORBIS", None),
        ("mp3", "MP3", "MPEG_LAYER_III", None),
    ],
)
@pytest.mark.parametrize("channels", [1, 2])
def test_load_formats(
    tmp_path: Path,
    rng: np.random.Generator,
    ext: str,
    fmt: str,
    subtype: str,
    tol: float | None,
    channels: int,
) -> None:
    t = np.arange(22050) / 22050
    y = np.stack([0.5 * np.sin(2 * np.pi * 440 * t)] * channels).astype(np.float32)
    path = tmp_path / f"x.{ext}"
    sf.write(path, y.T, 22050, format=fmt, subtype=subtype)
    out, sr = load(path)
    assert sr == 22050 and out.dtype == np.float32 and out.shape[0] == channels
    if tol is not None:
        np.testing.assert_allclose(out, y, atol=tol)
    else:  # lossy codecs: length may grow by the codec delay; the level is kept
        assert abs(np.sqrt(np.mean(out**2)) - np.sqrt(np.mean(y**2))) < 0.05


def test_more_than_two_channels_downmixed_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    y = np.zeros((1000, 6), np.float32)
    y[:, 0] = 0.5  # front left
    y[:, 1] = 0.25  # front right
    sf.write(tmp_path / "surround.wav", y, 48000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="stemdeck"):
        out, _ = load(tmp_path / "surround.wav")
    assert out.shape == (2, 1000)
    assert out[0, 0] > out[1, 0] > 0
    assert "6 channels downmixed" in caplog.text


def test_resample(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    sf.write(tmp_path / "a.wav", np.sin(2 * np.pi * 1000 * t), 44100)
    out, sr = load(tmp_path / "a.wav", sr=48000)
    assert sr == 48000 and abs(out.shape[1] - 48000) <= 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="no such file"):
        load(tmp_path / "nope.wav")


def test_folder(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="folder"):
        load(tmp_path)


@pytest.mark.parametrize("content", [b"", b"this is not audio at all" * 10, b"RIFF\x00\x00"])
def test_not_audio(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError, match="not a readable audio file"):
        load(path)


def test_zero_length(tmp_path: Path) -> None:
    sf.write(tmp_path / "empty.wav", np.zeros((0, 2)), 44100)
    with pytest.raises(AudioFileError, match="zero-length"):
        load(tmp_path / "empty.wav")


def test_nan_samples(tmp_path: Path) -> None:
    y = np.zeros((100, 2), np.float32)
    y[50, 1] = np.nan
    y[60, 0] = np.inf
    sf.write(tmp_path / "nan.wav", y, 44100, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="2 samples are NaN or infinite"):
        load(tmp_path / "nan.wav")


def test_write_unwritable(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="cannot write"):
        write(tmp_path / "missing" / "x.wav", np.zeros((2, 10), np.float32), 44100)


def test_audio_suffixes_are_libsndfile_formats_and_mp4() -> None:
    assert AUDIO_SUFFIXES == set(SNDFILE_SUFFIXES) | set(MP4_SUFFIXES)
    assert all(s == s.lower() and s.startswith(".") for s in AUDIO_SUFFIXES)


@pytest.mark.parametrize("suffix", sorted(SNDFILE_SUFFIXES))
def test_probe_audio_reads_every_libsndfile_suffix(tmp_path: Path, suffix: str) -> None:
    """Every suffix offered (`/track/list`, prep) is a file libsndfile opens."""
    fmt, subtype = SNDFILE_SUFFIXES[suffix]
    t = np.arange(4800) / 48000
    y = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t)])
    path = tmp_path / f"x{suffix}"
    sf.write(path, y.T.astype(np.float32), 48000, format=fmt, subtype=subtype)
    info = probe_audio(path)
    assert (info.channels, info.sr) == (2, 48000)
    assert info.holds_audio and info.frames is not None and info.frames >= 4800 - 1152
    assert info.seconds == pytest.approx(info.frames / 48000)
    out, sr = load(path)
    assert sr == 48000 and out.shape[0] == 2
    if subtype.startswith(("PCM", "FLOAT", "ALAC")):
        assert info.frames == out.shape[1] == 4800


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p / "nope.wav",
        lambda p: p,
        lambda p: _written(p / "bad.wav", b"this is not audio at all" * 10),
        lambda p: _written(p / "cut.wav", b"RIFF\x00\x00"),
        lambda p: _written(p / "empty.flac", b""),
    ],
    ids=["missing", "folder", "not-audio", "cut", "empty-file"],
)
def test_probe_audio_refuses_what_load_refuses(tmp_path: Path, make) -> None:
    """The header check gives the error loading would, without decoding."""
    path = make(tmp_path)
    with pytest.raises(AudioFileError) as probed:
        probe_audio(path)
    with pytest.raises(AudioFileError) as loaded:
        load(path)
    assert str(probed.value) == str(loaded.value)


def test_probe_audio_tells_a_file_without_samples(tmp_path: Path) -> None:
    path = _silent(tmp_path / "empty.wav", 0)
    info = probe_audio(path)
    assert not info.holds_audio and info.frames == 0 and info.seconds == 0.0
    assert probe_audio(_silent(tmp_path / "one.wav", 1)).holds_audio
    with pytest.raises(AudioFileError, match="zero-length"):
        load(path)


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _silent(path: Path, frames: int) -> Path:
    sf.write(path, np.zeros((frames, 2)), 44100)
    return path


def test_a_file_whose_name_is_not_utf8_is_read_and_written(tmp_path: Path) -> None:
    """soundfile encodes a str path strictly: a Latin-1 name was a UnicodeEncodeError."""
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9 live.wav"))
    y = np.linspace(-0.5, 0.5, 2000, dtype=np.float32).reshape(2, 1000)
    write(path, y, 22050)
    assert os.listdir(os.fsencode(tmp_path)) == [b"caf\xe9 live.wav"]
    assert probe_audio(path).frames == 1000
    back, sr = load(path)
    assert sr == 22050 and np.array_equal(back, y)
    (tmp_path / "x").mkdir()
    bad = Path(os.fsdecode(os.fsencode(tmp_path) + b"/x/caf\xe9.wav"))
    bad.write_bytes(b"not audio")
    with pytest.raises(AudioFileError) as err:
        load(bad)
    assert str(err.value) == (
        f"{str(bad)!r} is not a readable audio file (Format not recognised.); "
        "use wav, flac, ogg or mp3"
    )


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (os.fsdecode(b"lib/caf\xe9 live.wav"), "lib/caf\\xe9 live.wav"),
        (os.fsdecode(b"\xff\xfe/x"), "\\xff\\xfe/x"),
        ("caf\u00e9 \U0001f3b5.wav", "caf\u00e9 \U0001f3b5.wav"),
        ("lone \ud800", "lone \\ud800"),
        # Hostile review, issue 21: control characters reached logs and terminals raw.
        ("ctl\x1b[31mred\x07.wav", "ctl\\x1b[31mred\\x07.wav"),
        ("two\nlines\r.wav", "two\\x0alines\\x0d.wav"),
        ("del\x7f c1\x9b.wav", "del\\x7f c1\\x9b.wav"),
        ("rlo\u202evaw.exe", "rlo\\u202evaw.exe"),
        ("tab\there.wav", "tab\\x09here.wav"),
        ("nbsp\u00a0and\u3000ideographic spaces.wav", "nbsp\u00a0and\u3000ideographic spaces.wav"),
    ],
)
def test_printable_names_are_valid_text(name: str, shown: str) -> None:
    assert printable_name(name) == shown
    assert printable_name(Path(name)) == shown
    shown.encode("utf-8")  # never fails


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_load_mapped_gives_load_samples_in_a_map_of_an_unlinked_file(
    tmp_path: Path, channels: int
) -> None:
    rng = np.random.default_rng(channels)
    path = tmp_path / "song.wav"
    sf.write(path, 0.3 * rng.standard_normal((5000, channels)), 22050, subtype="PCM_16")
    folder = tmp_path / "cache"
    y, sr = load_mapped(path, folder, block=1024)  # blocks that do not divide the track
    want, want_sr = load(path)
    assert sr == want_sr == 22050 and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_array_equal(y, want)
    assert not y.flags.writeable
    assert list(folder.iterdir()) == []  # unlinked once mapped: nothing left behind
    assert isinstance(y.base, mmap.mmap) or isinstance(getattr(y.base, "base", None), mmap.mmap)


def test_a_file_that_ends_before_its_header_says_is_mapped_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header that promises more frames than the file holds (a recording cut
    short): the frames there are, in a map of their own size, never copied whole
    into the heap."""
    rng = np.random.default_rng(3)
    path = tmp_path / "song.wav"
    sf.write(path, 0.3 * rng.standard_normal((5000, 2)), 22050, subtype="PCM_16")
    want, _ = load(path)
    monkeypatch.setattr(sf.SoundFile, "frames", property(lambda f: 7000))
    folder = tmp_path / "cache"
    y, sr = load_mapped(path, folder, block=1024)
    monkeypatch.undo()
    assert sr == 22050 and y.shape == (2, 5000) and y.flags.c_contiguous
    np.testing.assert_array_equal(y, want)
    assert not y.flags.writeable
    assert list(folder.iterdir()) == []
    assert isinstance(y.base, mmap.mmap) or isinstance(getattr(y.base, "base", None), mmap.mmap)


def test_load_mapped_refuses_what_load_refuses(tmp_path: Path) -> None:
    bad = np.zeros((3000, 2), np.float32)
    bad[2500, 1] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, bad, 22050, subtype="FLOAT")
    with pytest.raises(AudioFileError) as mapped:
        load_mapped(path, tmp_path / "cache", block=1024)
    with pytest.raises(AudioFileError) as loaded:
        load(path)
    assert str(mapped.value) == str(loaded.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_load_mapped_writes_whole_blocks_through_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "song.wav"
    sf.write(path, 0.3 * rng.standard_normal((5000, 2)), 22050, subtype="FLOAT")
    real = os.pwrite

    def short(fd: int, data: bytes | memoryview, offset: int) -> int:
        return real(fd, data[:1000], offset)  # the kernel may write less than asked

    monkeypatch.setattr(os, "pwrite", short)
    y, _ = load_mapped(path, tmp_path / "cache", block=1024)
    monkeypatch.undo()
    np.testing.assert_array_equal(y, load(path)[0])


def test_load_mapped_on_a_full_disk_is_an_oserror_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk is an OSError the caller can fall back from (the loader decodes
    into memory then), not a SIGBUS in a store into the map; no file nor descriptor
    stays behind."""
    path = tmp_path / "song.wav"
    sf.write(path, np.zeros((5000, 2)), 22050, subtype="PCM_16")

    def full(fd: int, data: bytes | memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    gc.collect()  # what earlier tests left for the collector closes nothing in between
    fds = sorted(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError) as raised:
        load_mapped(path, tmp_path / "cache", block=1024)
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC
    assert list((tmp_path / "cache").iterdir()) == []
    assert sorted(os.listdir("/proc/self/fd")) == fds


class Counter:
    """A shared frame count as ``MappedDecode.share`` keeps it (``RawValue("q")``), with
    every value it was given."""

    def __init__(self) -> None:
        self.values: list[int] = []

    @property
    def value(self) -> int:
        return self.values[-1]

    @value.setter
    def value(self, v: int) -> None:
        self.values.append(int(v))


def _paced(monkeypatch: pytest.MonkeyPatch, gate: threading.Event, at: int) -> None:
    """The decode holds before landing ``at`` frames until ``gate`` is set."""
    real = MappedDecode._landed

    def landed(self: MappedDecode, frames: int) -> bool:
        if frames >= at:
            assert gate.wait(30), "the test never let the decode on"
        return real(self, frames)

    monkeypatch.setattr(MappedDecode, "_landed", landed)


def test_a_decode_shares_its_file_and_counts_the_frames_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process maps the descriptor and reads the frames the count says are in:
    the file's own samples, the count at every block, then all of them."""
    rng = np.random.default_rng(4)
    path = tmp_path / "song.wav"
    sf.write(path, 0.3 * rng.standard_normal((5000, 2)), 22050, subtype="FLOAT")
    want, _ = load(path)
    gate = threading.Event()
    _paced(monkeypatch, gate, 3072)
    decode = decode_mapped(path, tmp_path / "cache", block=1024)
    decode.wait(2048)
    counter = Counter()
    fd = decode.share(counter)
    assert fd is not None
    try:
        mapped = np.ndarray((2, 5000), np.float32, buffer=mmap.mmap(fd, 40000, prot=mmap.PROT_READ))
    finally:
        os.close(fd)
    assert counter.values == [2048]
    np.testing.assert_array_equal(mapped[:, :2048], want[:, :2048])
    gate.set()
    decode.result()
    assert counter.values == [2048, 3072, 4096, 5000, 5000]  # each block, then the end
    np.testing.assert_array_equal(mapped, want)
    late = Counter()  # shared once decoded: every frame in at once
    fd = decode.share(late)
    assert fd is not None and late.values == [5000]
    os.close(fd)


@pytest.mark.parametrize("end", ["short", "cancelled", "damaged"])
def test_a_shared_decode_that_stops_short_says_so_to_its_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    """-1 once the map will never be the track: the file ended before its header's
    count (the track is another, shorter map), the load was superseded, a block is
    damaged."""
    rng = np.random.default_rng(5)
    y = 0.3 * rng.standard_normal((5000, 2))
    if end == "damaged":
        y[4000, 0] = np.nan
    path = tmp_path / "song.wav"
    sf.write(path, y, 22050, subtype="FLOAT")
    if end == "short":
        monkeypatch.setattr(sf.SoundFile, "frames", property(lambda f: 7000))
    gate = threading.Event()
    _paced(monkeypatch, gate, 2048)
    decode = decode_mapped(path, tmp_path / "cache", block=1024)
    decode.wait(1024)
    counter = Counter()
    fd = decode.share(counter)
    assert fd is not None
    os.close(fd)
    if end == "cancelled":
        decode.cancel()
    gate.set()
    with contextlib.suppress(AudioFileError):
        decode.result()
    landed = {"short": [1024, 2048, 3072, 4096, 5000], "cancelled": [1024, 2048]}
    assert counter.values == [*landed.get(end, [1024, 2048, 3072]), -1]
    assert decode.stopped_short and decode.share(Counter()) is None


def test_a_decode_lowers_its_own_threads_priority_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once asked, the decode's thread takes the niceness from its next block; the
    thread that asked keeps its own."""
    path = tmp_path / "song.wav"
    sf.write(path, np.zeros((5000, 2)), 22050, subtype="FLOAT")
    gate = threading.Event()
    _paced(monkeypatch, gate, 2048)
    niceness: list[int] = []
    real = MappedDecode._landed

    def landed(self: MappedDecode, frames: int) -> bool:
        ok = real(self, frames)
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return ok

    monkeypatch.setattr(MappedDecode, "_landed", landed)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    decode = decode_mapped(path, tmp_path / "cache", block=1024)
    decode.wait(1024)
    decode.lower_priority(mine + 5)
    gate.set()
    decode.result()
    assert niceness[0] == mine and niceness[-1] == mine + 5
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_a_decode_starts_with_a_short_block_and_doubles_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A track's first seconds are in after a block of FIRST_MAPPED_BLOCK frames (a
    whole block of an MP3 took 40 ms before its first sound); the blocks double from
    there up to the decode's block, and every frame is the file's."""
    path = tmp_path / "song.flac"
    rng = np.random.default_rng(7)
    frames = FIRST_MAPPED_BLOCK * 11 + 321
    sf.write(path, 0.3 * rng.standard_normal((frames, 2)), 8000, subtype="PCM_24")
    landed: list[int] = []
    real_landed = MappedDecode._landed

    def landed_at(self: MappedDecode, at: int) -> bool:
        landed.append(at)
        return real_landed(self, at)

    monkeypatch.setattr(MappedDecode, "_landed", landed_at)
    decode = decode_mapped(path, tmp_path, block=FIRST_MAPPED_BLOCK * 4)
    np.testing.assert_array_equal(decode.result(), load(path)[0])
    steps = [FIRST_MAPPED_BLOCK * n for n in (1, 2, 4, 4)]
    assert np.diff([0, *landed]).tolist() == [*steps, frames - sum(steps)]
    landed.clear()
    decode_mapped(path, tmp_path, block=1000).result()  # a decode's block is the most
    assert np.diff([0, *landed]).tolist() == [1000] * (frames // 1000) + [frames % 1000]


def test_frames_decoded_before_damage_are_given_however_soon_the_decode_failed(
    tmp_path: Path,
) -> None:
    """The daemon's first track plays from its first second even when the decode
    reached damage further in before anyone waited (a busy machine: the wait came
    late, and raised); the damage is the result's, and frames past it are not given."""
    rng = np.random.default_rng(6)
    y = 0.3 * rng.standard_normal((5000, 2)).astype(np.float32)
    y[4000, 0] = np.nan
    path = tmp_path / "song.wav"
    sf.write(path, y, 22050, subtype="FLOAT")
    decode = decode_mapped(path, tmp_path / "cache", block=1024)
    reason = f"'{path}': 1 samples are NaN or infinite; re-export the file"
    with pytest.raises(AudioFileError, match=f"^{re.escape(reason)}$"):
        decode.result()  # the decode failed before the waits below
    assert decode.wait(1024) == 3072  # the blocks before the damaged one
    np.testing.assert_array_equal(decode.audio[:, :3072], y[:3072].T)
    with pytest.raises(AudioFileError, match=f"^{re.escape(reason)}$"):
        decode.wait(3073)


def test_a_failed_decode_goes_with_its_last_reference_not_a_collection(tmp_path: Path) -> None:
    """Its stored error holds no frame: raised again, it is a copy, so neither the
    decode nor the map it keeps waits for the garbage collector (a decode frozen with
    the heap at start would never be freed), nor does the scratch file's descriptor."""
    rng = np.random.default_rng(7)
    y = 0.3 * rng.standard_normal((5000, 2)).astype(np.float32)
    y[4000, 0] = np.nan
    path = tmp_path / "song.wav"
    sf.write(path, y, 22050, subtype="FLOAT")
    fds = sorted(os.listdir("/proc/self/fd"))
    gc.collect()
    gc.disable()
    try:
        decode = decode_mapped(path, tmp_path / "cache", block=1024)
        with pytest.raises(AudioFileError):
            decode.result()
        assert decode.wait(1024) == 3072  # the map with frames in is kept
        with pytest.raises(AudioFileError):
            decode.wait(3073)
        gone = weakref.ref(decode)
        del decode
        deadline = time.monotonic() + 10.0  # the decode's thread lets go as it ends
        while gone() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gone() is None
        assert sorted(os.listdir("/proc/self/fd")) == fds
    finally:
        gc.enable()
