"""The files a separation is written to (``daemon/outputs.py``): safe names, the modes
the umask gives, a set of channel files written all or nothing, a full disk as one line."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, tone_mix
from stemdeck.core.audiofile import files as audio_files
from stemdeck.core.errors import AudioFileError
from stemdeck.daemon.outputs import (
    ChannelFiles,
    output_name,
    output_names,
    output_path,
    write_channel,
)

NAMES = ["drums", "bass", "other", "vocals"]


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mount_point(path: Path) -> Path:
    p = path.resolve()
    while not os.path.ismount(p):
        p = p.parent
    return p


def disk_full(folder: Path) -> str:
    return (
        f"cannot write {str(folder)!r}: No space left on device (the disk at "
        f"{str(mount_point(folder.parent))!r} is full; free some space on it or choose "
        "another output folder)"
    )


def failing_on(call: int, exc: BaseException):
    """A channel writer that writes like the real one and raises ``exc`` on its
    ``call``-th file (1-based)."""
    calls = []

    def write(path: Path, audio: np.ndarray, sr: int, fmt: str) -> None:
        calls.append(path)
        if len(calls) == call:
            raise exc
        write_channel(path, audio, sr, fmt)

    return write


def write_set(folder: Path, channels: np.ndarray, **kwargs) -> ChannelFiles:
    with ChannelFiles(folder, SR, "wav", **kwargs) as files:
        for i, (name, audio) in enumerate(zip(NAMES, channels, strict=True)):
            files(i, name, audio)
    return files


def channels(seed: int) -> np.ndarray:
    return np.stack([tone_mix(0.5, seed=seed + k) * 0.5 for k in range(4)])


# -- names ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "suffix", "expected"),
    [
        ("my song", "", "my song"),
        ("drums", ".wav", "drums.wav"),
        (os.fsdecode(b"caf\xe9 live"), "", "caf_ live"),
        ("a/b\x00c\x1b[31m\x85", ".wav", "a_b_c_[31m_.wav"),
        (".hidden", "", "_hidden"),
        ("..", "", "__"),
        ("", ".wav", "_.wav"),
        ("\U0001f3b5" * 62, ".stem.mp4", "\U0001f3b5" * 61 + ".stem.mp4"),
        ("x" * 60_000, ".flac", "x" * 250 + ".flac"),
        # Hostile review, issue 21: what FAT and exFAT (a USB stick) refuse.
        ('What? "Live": a*b <c> d\\e|f', ".wav", "What_ _Live__ a_b _c_ d_e_f.wav"),
        ("Song. ", "", "Song__"),
        ("Song.", ".wav", "Song..wav"),
        ("...", "", "___"),
    ],
)
def test_output_names_are_safe_on_any_file_system(name: str, suffix: str, expected: str) -> None:
    got = output_name(name, suffix=suffix)
    assert got == expected
    assert len(got.encode("utf-8")) <= 255


def test_output_names_are_unique_in_their_folder() -> None:
    assert output_names(["Drums", "drums", "a/b", "a_b"], suffix=".wav") == [
        "Drums.wav",
        "drums-2.wav",
        "a_b.wav",
        "a_b-2.wav",
    ]
    long = output_names(["x" * 300] * 3, suffix=".wav")
    assert long == ["x" * 251 + ".wav", "x" * 249 + "-2.wav", "x" * 249 + "-3.wav"]
    assert output_path(Path("out"), [os.fsdecode(b"\xff dir"), ".song"], suffix=".stem.mp4") == (
        Path("out") / "_ dir" / "_song.stem.mp4"
    )


# -- modes --------------------------------------------------------------------------------
def test_files_and_folder_get_the_mode_the_umask_gives(tmp_path: Path, umask_022) -> None:
    """tempfile made them 0600, and the mode survived the rename."""
    folder = tmp_path / "out" / "song"
    files = write_set(folder, channels(1))
    assert files.written == [folder / f"{n}.wav" for n in NAMES]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.wav" for n in NAMES)
    assert [oct(p.stat().st_mode & 0o777) for p in files.written] == ["0o644"] * 4
    assert oct(folder.stat().st_mode & 0o777) == "0o755"


@pytest.mark.parametrize(
    ("umask", "file", "folder"), [(0o002, 0o664, 0o775), (0o077, 0o600, 0o700)]
)
def test_every_umask_is_followed(tmp_path: Path, umask: int, file: int, folder: int) -> None:
    """Not a fixed 0644: what the umask gives, whatever it is."""
    old = os.umask(umask)
    try:
        files = write_set(tmp_path / "song", channels(1))
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in files.written] == [file] * 4
    assert (tmp_path / "song").stat().st_mode & 0o777 == folder


def test_a_killed_writes_leftovers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    """Hostile review, issue 21: a kill -9 mid-set left a hidden partial set forever."""
    stale = tmp_path / ".song-17c8c480.part"
    stale.mkdir()
    (stale / "drums.wav").write_bytes(b"half a file")
    fresh = tmp_path / ".song-0123abcd.part"  # another process writing right now
    fresh.mkdir()
    lookalike = tmp_path / ".song-notours.part"
    lookalike.mkdir()
    hour_ago = time.time() - 3601
    for p in (stale, lookalike):
        os.utime(p, (hour_ago, hour_ago))
    write_set(tmp_path / "song", channels(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".song-0123abcd.part", ".song-notours.part", "song"]
    )


# -- all or nothing -----------------------------------------------------------------------
def test_a_set_that_fails_on_its_third_file_leaves_no_folder(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    writer = failing_on(3, AudioFileError("cannot write: the encoder failed"))
    with pytest.raises(AudioFileError) as err:
        write_set(folder, channels(1), write=writer)
    assert str(err.value) == "cannot write: the encoder failed"
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary folder


def test_a_set_that_fails_leaves_the_older_set_as_it_was(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    write_set(folder, channels(1))
    (folder / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    writer = failing_on(3, AudioFileError("cannot write: the encoder failed"))
    with pytest.raises(AudioFileError):
        write_set(folder, channels(7), write=writer)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["song"]


def test_a_new_set_replaces_the_older_one_and_keeps_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    write_set(folder, channels(1))
    (folder / "notes.txt").write_text("mine")
    new = channels(7)
    write_set(folder, new)
    for name, audio in zip(NAMES, new, strict=True):
        assert np.array_equal(sf.read(folder / f"{name}.wav", dtype="float32")[0].T, audio)
    assert (folder / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["song"]


def test_ctrl_c_during_a_set_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    with pytest.raises(KeyboardInterrupt), ChannelFiles(folder, SR, "wav") as files:
        files(0, "drums", channels(1)[0])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_naming_the_disk_and_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    write_set(folder, channels(1))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    writer = failing_on(3, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(AudioFileError) as err:
        write_set(folder, channels(7), write=writer)
    assert str(err.value) == disk_full(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["song"]


def test_libsndfile_on_a_full_disk_is_taken_for_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libsndfile says only "System error" when the disk is full: a failed write the
    disk's free space could not have held is taken for ENOSPC, unless the folder is
    missing (the hostile review's finding: that was called a full disk too)."""
    audio = channels(1)[0]
    gone = tmp_path / "gone" / "drums.wav"  # fails: the folder is missing
    need: list[int] = []

    def short_of(folder: Path, size: int) -> bool:
        need.append(size)
        return True

    monkeypatch.setattr(audio_files, "_short_of", short_of)
    with pytest.raises(AudioFileError) as missing:
        audio_files.write(gone, audio, SR)
    assert str(missing.value) == f"cannot write {str(gone)!r}: its folder does not exist"
    assert need == []
    # A write that fails in a folder that is there, on a disk too full for it.
    path = tmp_path / "drums.wav"

    def fails(*args: object, **kwargs: object) -> None:
        raise sf.LibsndfileError(0, "System error")

    monkeypatch.setattr(audio_files.sf, "write", fails)
    with pytest.raises(OSError) as err:
        audio_files.write(path, audio, SR)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(path))
    assert need == [4 * audio.size + 4096]
