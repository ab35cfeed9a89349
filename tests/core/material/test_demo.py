import numpy as np
import pytest

from stemdeck.core.material.demo import STEM_NAMES, demo_track


def test_demo_is_deterministic_and_consistent() -> None:
    a = demo_track(seconds=8)
    b = demo_track(seconds=8)
    np.testing.assert_array_equal(a.mix, b.mix)
    assert a.mix.shape == (2, 8 * 44100) and a.mix.dtype == np.float32
    assert tuple(a.stems) == STEM_NAMES
    total = np.zeros_like(a.mix)
    for stem in a.stems.values():
        total += stem
    np.testing.assert_array_equal(total, a.mix)
    assert abs(20 * np.log10(np.abs(a.mix).max()) - (-1.0)) < 0.01


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_demo_full_length_has_all_stems_active() -> None:
    demo = demo_track()
    assert 29 <= demo.mix.shape[1] / demo.sr <= 31
    for name, stem in demo.stems.items():
        rms_db = 10 * np.log10(np.mean(stem.astype(np.float64) ** 2))
        assert rms_db > -40, name
    # bass lives low, drums have transients: crude checks that stems are what they say
    spectrum = {k: np.abs(np.fft.rfft(v[0])) for k, v in demo.stems.items()}
    freqs = np.fft.rfftfreq(demo.mix.shape[1], 1 / demo.sr)
    centroid = {k: float((freqs * s).sum() / s.sum()) for k, s in spectrum.items()}
    assert centroid["bass"] < centroid["vocals"] < centroid["drums"]
