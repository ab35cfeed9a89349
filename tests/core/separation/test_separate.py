from typing import Any

import numpy as np
import pytest

from conftest import SR, tone_mix
from stemdeck.core.errors import AudioFileError, ParameterError
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.presets import SeparationParams
from stemdeck.core.separation.separate import component_centroids, separate


def residual_db(y: np.ndarray, channels: np.ndarray) -> float:
    res = y.astype(np.float64) - channels.astype(np.float64).sum(axis=0)
    return 10 * np.log10(max(np.sum(res**2), 1e-30) / np.sum(y.astype(np.float64) ** 2))


@pytest.mark.parametrize("stereo", [False, True])
@pytest.mark.parametrize("length", [1, 10, 511, 12345, 3 * SR + 7])
def test_mixture_consistency(small_params: SeparationParams, stereo: bool, length: int) -> None:
    y = tone_mix(4.0, stereo=stereo)[:, :length]
    result = separate(y, SR, spec=SeparationSpec("components", small_params))
    assert result.channels.shape == (4, y.shape[0], length)
    assert residual_db(y, result.channels) < -60


def test_mixture_consistency_with_subset_fit(small_params: SeparationParams) -> None:
    y = tone_mix(3.0)
    params = small_params.with_overrides(fit_frames=100, refine_iter=10)
    result = separate(y, SR, spec=SeparationSpec("components", params))
    assert residual_db(y, result.channels) < -60


def test_silence_separates_to_silence(small_params: SeparationParams) -> None:
    y = np.zeros((2, 5000), np.float32)
    result = separate(y, SR, spec=SeparationSpec("components", small_params))
    assert np.isfinite(result.channels).all()
    assert np.abs(result.channels).max() == 0.0


def test_components_ordered_by_centroid(small_params: SeparationParams) -> None:
    result = separate(tone_mix(3.0), SR, spec=SeparationSpec("components", small_params))
    centroids = component_centroids(result.W, SR, small_params.n_fft)
    assert np.all(np.diff(centroids) >= 0)
    assert result.names == ["component_01", "component_02", "component_03", "component_04"]
    assert np.allclose(result.W.sum(axis=0), 1.0, atol=1e-4)


def test_same_parameters_same_output(small_params: SeparationParams) -> None:
    y = tone_mix(2.0)
    a = separate(y, SR, spec=SeparationSpec("components", small_params))
    b = separate(y, SR, spec=SeparationSpec("components", small_params))
    np.testing.assert_array_equal(a.channels, b.channels)


def test_stereo_image_kept(small_params: SeparationParams) -> None:
    y = tone_mix(2.0)
    y[1] = 0.0  # everything hard left
    result = separate(y, SR, spec=SeparationSpec("components", small_params))
    assert np.abs(result.channels[:, 1]).max() < 1e-6
    assert residual_db(y, result.channels) < -60


def test_separates_low_from_high(small_params: SeparationParams) -> None:
    # Two tones far apart in frequency, alternating in time: K=2 finds each.
    n = 2 * SR
    t = np.arange(n) / SR
    low = (np.sin(2 * np.pi * 100 * t) * (t % 0.5 < 0.25)).astype(np.float32)
    high = (np.sin(2 * np.pi * 3000 * t) * (t % 0.5 >= 0.25)).astype(np.float32)
    y = np.stack([low + high, low + high])
    result = separate(
        y,
        SR,
        spec=SeparationSpec("components", small_params.with_overrides(n_components=2, n_iter=60)),
    )
    for truth, est in ((low, result.channels[0, 0]), (high, result.channels[1, 0])):
        sdr = 10 * np.log10(np.sum(truth**2) / np.sum((truth - est) ** 2))
        assert sdr > 10


def test_bad_input(small_params: SeparationParams) -> None:
    with pytest.raises(AudioFileError, match="NaN"):
        separate(
            np.full((1, 100), np.nan, np.float32),
            SR,
            spec=SeparationSpec("components", small_params),
        )
    with pytest.raises(AudioFileError, match="zero-length"):
        separate(np.zeros((2, 0), np.float32), SR, spec=SeparationSpec("components", small_params))
    bogus: Any = "bogus"
    with pytest.raises(ParameterError, match="mode"):
        SeparationSpec(bogus, small_params)
    with pytest.raises(ParameterError, match="sample rate"):
        separate(tone_mix(0.1), 0, spec=SeparationSpec("components", small_params))


def test_progress_reports_every_stage(small_params: SeparationParams) -> None:
    seen: dict[str, float] = {}
    separate(
        tone_mix(1.0),
        SR,
        spec=SeparationSpec("components", small_params),
        progress=lambda stage, f: seen.__setitem__(stage, f),
    )
    assert seen == {"stft": 1.0, "nmf": 1.0, "activations": 1.0, "reconstruct": 1.0}
