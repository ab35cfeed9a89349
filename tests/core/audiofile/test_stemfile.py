"""NI Stems files: stemdeck writes them, reads them back, and reads other tools' files.

Round trips are checked twice: with stemdeck's reader and with PyAV alone (what
Mixxx does through FFmpeg), against the uncompressed stems. Real files written
by other tools (NI's own, MUSDB18's) are read where they are on the machine:
``$STEMDECK_STEMFILES`` or ``~/.cache/stemdeck-data/stemfiles``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import struct
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from mp4_helpers import mapped_base, track_flags, with_stem_box

from stemdeck.core.audiofile.decode import map_stem_file, read_stem_file
from stemdeck.core.audiofile.files import load, probe_audio
from stemdeck.core.audiofile.manifest import (
    NI_STEMS,
    display_name,
    make_manifest,
    manifest_problems,
)
from stemdeck.core.audiofile.mp4 import read_stem_box
from stemdeck.core.audiofile.roles import channel_keys
from stemdeck.core.audiofile.stemfile import probe
from stemdeck.core.audiofile.stemfile_write import write_stem_file
from stemdeck.core.audiofile.tags import Tags
from stemdeck.core.errors import AudioFileError, ParameterError

SR = 44100
NI_ORDER = [n for n, _ in NI_STEMS]
# A 1x1 PNG: artwork that must come back byte for byte.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201a5d2b1c70000000049454e44ae426082"
)
DATA = Path(
    os.environ.get("STEMDECK_STEMFILES", Path.home() / ".cache" / "stemdeck-data" / "stemfiles")
)


@cache
def _stems() -> tuple[np.ndarray, np.ndarray]:
    """Four seconds of the demo where all four stems play: (mix, stems in NI order)."""
    from stemdeck.core.material.demo import demo_track

    demo = demo_track(sr=SR, seconds=30)
    part = slice(8 * SR, 12 * SR - 123)  # not a whole number of codec frames
    stems = np.stack([demo.stems[n][:, part] for n in NI_ORDER]).astype(np.float32)
    return np.ascontiguousarray(stems.sum(axis=0)), np.ascontiguousarray(stems)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stemfiles")
    mix, stems = _stems()
    tags = Tags("Falcon Demo", "stemdeck", "Tests", PNG, "image/png")
    out = {}
    for codec in ("aac", "alac"):
        path = folder / f"demo-{codec}.stem.mp4"
        write_stem_file(path, mix, stems, SR, codec=codec, tags=tags)
        out[codec] = path
    return out


def _decode_with_pyav(path: Path) -> list[np.ndarray]:
    """Every audio stream as float32 (channels, samples), by PyAV alone, trimmed to the
    duration the container declares (as Mixxx does)."""
    out = []
    with av.open(str(path)) as container:
        count = len(container.streams.audio)
    for i in range(count):
        with av.open(str(path)) as container:
            stream = container.streams.audio[i]
            frames = []
            for frame in container.decode(stream):
                a = frame.to_ndarray()
                if frame.format.name == "s32p":
                    a = a.astype(np.float32) / 2.0**31
                frames.append(a)
            y = np.concatenate(frames, axis=1)
            assert stream.duration is not None and stream.time_base is not None
            n = round(stream.duration * stream.time_base * stream.codec_context.sample_rate)
            out.append(y[:, :n])
    return out


def _snr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((est - ref) ** 2)))


def _int24(y: np.ndarray) -> np.ndarray:
    return (np.clip(np.round(y * 2.0**23), -(2**23), 2**23 - 1) / 2.0**23).astype(np.float32)


def _mixxx_accepts(manifest: object) -> list[str]:
    """The checks Mixxx's stem reader (src/track/steminfoimporter.cpp) makes, written
    out independently of stemdeck's: version an integer >= 1, ``stems`` a list of
    objects, each name non-empty and each colour one QColor parses (#RRGGBB)."""
    if not isinstance(manifest, dict):
        return ["not an object"]
    bad = []
    v = manifest.get("version")
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        bad.append("version")
    stems = manifest.get("stems")
    if not isinstance(stems, list) or not all(isinstance(s, dict) for s in stems):
        return [*bad, "stems"]
    for s in stems:
        if not isinstance(s.get("name"), str) or not s["name"]:
            bad.append("name")
        if not isinstance(s.get("color"), str) or not re.fullmatch(r"#[0-9a-fA-F]{6}", s["color"]):
            bad.append("color")
    return bad


# -- the round trip --------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["aac", "alac"])
def test_round_trip_tracks_and_flags(written: dict[str, Path], codec: str) -> None:
    path = written[codec]
    with av.open(str(path)) as container:
        audio = container.streams.audio
        assert len(audio) == 5
        assert [s.codec_context.name for s in audio] == [codec] * 5
        assert [s.codec_context.channels for s in audio] == [2] * 5
        assert [s.codec_context.sample_rate for s in audio] == [SR] * 5
        default = [bool(s.disposition & av.stream.Disposition.default) for s in audio]
        assert default == [True, False, False, False, False]
    # tkhd: the master enabled and in the movie, the stems in the movie only.
    assert track_flags(path) == [3, 2, 2, 2, 2]


@pytest.mark.parametrize("codec", ["aac", "alac"])
def test_round_trip_manifest_meets_ni_and_mixxx_rules(written: dict[str, Path], codec: str):
    manifest = json.loads(read_stem_box(written[codec]) or b"")
    assert manifest_problems(manifest, n_stems=4) == []
    assert _mixxx_accepts(manifest) == []
    assert manifest["version"] == 1
    assert [s["name"] for s in manifest["stems"]] == ["Drums", "Bass", "Other", "Vocals"]
    assert [s["color"] for s in manifest["stems"]] == [c for _, c in NI_STEMS]
    dsp = manifest["mastering_dsp"]
    assert dsp["compressor"]["enabled"] is False
    assert dsp["limiter"]["enabled"] is False


def test_round_trip_aac_snr_and_lengths(written: dict[str, Path]) -> None:
    mix, stems = _stems()
    n = mix.shape[1]
    by_pyav = _decode_with_pyav(written["aac"])
    assert [y.shape for y in by_pyav] == [(2, n)] * 5
    ours = read_stem_file(written["aac"])
    assert ours.stems.shape == (4, 2, n)
    assert ours.master is not None and ours.master.shape == (2, n)  # decoded by default
    for k, name in enumerate(NI_ORDER):
        snr_pyav = _snr(stems[k], by_pyav[k + 1])
        snr_ours = _snr(stems[k], ours.stems[k])
        assert snr_pyav >= 20.0, (name, snr_pyav)
        assert snr_ours == pytest.approx(snr_pyav, abs=1e-3), name
    assert _snr(mix, by_pyav[0]) >= 20.0
    # Sample alignment: a shift of one sample would cost far more than this.
    assert _snr(stems[0], np.roll(ours.stems[0], 1, axis=1)) < _snr(stems[0], ours.stems[0]) - 3


def test_round_trip_alac_is_bit_exact(written: dict[str, Path]) -> None:
    mix, stems = _stems()
    by_pyav = _decode_with_pyav(written["alac"])
    assert np.array_equal(by_pyav[0], _int24(mix))
    for k in range(4):
        assert np.array_equal(by_pyav[k + 1], _int24(stems[k]))
    ours = read_stem_file(written["alac"])
    assert np.array_equal(ours.stems, _int24(stems))
    assert ours.master is not None and np.array_equal(ours.master, _int24(mix))
    assert ours.names == ["Drums", "Bass", "Other", "Vocals"]
    assert ours.colours == [c for _, c in NI_STEMS]
    stems_only = read_stem_file(written["alac"], master=False)
    assert stems_only.master is None
    assert np.array_equal(stems_only.stems, ours.stems)


def test_round_trip_tags_and_artwork(written: dict[str, Path]) -> None:
    tags = read_stem_file(written["aac"]).tags
    assert tags == Tags("Falcon Demo", "stemdeck", "Tests", PNG, "image/png")
    with av.open(str(written["aac"])) as container:
        assert container.metadata["title"] == "Falcon Demo"
        assert container.metadata["artist"] == "stemdeck"
        assert container.metadata["album"] == "Tests"


def test_reading_holds_little_more_than_the_stems(tmp_path: Path) -> None:
    """Decoding frame by frame into lists, then concatenating and stacking, peaked at
    3.25 times the stems' size here (1.2 GB of RSS for a 3-minute file); one buffer
    per stream and one copy into the mixer's array stay at twice."""
    import tracemalloc

    _, stems = _stems()
    long = np.tile(stems, (1, 1, 5))  # 20 s
    path = tmp_path / "long.stem.mp4"
    write_stem_file(path, long.sum(axis=0), long, SR, codec="alac")
    tracemalloc.start()
    try:
        f = read_stem_file(path, master=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f.stems.shape == long.shape
    assert peak < 2.2 * f.stems.nbytes, peak / f.stems.nbytes


@pytest.mark.parametrize("codec", ["aac", "alac"])
def test_mapped_stems_are_the_decoded_ones_in_the_mixers_order_off_the_heap(
    tmp_path: Path, codec: str
) -> None:
    """A stem file decoded into a map of a scratch file: the same samples, bit for bit,
    as decoded into memory, arranged as the mixer plays them (vocals first in the file
    here), read-only, and the heap holds a block of each stem's rows while they decode
    (a 10-minute file's stems took 2.4 GB of the daemon's memory)."""
    import tracemalloc

    _, stems = _stems()
    long = np.tile(stems[[3, 0, 1, 2]], (1, 1, 5))  # 20 s, vocals first
    path = tmp_path / f"long-{codec}.stem.mp4"
    names = ["Vox", "Drums", "Bass", "Other"]
    colours = ["#000001", "#000002", "#000003", "#000004"]
    write_stem_file(path, long.sum(axis=0), long, SR, names=names, colours=colours, codec=codec)
    whole = read_stem_file(path, master=False)
    whole.arrange()
    tracemalloc.start()
    try:
        f = map_stem_file(path, tmp_path / "scratch")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f.names == ["Drums", "Bass", "Other", "Vox"] == whole.names
    assert f.colours == ["#000002", "#000003", "#000004", "#000001"]
    assert (f.sr, f.master, f.tags) == (SR, None, whole.tags)
    assert f.stems.shape == whole.stems.shape == long.shape
    assert np.array_equal(f.stems, whole.stems)
    assert mapped_base(f.stems) is not None and not f.stems.flags.writeable
    assert peak < 6 * 2**20 < f.stems.nbytes / 4, peak  # the rows' blocks, whatever the length
    assert f.arrange().identity  # arranged already: nothing to move in a read-only map
    assert list((tmp_path / "scratch").iterdir()) == []  # unlinked: gone with the map


def test_a_stem_declaring_a_huge_length_makes_no_huge_scratch_file(
    written: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A forged header: one stem declares 10^12 samples. The stems are cut to the
    shortest, so no row holds more than the shortest declares (the scratch file was
    sized by the longest): the same stems as decoded in full, and a warning."""

    from stemdeck.core.audiofile import decode as decode_module

    whole = read_stem_file(written["alac"], master=False)
    real = decode_module.declared_length
    forged = probe(written["alac"]).streams[3]  # type: ignore[union-attr]

    def declared(stream: Any, rate: int) -> int | None:
        length = real(stream, rate)
        return 10**12 if stream.index == forged and length else length

    monkeypatch.setattr(decode_module, "declared_length", declared)
    with caplog.at_level(logging.WARNING):
        f = decode_module.map_stem_file(written["alac"], tmp_path)
    assert np.array_equal(f.stems, whole.stems)
    base = mapped_base(f.stems)
    assert base is not None and len(base) <= f.stems.nbytes + 4 * 4 * 2 * 2048
    assert [r.getMessage() for r in caplog.records] == [
        f"demo-alac.stem.mp4: stems differ in length by {10**12 - whole.stems.shape[2]} "
        "samples; cut to the shortest"
    ]


def test_a_stem_decoding_wider_than_its_header_says_is_decoded_in_memory_then_mapped(
    written: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HE-AAC v2 declares mono and decodes to stereo (parametric stereo): rows made
    for the header's one channel cannot take it, and the file was refused where
    read_stem_file reads it. It is decoded as in memory, then mapped."""
    from stemdeck.core.audiofile import decode as decode_module

    monkeypatch.setattr(decode_module, "_header_channels", lambda stream: 1)
    _mapped_as_read_whole(written["alac"], tmp_path, monkeypatch)


def _mapped_as_read_whole(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``path`` mapped (with the test's patches), then read whole without them: the
    same stems, and the mapped ones a read-only memory map."""
    from stemdeck.core.audiofile.decode import map_stem_file as mapped

    f = mapped(path, tmp_path)
    monkeypatch.undo()
    whole = read_stem_file(path, master=False)
    assert np.array_equal(f.stems, whole.stems)
    assert mapped_base(f.stems) is not None and not f.stems.flags.writeable


def test_mapped_mono_stems_play_on_both_sides(tmp_path: Path) -> None:
    mix, stems = _stems()
    path = tmp_path / "mono.stem.mp4"
    write_stem_file(path, mix[:1], stems[:, :1], SR, codec="alac")
    f = map_stem_file(path, tmp_path)
    assert f.stems.shape == (4, 2, mix.shape[1])
    assert np.array_equal(f.stems[:, 0], f.stems[:, 1])
    assert np.array_equal(f.stems[:, 0], _int24(stems[:, 0]))


def test_a_stem_file_declaring_no_length_is_decoded_whole_then_mapped(
    written: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stemdeck.core.audiofile import decode

    monkeypatch.setattr(decode, "declared_length", lambda stream, rate: None)
    _mapped_as_read_whole(written["alac"], tmp_path, monkeypatch)


def test_two_and_three_stems(tmp_path: Path) -> None:
    mix, stems = _stems()
    for k in (2, 3):
        path = tmp_path / f"k{k}.stem.m4a"
        write_stem_file(
            path,
            mix,
            stems[:k],
            SR,
            names=["Beat", "Low", "Up"][:k],
            colours=["#112233", "#445566", "#778899"][:k],
            codec="alac",
        )
        f = read_stem_file(path)
        assert f.names == ["Beat", "Low", "Up"][:k]
        assert f.colours == ["#112233", "#445566", "#778899"][:k]
        assert np.array_equal(f.stems, _int24(stems[:k]))
        assert track_flags(path) == [3] + [2] * k


def test_mono_track_is_written_as_stereo(tmp_path: Path) -> None:
    mix, stems = _stems()
    path = tmp_path / "mono.stem.mp4"
    write_stem_file(path, mix[:1], stems[:, :1], SR, codec="alac")
    f = read_stem_file(path)
    assert f.stems.shape == (4, 2, mix.shape[1])
    assert np.array_equal(f.stems[:, 0], f.stems[:, 1])
    assert np.array_equal(f.stems[:, 0], _int24(stems[:, 0]))


def test_resampled_on_read(written: dict[str, Path]) -> None:
    f = read_stem_file(written["alac"], sr=48000)
    assert f.sr == 48000
    assert f.stems.shape[2] == round(_stems()[0].shape[1] * 48000 / SR)


def test_writer_refuses_bad_parameters(tmp_path: Path) -> None:
    mix, stems = _stems()
    path = tmp_path / "x.stem.mp4"
    with pytest.raises(ParameterError, match="unknown codec 'mp3'"):
        write_stem_file(path, mix, stems, SR, codec="mp3")
    with pytest.raises(ParameterError, match="AAC cannot store 12345 Hz"):
        write_stem_file(path, mix, stems, 12345)
    with pytest.raises(ParameterError, match=r"stems must be \(2..4"):
        write_stem_file(path, mix, stems[:1], SR)
    with pytest.raises(ParameterError, match="colour must be #RRGGBB, got 'red'"):
        write_stem_file(path, mix, stems[:2], SR, names=["a", "b"], colours=["red", "#000000"])
    assert list(tmp_path.iterdir()) == []


def test_tracks_are_interleaved_in_time_order(tmp_path: Path) -> None:
    # A player streams the file front to back: the five tracks must take turns in it,
    # never one track for many seconds and then the next. (The muxer only reorders
    # within a 10 s window, so this needs a longer file than the others.)
    from stemdeck.core.material.demo import demo_track

    demo = demo_track(sr=SR, seconds=25)
    stems = np.stack([demo.stems[n] for n in NI_ORDER]).astype(np.float32)
    path = tmp_path / "long.stem.mp4"
    write_stem_file(path, stems.sum(axis=0), stems, SR, codec="alac")
    with av.open(str(path)) as container:
        # in file order (the demuxer itself reads out of order to follow time)
        seen = sorted(
            (p.pos, p.stream.index, float(p.dts * p.time_base))
            for p in container.demux()
            if p.dts is not None and p.size
        )
    assert sorted({k for _, k, _ in seen}) == [0, 1, 2, 3, 4]
    latest = -1.0
    for _, _, t in seen:
        assert t > latest - 1.0  # the muxer groups about half a second per chunk
        latest = max(latest, t)
    assert latest > 23.9


def test_progress_rises_to_one(tmp_path: Path) -> None:
    mix, stems = _stems()
    seen: list[float] = []
    write_stem_file(tmp_path / "x.stem.mp4", mix, stems, SR, codec="alac", progress=seen.append)
    assert seen[-1] == 1.0
    assert all(0.0 <= a <= b <= 1.0 for a, b in itertools.pairwise(seen))


def test_write_is_atomic(tmp_path: Path) -> None:
    mix, stems = _stems()
    path = tmp_path / "x.stem.mp4"
    path.write_bytes(b"the previous file")

    def interrupt(fraction: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_stem_file(path, mix, stems, SR, progress=interrupt)
    assert [p.name for p in tmp_path.iterdir()] == ["x.stem.mp4"]
    assert path.read_bytes() == b"the previous file"


def test_full_disk_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from stemdeck.core.audiofile import stemfile_write

    mix, stems = _stems()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stemfile_write, "rewrite_moov", full)
    with pytest.raises(AudioFileError, match=r"cannot write .*No space left on device"):
        write_stem_file(tmp_path / "x.stem.mp4", mix, stems, SR, codec="alac")
    assert list(tmp_path.iterdir()) == []


def test_write_into_missing_folder_is_one_error(tmp_path: Path) -> None:
    mix, stems = _stems()
    with pytest.raises(AudioFileError, match=r"cannot write .*No such file or directory"):
        write_stem_file(tmp_path / "nope" / "x.stem.mp4", mix, stems, SR)


# -- manifests and names ---------------------------------------------------------------
def test_manifest_problems_name_each_rule() -> None:
    good = make_manifest(["a", "b"], ["#000000", "#FFFFFF"])
    assert manifest_problems(good, n_stems=2) == []
    assert manifest_problems(good, n_stems=4) == ["2 stems named for 4 stem tracks"]
    assert manifest_problems({**good, "version": 0}) == ["version must be an integer >= 1, got 0"]
    assert manifest_problems({**good, "version": True}) == [
        "version must be an integer >= 1, got True"
    ]
    bad_stem = {**good, "stems": [{"name": "", "color": "#12345"}]}
    assert manifest_problems(bad_stem) == [
        "stem 1 has no name: ''",
        "stem 1 colour must be #RRGGBB, got '#12345'",
    ]
    no_dsp = {k: v for k, v in good.items() if k != "mastering_dsp"}
    assert manifest_problems(no_dsp) == ["mastering_dsp must be an object, got None"]
    assert manifest_problems([1]) == ["the manifest is a JSON list, not an object"]


def test_channel_keys_are_osc_safe_and_unique() -> None:
    assert channel_keys(["Drums", "Bass", "Other", "Vox"]) == ["drums", "bass", "other", "vox"]
    assert channel_keys(["Lead Vox!", "lead vox", "123", "  "]) == [
        "lead-vox",
        "lead-vox-2",
        "stem3",
        "stem4",
    ]


def test_channel_keys_are_capped_unique_and_safe_as_file_names() -> None:
    names = [
        "x" * 60_000,
        "x" * 60_000 + "y",
        "../a/b",
        "\x00\n\x1b[31mred",
        "\U0001f3b5" * 100,  # 400 bytes of emoji: nothing of it is a key
        ".",
        "-" * 40 + "a" * 40,
        "A" * 31 + "!b",
    ]
    assert channel_keys(names) == [
        "x" * 32,
        "x" * 30 + "-2",
        "a-b",
        "31mred",
        "stem5",
        "stem6",
        "a" * 32,
        "a" * 31,
    ]
    assert channel_keys(["y" * 40] * 11) == (
        ["y" * 32]
        + [f"{'y' * 30}-{n}" for n in range(2, 10)]
        + ["y" * 29 + "-10", "y" * 29 + "-11"]
    )


def test_display_names_are_printable_and_capped() -> None:
    assert display_name("x" * 60_000) == "x" * 63 + "\u2026"
    assert display_name("  Lead\x00Vox\n ") == "Lead Vox"
    assert display_name("\x1b[31mred\x9b") == "[31mred"
    assert display_name("bad\ud800") == "bad\ufffd"
    assert display_name("\x00\x01\t") == ""
    assert display_name("Vox") == "Vox"
    assert display_name("a" * 62 + " " + "b" * 10) == "a" * 62 + "\u2026"
    # Hostile review, issue 21: a right-to-left override reversed what followed it.
    assert display_name("Vox\u202e\u2066lead\u2069") == "Voxlead"
    assert display_name("\U0001f469\u200d\U0001f3a4 Vox") == "\U0001f469\u200d\U0001f3a4 Vox"


# -- hostile and odd files -------------------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def _box_offset(data: bytes, kind: bytes) -> int:
    """Offset of the header of the (only) box of this type in the moov at the end."""
    if kind == b"stem":
        return data.rindex(b"stem{") - 4  # not the word "stems" inside the JSON
    return data.rindex(kind) - 4


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fails a test that would hang instead of answering."""

    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError("stem file reader hung")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_truncated_files_are_one_clear_error(written: dict[str, Path], tmp_path: Path, alarm):
    data = written["aac"].read_bytes()
    for cut in (0, 7, 100, len(data) // 2, len(data) - 2000, len(data) - 1):
        path = tmp_path / f"cut{cut}.stem.mp4"
        path.write_bytes(data[:cut])
        for read in (read_stem_file, lambda p: map_stem_file(p, tmp_path / "scratch")):
            with pytest.raises(AudioFileError) as err:
                read(path)
            message = str(err.value)
            assert "\n" not in message
            assert str(path) in message


def test_broken_stem_box(written: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(written["alac"].read_bytes())
    i = _box_offset(bytes(data), b"stem") + 8
    data[i] = ord("X")  # '{' -> 'X': not JSON any more
    path = tmp_path / "badjson.stem.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioFileError, match=r"broken stem box \(not JSON"):
        read_stem_file(path)


def _with_manifest(src: Path, dst: Path, manifest: object) -> Path:
    return with_stem_box(src, dst, json.dumps(manifest).encode())


def test_manifest_with_a_missing_stream_or_bad_version(written: dict[str, Path], tmp_path):
    five = make_manifest(list("abcde"), ["#000000"] * 5)
    path = _with_manifest(written["alac"], tmp_path / "five.stem.mp4", five)
    with pytest.raises(AudioFileError, match="names 5 stems but the file has 4 stem streams"):
        read_stem_file(path)
    old = {**make_manifest(list("abcd"), ["#000000"] * 4), "version": 0}
    path = _with_manifest(written["alac"], tmp_path / "v0.stem.mp4", old)
    with pytest.raises(AudioFileError, match=r"broken stem box \(version 0, expected >= 1\)"):
        read_stem_file(path)
    # Names or colours missing: Mixxx's defaults, as a warning, not an error.
    loose = {"version": 1, "stems": [{"name": "Kick"}, {"color": "#010203"}, {}, {}]}
    path = _with_manifest(written["alac"], tmp_path / "loose.stem.mp4", loose)
    f = read_stem_file(path)
    assert f.names == ["Kick", "stem2", "stem3", "stem4"]
    assert f.colours == ["#009E73", "#010203", "#CC79A7", "#56B4E9"]


def test_a_manifest_version_of_4000_digits_is_one_short_line(
    written: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostile review, issue 21: the version was logged whole, 4 KB a line."""
    big = int("9" * 4000)
    newer = {**make_manifest(list("abcd"), ["#000000"] * 4), "version": big}
    path = _with_manifest(written["alac"], tmp_path / "v-big.stem.mp4", newer)
    with caplog.at_level(logging.WARNING, logger="stemdeck.core.audiofile.manifest"):
        probe(path)
        probe(path)  # a load probes up to three times: one warning, not three
        read_stem_file(path)
    warning = (
        f"{str(path)!r}: stem manifest version {'9' * 37}... is newer than 1; reading it anyway"
    )
    assert [r.getMessage() for r in caplog.records] == [warning]
    # Written again (another version of the file): said again, once.
    caplog.clear()
    _with_manifest(written["alac"], path, {**newer, "stems": newer["stems"][::-1]})
    with caplog.at_level(logging.WARNING, logger="stemdeck.core.audiofile.manifest"):
        probe(path)
        probe(path)
    assert [r.getMessage() for r in caplog.records] == [warning]
    older = {**newer, "version": -big}
    path = _with_manifest(written["alac"], tmp_path / "v-neg.stem.mp4", older)
    with pytest.raises(AudioFileError) as err:
        probe(path)
    assert str(err.value) == (
        f"{str(path)!r}: broken stem box (version -{'9' * 36}..., expected >= 1)"
    )


@pytest.mark.parametrize("read", [probe, read_stem_file, probe_audio, load])
def test_a_deeply_nested_manifest_is_one_error(
    written: dict[str, Path], tmp_path: Path, read: Callable[[Path], object]
) -> None:
    """100,000 nested lists overflowed the JSON decoder's stack: a RecursionError
    that no caller caught."""
    payload = b'{"version": 1, "stems": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = with_stem_box(written["alac"], tmp_path / "deep.stem.mp4", payload)
    with pytest.raises(AudioFileError) as err:
        read(path)
    assert str(err.value) == (
        f"{str(path)!r}: broken stem box (its JSON nests 100001 levels deep; "
        "a manifest has at most 32)"
    )


def test_a_manifest_too_large_is_one_error(written: dict[str, Path], tmp_path: Path) -> None:
    payload = b'{"version": 1, "pad": "' + b"a" * (1 << 20) + b'"}'
    path = with_stem_box(written["alac"], tmp_path / "large.stem.mp4", payload)
    with pytest.raises(AudioFileError) as err:
        probe(path)
    assert str(err.value) == (
        f"{str(path)!r}: broken stem box ({len(payload)} bytes of JSON; "
        "a manifest has at most 1048576)"
    )


def test_a_manifest_nested_32_deep_with_brackets_in_strings_is_read(
    written: dict[str, Path], tmp_path: Path
) -> None:
    manifest = make_manifest(list("abcd"), ["#000000"] * 4)
    deep: object = '[[[{{{ not nesting: inside a string \\" ]]]'
    for _ in range(31):  # 31 lists in the manifest object: 32 levels
        deep = [deep]
    path = _with_manifest(written["alac"], tmp_path / "ok.stem.mp4", {**manifest, "x": deep})
    info = probe(path)
    assert info is not None and info.names == ("a", "b", "c", "d")
    too_deep = _with_manifest(written["alac"], tmp_path / "no.stem.mp4", {**manifest, "x": [deep]})
    with pytest.raises(AudioFileError, match=r"its JSON nests 33 levels deep"):
        probe(too_deep)


def test_long_and_odd_stem_names_are_capped_for_display_and_keys(
    written: dict[str, Path], tmp_path: Path
) -> None:
    names = ["x" * 60_000, "../a/b", "\x00\n\x1b[31mred", "\U0001f3b5" * 100]
    manifest = make_manifest(names, ["#000000"] * 4)
    path = _with_manifest(written["alac"], tmp_path / "odd.stem.mp4", manifest)
    info = probe(path)
    assert info is not None
    assert info.names == (
        "x" * 63 + "\u2026",
        "../a/b",
        "[31mred",
        "\U0001f3b5" * 63 + "\u2026",
    )
    assert channel_keys(info.names) == ["x" * 32, "a-b", "31mred", "stem4"]


def test_damaged_box_size(written: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(written["alac"].read_bytes())
    udta = _box_offset(bytes(data), b"udta")
    struct.pack_into(">I", data, udta, 0x7FFFFFF0)
    path = tmp_path / "size.stem.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioFileError, match=r"box 'udta' at byte \d+ claims 2147483632 bytes"):
        read_stem_file(path)


@pytest.mark.parametrize("where", ["moov", "audio"])
def test_fuzzed_file_never_crashes_or_hangs(
    written: dict[str, Path], tmp_path: Path, alarm, where: str
) -> None:
    data = written["aac"].read_bytes()
    moov = _box_offset(data, b"moov")
    lo, hi = (moov, len(data)) if where == "moov" else (64, moov)
    rng = np.random.default_rng(7)
    outcomes = {"read": 0, "error": 0}
    for trial in range(24):
        damaged = bytearray(data)
        for pos in rng.integers(lo, hi, size=4 if where == "moov" else 64):
            damaged[pos] = int(rng.integers(0, 256))
        path = tmp_path / f"fuzz{trial}.stem.mp4"
        path.write_bytes(bytes(damaged))
        try:
            f = read_stem_file(path)
        except AudioFileError as exc:
            assert "\n" not in str(exc)
            outcomes["error"] += 1
        else:
            assert np.isfinite(f.stems).all()
            assert float(np.abs(f.stems).max()) <= 16.0
            outcomes["read"] += 1
    assert sum(outcomes.values()) == 24


def _plain_mp4(path: Path, mix: np.ndarray) -> Path:
    """``mix`` as the one ALAC stream of an MP4 file."""
    with av.open(str(path), "w", format="ipod") as out:
        s = out.add_stream("alac", rate=SR, layout="stereo")
        s.codec_context.format = "s32p"
        q = (np.clip(np.round(mix * 2.0**23), -(2**23), 2**23 - 1).astype(np.int32)) << 8
        frame = av.AudioFrame.from_ndarray(q, format="s32p", layout="stereo")
        frame.sample_rate = SR
        frame.pts = 0
        for p in [*s.encode(frame), *s.encode(None)]:
            out.mux(p)
    return path


def test_plain_mp4_is_an_ordinary_track(tmp_path: Path) -> None:
    mix, _ = _stems()
    path = _plain_mp4(tmp_path / "plain.stem.m4a", mix)
    assert probe(path) is None
    with pytest.raises(AudioFileError, match="plain MP4 with one audio stream"):
        read_stem_file(path)
    y, sr = load(path)
    assert sr == SR
    assert np.array_equal(y, _int24(mix))


def test_a_plain_mp4_decodes_straight_into_its_map_off_the_heap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain MP4 was decoded whole into the heap and then copied into its map (an
    hour of AAC: 1.3 GB of the daemon's heap at once). Its stream now goes straight
    into the map: the same samples as load's, C-contiguous, read-only, the heap
    holding a small part of them; a header that declares no length still decodes."""
    import tracemalloc

    from stemdeck.core.audiofile import decode as decode_module
    from stemdeck.core.audiofile.files import decode_mapped

    mix, _ = _stems()
    path = _plain_mp4(tmp_path / "plain.m4a", np.tile(mix, (1, 5)))
    y, sr = load(path)
    tracemalloc.start()
    try:
        decode = decode_mapped(path, tmp_path / "scratch")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decode.sr == sr == SR
    assert np.array_equal(decode.audio, y)
    assert decode.audio.flags.c_contiguous and not decode.audio.flags.writeable
    assert mapped_base(decode.audio) is not None
    assert peak < 2**20 < y.nbytes / 4, peak  # a block of the rows, whatever the length
    real = decode_module.declared_length
    # A header that declares a frame more than the stream holds: the map made exact.
    monkeypatch.setattr(decode_module, "declared_length", lambda s, r: (real(s, r) or 0) + 100)
    longer = decode_mapped(path, tmp_path / "scratch").audio
    assert np.array_equal(longer, y) and longer.flags.c_contiguous
    monkeypatch.setattr(decode_module, "declared_length", lambda stream, rate: None)
    assert np.array_equal(decode_mapped(path, tmp_path / "scratch").audio, y)


@pytest.mark.parametrize("codec", ["aac", "alac"])
def test_probe_audio_reads_the_header_of_a_stem_file(written: dict[str, Path], codec: str) -> None:
    """Frames, channels and rate of what `load` gives (the stems' sum), undecoded."""
    info = probe_audio(written[codec])
    y, sr = load(written[codec])
    assert (info.frames, info.channels, info.sr) == (y.shape[1], y.shape[0], sr)


def test_probe_audio_reads_the_header_of_a_plain_mp4(tmp_path: Path) -> None:
    mix, _ = _stems()
    path = _plain_mp4(tmp_path / "plain.m4a", mix)
    info = probe_audio(path)
    assert (info.frames, info.channels, info.sr) == (mix.shape[1], 2, SR)


def test_probe_audio_refuses_a_damaged_stem_file(written: dict[str, Path], tmp_path) -> None:
    """The reason is the stem file reader's: the loader's refusal quotes it."""
    data = written["aac"].read_bytes()
    path = tmp_path / "cut.stem.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioFileError) as probed:
        probe_audio(path)
    with pytest.raises(AudioFileError) as read:
        probe(path)
    assert str(probed.value) == str(read.value)
    assert "truncated" in str(probed.value)


def test_two_stream_mp4_without_manifest_is_refused(tmp_path: Path) -> None:
    mix, _ = _stems()
    path = tmp_path / "two.stem.mp4"
    with av.open(str(path), "w", format="ipod") as out:
        streams = [out.add_stream("aac", rate=SR, layout="stereo") for _ in range(2)]
        for s in streams:
            frame = av.AudioFrame.from_ndarray(mix.copy(), format="fltp", layout="stereo")
            frame.sample_rate = SR
            frame.pts = 0
            for p in [*s.encode(frame), *s.encode(None)]:
                out.mux(p)
    with pytest.raises(
        AudioFileError, match="2 audio streams; a stem file has a master and 2 to 4"
    ):
        read_stem_file(path)


def test_not_an_mp4(tmp_path: Path) -> None:
    path = tmp_path / "fake.stem.mp4"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(64))
    with pytest.raises(AudioFileError, match="is not an MP4 file"):
        read_stem_file(path)
    with pytest.raises(AudioFileError, match="no such file"):
        read_stem_file(tmp_path / "missing.stem.mp4")


# -- real files by other tools ---------------------------------------------------------
def _real(pattern: str) -> list[Path]:
    found = sorted(DATA.glob(pattern)) if DATA.is_dir() else []
    if not found:
        pytest.skip(f"no {pattern} under {DATA} (set STEMDECK_STEMFILES)")
    return found


@pytest.mark.parametrize("kind", ["ALAC", "AAC"])
def test_ni_written_file(kind: str) -> None:
    (path,) = _real(f"*Falcon 69 (NI {kind}).stem.m4a")
    f = read_stem_file(path)
    assert f.names == ["Drums", "Bass", "Other", "Vox"]
    assert f.colours == ["#FD4A4A", "#AD65FF", "#3F8BFE", "#FA8D29"]
    assert f.sr == 44100
    assert f.stems.shape[:2] == (4, 2)
    assert f.stems.shape[2] > 6 * 44100
    assert f.master is not None and f.master.shape == f.stems.shape[1:]
    assert f.manifest is not None and f.manifest["version"] == 1
    assert _mixxx_accepts(f.manifest) == []
    assert track_flags(path) == [1, 0, 0, 0, 0]
    assert channel_keys(f.names) == ["drums", "bass", "other", "vox"]
    for stem in f.stems:
        assert float(np.abs(stem).max()) > 0.01  # every stem holds music


def test_musdb_preview_takes_default_names(caplog: pytest.LogCaptureFixture) -> None:
    path = _real("musdb-train/*.stem.mp4")[0]
    with caplog.at_level(logging.INFO, logger="stemdeck"):
        f = read_stem_file(path)
    assert f.names == NI_ORDER
    assert f.manifest is None
    assert f"{path.name} has no stem manifest: its 4 stems take the default names " in caplog.text
    assert f.master is not None and f.stems.shape == (4, 2, f.master.shape[1])
    # MUSDB's master is the sum of its stems, to AAC's precision.
    assert _snr(f.master, f.mix) > 20


def test_packets_reach_the_file_while_tracks_encode(tmp_path: Path) -> None:
    # The encoded packets are muxed as the tracks advance, not held until the end: an
    # hour-long mix would otherwise keep a second copy of itself in memory.
    mix, stems = _stems()
    mix, stems = np.tile(mix, 15), np.tile(stems, 15)  # a minute
    seen: list[tuple[float, int]] = []

    def watch(fraction: float) -> None:
        parts = list(tmp_path.glob(".x.stem.mp4-*.part"))
        seen.append((fraction, parts[0].stat().st_size if parts else 0))

    path = tmp_path / "x.stem.mp4"
    write_stem_file(path, mix, stems, SR, codec="alac", progress=watch)
    final = path.stat().st_size
    during = [size for fraction, size in seen if fraction < 1.0]
    assert during and max(during) > final // 10, (seen, final)
