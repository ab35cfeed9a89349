"""``stemdeck beats``: the analysis printed from the store or computed and stored,
the grid's edits kept across runs, stem files read as their mix, exact errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import TINY
from stemdeck.core.audiofile.files import load
from stemdeck.core.beats.analysis import analyze_beats
from stemdeck.core.beats.store import BeatRecord, BeatStore, audio_hash
from stemdeck.core.material.songs import SongSpec, render_song
from stemdeck.core.separation.cache import default_cache_dir
from stemdeck.daemon.cli import main

SR = 22050


@pytest.fixture(scope="module")
def song_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    song = render_song(SongSpec(bpm=120.0, bars=8), sr=SR)
    path = tmp_path_factory.mktemp("beats") / "song.wav"
    sf.write(path, song.mix.T, SR, subtype="FLOAT")
    return path


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["beats", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_is_the_analysis_and_is_stored(song_wav: Path, capsys, monkeypatch) -> None:
    y, sr = load(song_wav)
    expected = analyze_beats(y, sr).as_dict()
    assert _json(capsys, str(song_wav)) == expected
    assert list(expected) == ["bpm", "beats", "downbeats", "beats_per_bar", "key"]
    assert abs(float(expected["bpm"]) - 120.0) < 0.1  # type: ignore[arg-type]
    sidecar = default_cache_dir() / "beats" / f"{audio_hash(y, sr)}.json"
    assert sidecar.is_file()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("analysed again although the store holds the analysis")

    monkeypatch.setattr("stemdeck.daemon.cli.beats.analyze_beats", refuse)
    assert _json(capsys, str(song_wav)) == expected


def test_edits_are_kept_and_shown_and_reset(song_wav: Path, capsys) -> None:
    y, sr = load(song_wav)
    a = analyze_beats(y, sr)
    assert main(["beats", str(song_wav), "--halve"]) == 0
    capsys.readouterr()
    assert main(["beats", str(song_wav)]) == 0
    half = a.grid.halved()
    n_beats = len(half.beats(a.duration))
    n_bars = len(half.downbeats(a.duration))
    assert capsys.readouterr().out.splitlines() == [
        f"{song_wav}: {half.bpm:.2f} BPM, 4 beats a bar, first downbeat at "
        f"{half.downbeats(a.duration)[0]:.3f} s",
        f"{n_beats} beats, {n_bars} bars in {a.duration:.1f} s; key: not estimated",
        f"edited grid (the analysis found {a.bpm:.2f} BPM, first downbeat at "
        f"{a.downbeats()[0]:.3f} s)",
    ]
    assert _json(capsys, str(song_wav))["bpm"] == round(half.bpm, 4)
    assert _json(capsys, str(song_wav), "--set-bpm", "126")["bpm"] == 126.0
    shifted = _json(capsys, str(song_wav), "--shift", "250")
    assert shifted["bpm"] == 126.0
    moved = _json(capsys, str(song_wav), "--downbeat-at", "3.5")
    assert 3.5 in moved["downbeats"]  # type: ignore[operator]
    assert _json(capsys, str(song_wav), "--reset-edit") == a.as_dict()
    assert BeatStore(default_cache_dir()).load(audio_hash(y, sr)).edit is None  # type: ignore[union-attr]


def test_no_cache_neither_reads_nor_writes(song_wav: Path, capsys) -> None:
    y, sr = load(song_wav)
    out = _json(capsys, str(song_wav), "--no-cache", "--double")
    assert out["bpm"] == round(analyze_beats(y, sr).grid.doubled().bpm, 4)
    assert not (default_cache_dir() / "beats").exists()


def test_a_stem_file_is_analysed_as_its_mix(tmp_path: Path, capsys) -> None:
    from stemdeck.core.audiofile.stemfile_write import write_stem_file

    song = render_song(SongSpec(bpm=120.0, bars=6), sr=44100)
    stems = np.stack([song.stems[k] for k in ("drums", "bass", "other", "vocals")])
    path = tmp_path / "song.stem.mp4"
    write_stem_file(
        path,
        song.mix,
        stems,
        44100,
        names=["Drums", "Bass", "Other", "Vocals"],
        colours=["#FF0000", "#00FF00", "#0000FF", "#FFFF00"],
        codec="alac",
    )
    y, sr = load(path)
    assert _json(capsys, str(path)) == analyze_beats(y, sr).as_dict()


def test_a_damaged_sidecar_is_one_warning_and_analysed_again(song_wav: Path, capsys) -> None:
    y, sr = load(song_wav)
    sidecar = BeatStore(default_cache_dir()).path(audio_hash(y, sr))
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text("{not json")
    assert main(["beats", str(song_wav), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == analyze_beats(y, sr).as_dict()
    assert err.splitlines() == [
        f"stemdeck: warning: beat sidecar {str(sidecar)!r}: not JSON (Expecting property "
        "name enclosed in double quotes: line 1 column 2 (char 1)); analysing the track again"
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["/no/such/file.wav"], 1, "stemdeck: error: '/no/such/file.wav': no such file"),
        (
            ["{song}", "--set-bpm", "1000"],
            1,
            "stemdeck: error: tempo must be 20 to 400 BPM, got 1000.0",
        ),
        (
            ["{song}", "--set-bpm", "nan"],
            2,
            "stemdeck beats: error: argument --set-bpm: expected a number, got 'nan'",
        ),
        (
            ["{song}", "--halve", "--double"],
            2,
            "stemdeck beats: error: argument --double: not allowed with argument --halve",
        ),
    ],
)
def test_errors_are_one_line(
    song_wav: Path, capsys, args: list[str], code: int, message: str
) -> None:
    args = [a.format(song=song_wav) for a in args]
    try:
        status = main(["beats", *args])
    except SystemExit as exc:  # argparse's usage errors
        status = int(exc.code or 0)
    assert status == code
    assert capsys.readouterr().err.splitlines() == [message]


def test_a_file_that_is_not_audio_is_the_error_every_command_gives(tmp_path: Path, capsys) -> None:
    notaudio = tmp_path / "notes.wav"
    notaudio.write_text("just text")
    assert main(["beats", str(notaudio)]) == 1
    beats_err = capsys.readouterr().err
    assert main(["plot", str(notaudio), "-o", str(tmp_path / "x.png")]) == 1
    assert beats_err == capsys.readouterr().err


def test_separate_keeps_the_grid_with_the_separation(
    tmp_path: Path, song_wav: Path, capsys, monkeypatch
) -> None:
    """A separated track has its grid at once: `stemdeck beats` then reads it."""
    y, sr = load(song_wav)
    store = BeatStore(default_cache_dir())
    key = audio_hash(y, sr)
    store.path(key).unlink(missing_ok=True)  # another test of this module may have kept it
    out = tmp_path / "out"
    assert main(["separate", str(song_wav), "-o", str(out), "--preset", str(TINY)]) == 0
    capsys.readouterr()
    expected = analyze_beats(y, sr)
    assert store.load(key) == BeatRecord(expected)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("analysed again although separate kept the analysis")

    monkeypatch.setattr("stemdeck.daemon.cli.beats.analyze_beats", refuse)
    assert _json(capsys, str(song_wav)) == expected.as_dict()
