import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemdeck.core.errors import AudioFileError
from stemdeck.core.separation.audio import load, write


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
