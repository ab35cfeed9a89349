"""Stem files through the command line and the daemon: written by `separate`, played by
`serve` (and `/track/load`) as their own channels, with nothing separated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Client, Daemon, wait_played
from mp4_helpers import track_flags, with_stem_box

from conftest import TINY, tone_mix
from stemdeck.core.audiofile.decode import read_stem_file
from stemdeck.core.audiofile.files import load
from stemdeck.core.audiofile.manifest import NI_STEMS, manifest_problems
from stemdeck.core.audiofile.mp4 import read_stem_box
from stemdeck.core.audiofile.stemfile import probe
from stemdeck.core.audiofile.stemfile_write import write_stem_file
from stemdeck.core.audiofile.tags import Tags, read_tags
from stemdeck.core.errors import AudioFileError
from stemdeck.daemon.cli import main

FAST = TINY
SR = 48000  # the rate `serve --no-audio` runs at: recorded samples compare one to one


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


def _int24(y: np.ndarray) -> np.ndarray:
    return (np.clip(np.round(y * 2.0**23), -(2**23), 2**23 - 1) / 2.0**23).astype(np.float32)


def _stems(seconds: float = 3.0) -> np.ndarray:
    """Four distinct stereo stems, (4, 2, samples)."""
    return np.stack([0.5 * tone_mix(seconds, sr=SR, seed=s) * (0.4 + 0.2 * s) for s in range(4)])


@pytest.fixture
def tagged_track(tmp_path: Path) -> Path:
    """A FLAC track with title, artist and album, and a PNG cover."""
    path = tmp_path / "my song.flac"
    sf.write(path, tone_mix(2.0, sr=SR).T, SR, subtype="PCM_24")
    tagged = tmp_path / "tagged" / "my song.flac"
    tagged.parent.mkdir()
    with av.open(str(path)) as src, av.open(str(tagged), "w") as dst:
        dst.metadata.update({"title": "My Song", "artist": "The Testers", "album": "Fixtures"})
        ins = src.streams.audio[0]
        out = dst.add_stream_from_template(ins)
        for packet in src.demux(ins):
            if packet.dts is None:
                continue
            packet.stream = out
            dst.mux(packet)
    return tagged


def test_separate_writes_one_stem_file(tmp_path: Path, tagged_track: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["separate", str(tagged_track), "-o", str(out), "--preset", str(FAST)]
    assert main([*args, "--format", "stem.mp4", "--codec", "alac"]) == 0
    path = out / "my song.stem.mp4"
    assert [p.name for p in out.iterdir()] == ["my song.stem.mp4"]
    assert f"wrote {path}" in capsys.readouterr().out
    assert track_flags(path) == [3, 2, 2, 2, 2]
    manifest = json.loads(read_stem_box(path) or b"")
    assert manifest_problems(manifest, n_stems=4) == []
    assert [s["name"] for s in manifest["stems"]] == ["Drums", "Bass", "Other", "Vocals"]
    stems = read_stem_file(path)
    assert stems.tags == Tags("My Song", "The Testers", "Fixtures")
    # The master is the original track, and the stems (24-bit) add up to it.
    original, _ = load(tagged_track)
    assert stems.master is not None and np.array_equal(stems.master, _int24(original))
    residual = np.sum((stems.mix - original) ** 2) / np.sum(original**2)
    assert 10 * np.log10(residual) < -100  # 24-bit rounding of four stems, nothing more
    # The stems are the separation's, in NI's order.
    assert main([*args, "--format", "wav"]) == 0
    for k, (name, _) in enumerate(NI_STEMS):
        wav, _ = load(out / "my song" / f"{name}.wav")
        assert np.array_equal(stems.stems[k], _int24(wav)), name


def test_separate_a_stem_file_runs_no_separation(tmp_path: Path, capsys) -> None:
    stems = _stems()
    src = tmp_path / "Set Piece.stem.m4a"
    names, colours = ["Kick", "Sub", "Keys", "Vox"], ["#FF0000", "#00FF00", "#0000FF", "#FFFF00"]
    tags = Tags("Set Piece", "Someone", None)
    write_stem_file(
        src, stems.sum(axis=0), stems, SR, names=names, colours=colours, codec="alac", tags=tags
    )
    out = tmp_path / "out"
    assert main(["separate", str(src), "-o", str(out), "--format", "wav"]) == 0
    assert "stems from the file, not separated" in capsys.readouterr().out
    folder = out / "Set Piece"
    assert sorted(p.name for p in folder.iterdir()) == [
        "keys.wav",
        "kick.wav",
        "sub.wav",
        "vox.wav",
    ]
    kick, sr = load(folder / "kick.wav")
    assert sr == SR and np.array_equal(kick, _int24(stems[0]))
    # Re-written as a stem file: names, colours and tags survive (AAC this time).
    assert main(["separate", str(src), "-o", str(out), "--format", "stem.mp4"]) == 0
    again = read_stem_file(out / "Set Piece.stem.mp4")
    assert again.names == names and again.colours == colours
    assert again.tags == tags
    assert read_tags(out / "Set Piece.stem.mp4") == tags


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--components", "3", "--format", "stem.mp4"], "components mode has no stems"),
        (["--format", "stem.mp4", "--codec", "mp3"], "invalid choice: 'mp3'"),
        (["--format", "stem.mp4", "--rate", "12345"], "AAC cannot store 12345 Hz"),
    ],
)
def test_separate_stem_format_errors_are_one_line(tmp_path: Path, args, message) -> None:
    rate = SR
    if "--rate" in args:  # a rate AAC cannot store: refused before separating
        rate = int(args[args.index("--rate") + 1])
        args = args[: args.index("--rate")]
    track = tmp_path / "t.wav"
    sf.write(track, tone_mix(1.0, sr=rate).T, rate)
    proc = run_cli("separate", str(track), "-o", str(tmp_path / "o"), *args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "channels in" not in proc.stderr  # no separation ran
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "error" in ln]) == 1
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00isomM4A \x00\x00\x10\x00moov", "claims 4096"),
        (b"not an mp4 at all", "is not an MP4 file"),
    ],
)
def test_serve_broken_stem_file_is_one_line_error(tmp_path: Path, content, reason) -> None:
    track = tmp_path / "broken.stem.mp4"
    track.write_bytes(content)
    proc = run_cli("serve", str(track), "--no-audio", "--osc-port", "0")
    assert proc.returncode == 1 and reason in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "error" in ln]) == 1


def _musdb_like(path: Path, stems: np.ndarray) -> None:
    """Five AAC streams and no stem box, as MUSDB18's previews are."""
    with av.open(str(path), "w", format="mp4") as out:
        streams = [out.add_stream("aac", rate=SR, layout="stereo") for _ in range(5)]
        for s, y in zip(streams, [stems.sum(axis=0), *stems], strict=True):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(y), format="fltp", layout="stereo"
            )
            frame.sample_rate = SR
            frame.pts = 0
            for p in [*s.encode(frame), *s.encode(None)]:
                out.mux(p)


@pytest.mark.e2e
@pytest.mark.slow
def test_serve_plays_the_stems_as_channels(tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    stems = _stems()
    first = library / "Falcon.stem.mp4"
    # The master is deliberately not the stems' sum: unity plays the stems.
    write_stem_file(
        first,
        0.5 * stems.sum(axis=0),
        stems,
        SR,
        names=["Drums", "Bass", "Other", "Vox"],
        colours=["#FD4A4A", "#AD65FF", "#3F8BFE", "#FA8D29"],
        codec="alac",
    )
    three = library / "Three.stem.m4a"
    write_stem_file(
        three,
        stems[:3].sum(axis=0),
        stems[:3],
        SR,
        names=["A", "B", "C"],
        colours=["#000000", "#111111", "#222222"],
        codec="alac",
    )
    musdb = library / "Musdb.stem.mp4"
    _musdb_like(musdb, stems)
    broken = library / "Broken.stem.mp4"
    broken.write_bytes(first.read_bytes()[:-300])
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "cfg")}
    daemon = Daemon(
        [str(first), "--no-audio", "--record", str(tmp_path / "rec.wav")], env, tmp_path
    )
    client = Client(daemon.port)
    try:
        daemon.wait_ready()
        state = dict(client.ask("/state", timeout=3.0))
        # NI's "Vox" is the vocals: addressed by its role, labelled by its own name.
        assert state["/channels"] == ["drums", "bass", "other", "vocals"]
        assert state["/channels/labels"] == ["Drums", "Bass", "Other", "Vox"]
        assert state["/channels/colors"] == ["#FD4A4A", "#AD65FF", "#3F8BFE", "#FA8D29"]
        assert client.query("/ch/vocals/fader") == pytest.approx(0.75)
        wait_played(client, 1.5)  # record a while at unity

        def channels_after_load(path: Path) -> list[str]:
            replies = client.ask("/track/load", str(path))
            assert ("/track/load", [str(path)]) in replies, replies
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status = client.query("/status")
                if status.startswith(path.name.split(".")[0] + " "):
                    return dict(client.ask("/state", timeout=3.0))["/channels"]
                time.sleep(0.2)
            raise AssertionError(f"{path.name} not loaded: {status}")

        assert channels_after_load(three) == ["a", "b", "c"]
        assert channels_after_load(musdb) == ["drums", "bass", "other", "vocals"]
        assert dict(client.ask("/state", timeout=3.0))["/channels/colors"] == [
            c for _, c in NI_STEMS
        ]
        # A damaged file is refused before the acknowledgement, and the set goes on.
        with pytest.raises(AudioFileError) as damaged:
            probe(broken)
        assert client.ask("/track/load", str(broken)) == [
            ("/error", [f"/track/load: refused {str(broken)!r}: {damaged.value}"])
        ]
        assert "truncated" in str(damaged.value)
        assert client.query("/status").startswith("Musdb ")
    finally:
        client.close()
        code, err = daemon.stop()
    assert code == 0, err
    assert "Falcon: 4 stems from the file: Drums #FD4A4A, Bass #AD65FF, Other #3F8BFE" in err
    assert "Musdb.stem.mp4 has no stem manifest: its 4 stems take the default names" in err
    assert "separating" not in err and "playing the original" not in err
    rec, rate = sf.read(tmp_path / "rec.wav", dtype="float32")
    assert rate == SR
    # Unity on every channel is the sum of the stems, sample for sample.
    want = _int24(stems).sum(axis=0).T
    window = rec[SR // 2 : SR // 2 + SR // 4]
    offsets = [
        o
        for o in range(0, SR // 2)
        if np.allclose(window[:64], want[SR // 2 - o : SR // 2 - o + 64], atol=1e-6)
    ]
    assert offsets, "the recording does not hold the sum of the stems"
    o = offsets[0]
    assert np.max(np.abs(window - want[SR // 2 - o : SR // 2 - o + len(window)])) < 1e-6


def test_load_reads_a_stem_file_as_its_mix(tmp_path: Path) -> None:
    stems = _stems(1.0)
    path = tmp_path / "x.stem.mp4"
    write_stem_file(path, stems.sum(axis=0), stems, SR, codec="alac")
    y, sr = load(path)
    assert sr == SR
    assert np.array_equal(y, _int24(stems).sum(axis=0))
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.e2e
def test_components_of_a_stem_file_is_refused(tmp_path: Path) -> None:
    stems = _stems(1.0)
    path = tmp_path / "x.stem.mp4"
    write_stem_file(path, stems.sum(axis=0), stems, SR, codec="alac")
    proc = run_cli("separate", str(path), "-o", str(tmp_path / "o"), "--components", "4")
    assert proc.returncode == 1
    assert "is a stem file: its channels are its stems; drop --components" in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "error" in ln]) == 1


REAL = Path(
    os.environ.get("STEMDECK_STEMFILES", Path.home() / ".cache" / "stemdeck-data" / "stemfiles")
)


@pytest.mark.e2e
def test_serve_plays_real_stem_files(tmp_path: Path) -> None:
    """NI's own file and a MUSDB18 preview, where they are on the machine."""
    ni = sorted(REAL.glob("*Falcon 69 (NI ALAC).stem.m4a")) if REAL.is_dir() else []
    musdb = sorted(REAL.glob("musdb-train/*.stem.mp4")) if REAL.is_dir() else []
    if not ni or not musdb:
        pytest.skip(f"NI and MUSDB18 stem files not under {REAL} (set STEMDECK_STEMFILES)")
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "cfg")}
    daemon = Daemon([str(ni[0]), "--no-audio", "--library", str(REAL)], env, tmp_path)
    client = Client(daemon.port)
    try:
        daemon.wait_ready()
        state = dict(client.ask("/state", timeout=3.0))
        assert state["/channels"] == ["drums", "bass", "other", "vocals"]  # its Vox: vocals
        assert state["/channels/colors"] == ["#FD4A4A", "#AD65FF", "#3F8BFE", "#FA8D29"]
        replies = client.ask("/track/load", str(musdb[0]))
        assert ("/track/load", [str(musdb[0])]) in replies, replies
        name = musdb[0].name[: -len(".stem.mp4")]
        deadline = time.monotonic() + 30
        while not client.query("/status").startswith(name + " "):
            assert time.monotonic() < deadline, "the MUSDB18 preview did not load"
            time.sleep(0.2)
        state = dict(client.ask("/state", timeout=3.0))
        assert state["/channels"] == ["drums", "bass", "other", "vocals"]
    finally:
        client.close()
        code, err = daemon.stop()
    assert code == 0, err
    assert "The Easton Ellises - Falcon 69 (NI ALAC): 4 stems from the file: Drums #FD4A4A" in err
    assert f"{musdb[0].name} has no stem manifest: its 4 stems take the default names" in err


def test_separate_a_stem_file_with_long_and_odd_stem_names(tmp_path: Path, capsys) -> None:
    """A 60,000-character stem name was "File name too long" after an empty folder."""
    stems = _stems(1.0)
    names = ["x" * 60_000, "../a/b", "\x00\n\x1b[31mred", "\U0001f3b5" * 100]
    src = tmp_path / "odd.stem.mp4"
    write_stem_file(
        src, stems.sum(axis=0), stems, SR, names=names, colours=["#000000"] * 4, codec="alac"
    )
    out = tmp_path / "out"
    assert main(["separate", str(src), "-o", str(out), "--format", "wav"]) == 0
    folder = out / "odd"
    assert f"wrote 4 files to {folder} (stems from the file, not separated)" in (
        capsys.readouterr().out
    )
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["x" * 32 + ".wav", "a-b.wav", "31mred.wav", "stem4.wav"]
    )
    assert (
        main(["separate", str(src), "-o", str(out), "--format", "stem.mp4", "--codec", "alac"]) == 0
    )
    again = read_stem_file(out / "odd.stem.mp4")
    assert again.names == ["x" * 63 + "\u2026", "../a/b", "[31mred", "\U0001f3b5" * 63 + "\u2026"]


def test_separate_a_stem_file_with_a_deeply_nested_manifest_is_one_line(
    tmp_path: Path, capsys
) -> None:
    """It was a RecursionError: a 26-line traceback."""
    stems = _stems(1.0)
    good = tmp_path / "good.stem.mp4"
    write_stem_file(good, stems.sum(axis=0), stems, SR, codec="alac")
    payload = b'{"version": 1, "stems": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = with_stem_box(good, tmp_path / "deep.stem.mp4", payload)
    assert main(["separate", str(path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"stemdeck: error: {str(path)!r}: broken stem box (its JSON nests 100001 levels "
        "deep; a manifest has at most 32)\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_serve_a_deeply_nested_manifest_is_one_line_error(tmp_path: Path) -> None:
    stems = _stems(1.0)
    good = tmp_path / "good.stem.mp4"
    write_stem_file(good, stems.sum(axis=0), stems, SR, codec="alac")
    payload = b'{"version": 1, "stems": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = with_stem_box(good, tmp_path / "deep.stem.mp4", payload)
    proc = run_cli("serve", str(path), "--no-audio", "--osc-port", "0")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if "error" in ln] == [
        f"stemdeck: error: {str(path)!r}: broken stem box (its JSON nests 100001 levels "
        "deep; a manifest has at most 32)"
    ]
