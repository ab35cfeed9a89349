"""The mixer called directly: block-size independence, click-free changes, logic."""

import itertools
import tracemalloc

import numpy as np
import pytest

from stemdeck.core.engine import (
    Batch,
    Loop,
    MasterTarget,
    Mixer,
    Pause,
    Play,
    Seek,
    SetTrack,
    Stop,
    StripTarget,
    Track,
)
from stemdeck.core.params import db_to_gain, fader_to_db

SR = 48000


def stems(n: int = 4, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Smooth stereo test channels: sines of different frequencies and phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = np.empty((n, 2, len(t)), np.float32)
    for i in range(n):
        f = 40 + 30 * i
        for side in (0, 1):
            out[i, side] = 0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
    return out


def mixer_with(channels: np.ndarray, *, block: int = 256, **kwargs) -> Mixer:
    m = Mixer(max_channels=8, **kwargs)
    m.prepare(SR, max(block, 4096))
    m.post(SetTrack(Track(channels, SR, tuple(f"ch{i}" for i in range(len(channels))))))
    return m


def run(m: Mixer, frames: int, block: int, events: dict[int, list] | None = None) -> np.ndarray:
    """Process ``frames`` samples in blocks of ``block``, posting ``events[t]`` at sample t
    (blocks are cut at event times, as a real stream delivers commands between blocks)."""
    events = events or {}
    out = np.zeros((frames, m.out_channels), np.float32)
    cuts = sorted({*range(0, frames, block), *events, frames})
    for a, b in itertools.pairwise(cuts):
        for cmd in events.get(a, []):
            m.post(cmd)
        while a < b:
            n = min(block, b - a)
            m.process(out[a : a + n])
            a += n
    return out


def strip(
    i: int, *, gain: float = 1.0, mute: bool = False, solo: bool = False, pan: float = 0.0
) -> StripTarget:
    return StripTarget(i, gain, mute, solo, pan)


SCENARIO = {
    0: [Play()],
    3000: [strip(1, gain=0.3)],
    7000: [strip(2, mute=True)],
    9001: [strip(3, solo=True), strip(0, pan=-0.7)],
    15000: [Seek(0.1)],
    20000: [strip(3, solo=False), MasterTarget(0.5, False)],
    26000: [Loop(0.2, 0.3)],
    40000: [Pause()],
}


@pytest.mark.parametrize("block", [1, 64, 65, 256, 4096])
def test_chunked_output_equals_whole(block: int) -> None:
    channels = stems()
    whole = run(mixer_with(channels, block=45000), 45000, 45000, SCENARIO)
    chunked = run(mixer_with(channels, block=block), 45000, block, SCENARIO)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert np.abs(whole).max() > 0.1


def test_no_clicks_after_any_command() -> None:
    channels = stems()
    out = run(mixer_with(channels), 45000, 256, SCENARIO)
    # The test signals move at most ~0.004 per sample; a hard switch would jump ~0.4.
    natural = np.abs(np.diff(channels.sum(axis=0), axis=1)).max()
    assert np.abs(np.diff(out, axis=0)).max() < natural + 0.01


def test_unity_is_the_original_track() -> None:
    channels = stems()
    m = mixer_with(channels)
    out = run(m, 30000, 256, {0: [Play()]})
    x = m._xfade_len  # the play fade-in
    np.testing.assert_allclose(out[x:, 0], channels[:, 0].sum(axis=0)[x:30000], atol=1e-6)
    np.testing.assert_allclose(out[x:, 1], channels[:, 1].sum(axis=0)[x:30000], atol=1e-6)


def test_mute_solo_logic() -> None:
    channels = stems()
    m = mixer_with(channels)
    settle = 4096

    def level_after(cmds: list) -> np.ndarray:
        for c in cmds:
            m.post(c)
        run(m, settle, 256)  # ramps finish
        block = run(m, 2048, 256)
        return block

    level_after([Play()])
    pos = m.position
    out = level_after([strip(1, solo=True)])
    want = channels[1, :, pos + settle : pos + settle + 2048].T
    np.testing.assert_allclose(out, want, atol=1e-6)  # only the soloed channel
    pos = m.position
    out = level_after([strip(2, solo=True)])
    want = channels[1:3, :, pos + settle : pos + settle + 2048].sum(axis=0).T
    np.testing.assert_allclose(out, want, atol=1e-6)  # two soloed channels
    pos = m.position
    out = level_after([strip(2, solo=True, mute=True)])  # mute wins over solo
    want = channels[1, :, pos + settle : pos + settle + 2048].T
    np.testing.assert_allclose(out, want, atol=1e-6)
    pos = m.position
    out = level_after([strip(1), strip(2)])  # no solo left: all back
    want = channels[:, :, pos + settle : pos + settle + 2048].sum(axis=0).T
    np.testing.assert_allclose(out, want, atol=1e-6)


def test_gain_pan_master() -> None:
    channels = stems(n=1)
    m = mixer_with(channels)
    m.post(Play())
    gain = db_to_gain(fader_to_db(0.5))  # -10 dB
    m.post(strip(0, gain=gain, pan=-1.0))
    m.post(MasterTarget(0.5, False))
    run(m, 4096, 256)
    pos = m.position
    out = run(m, 1024, 256)
    np.testing.assert_allclose(out[:, 0], channels[0, 0, pos : pos + 1024] * gain * 0.5, atol=1e-6)
    assert np.abs(out[:, 1]).max() == 0.0  # panned hard left: right is silent
    m.post(MasterTarget(0.5, True))
    run(m, 4096, 256)
    assert np.abs(run(m, 1024, 256)).max() == 0.0


def test_transport_seek_loop_end() -> None:
    channels = stems(seconds=0.5)
    m = mixer_with(channels)
    run(m, 1000, 256, {0: [Play(), Seek(0.25)]})
    assert m.position == int(0.25 * SR) + 1000
    m.post(Loop(0.3, 0.35))
    run(m, SR, 256)
    assert int(0.3 * SR) <= m.position <= int(0.35 * SR)
    m.post(Loop(0, 0))  # off
    out = run(m, SR, 256)
    assert not m.playing and m.position == 0  # the end of the track stops
    assert np.abs(out[-100:]).max() == 0.0
    m.post(Play())
    run(m, 100, 100)
    m.post(Stop())
    run(m, 1000, 100)
    assert not m.playing and m.position == 0


def test_end_of_track_loops_when_asked() -> None:
    channels = stems(seconds=0.25)
    m = mixer_with(channels, at_end="loop")
    out = run(m, SR, 256, {0: [Play()]})
    assert m.playing
    assert np.abs(out[-1000:]).max() > 0.05


def test_pause_fades_and_holds_position() -> None:
    channels = stems()
    m = mixer_with(channels)
    run(m, 2000, 256, {0: [Play()]})
    m.post(Pause())
    out = run(m, 2000, 256)
    assert not m.playing
    assert np.abs(out[-1000:]).max() == 0.0
    held = m.position
    run(m, 2000, 256)
    assert m.position == held


def test_mix_to_channels_swap_is_seamless() -> None:
    channels = stems()
    mix = channels.sum(axis=0, keepdims=True)
    m = Mixer(max_channels=8)
    m.prepare(SR, 512)
    m.post(SetTrack(Track(mix, SR, ("mix",), is_mix=True)))
    m.post(Play())
    a = run(m, 10000, 256)
    m.post(SetTrack(Track(channels, SR, ("a", "b", "c", "d"))))
    b = run(m, 10000, 256)
    out = np.concatenate([a, b])
    x = m._xfade_len
    np.testing.assert_allclose(out[x:, 0], mix[0, 0, x:20000], atol=1e-6)


def test_channel_outputs_sum_to_the_mix() -> None:
    channels = stems()
    m = Mixer(max_channels=4)
    m.prepare(SR, 512, outputs="channels")
    m.post(SetTrack(Track(channels, SR, ("a", "b", "c", "d"))))
    out = run(m, 5000, 256, {0: [Play(), strip(2, gain=0.5)]})
    assert out.shape[1] == 8
    ref = mixer_with(channels)
    whole = run(ref, 5000, 256, {0: [Play(), strip(2, gain=0.5)]})
    np.testing.assert_allclose(out[:, 0::2].sum(axis=1), whole[:, 0], atol=1e-6)


def test_batch_applies_together_and_full_queue_is_counted() -> None:
    m = Mixer(max_channels=2, queue_size=3)
    m.prepare(SR, 256)
    assert all(m.post(Play()) for _ in range(3))
    assert not m.post(Play())
    assert m.dropped == 1
    m.process(np.zeros((256, 2), np.float32))
    assert m.post(Batch((strip(0, mute=True), strip(1, mute=True))))


def test_meters() -> None:
    channels = stems()
    m = mixer_with(channels)
    run(m, 8192, 256, {0: [Play(), strip(1, mute=True)]})
    m.read_meters()  # clears: the mute's fade-out is behind us
    run(m, 8192, 256)
    meters = m.read_meters()
    assert meters.peak.shape == (5,)  # four channels and the master
    assert meters.peak[1] < 0.05 and meters.peak[0] > 0.1 and meters.peak[-1] > 0.1
    assert 0 < meters.rms[0] < meters.peak[0]


def test_no_allocation_in_steady_state() -> None:
    channels = stems(n=8, seconds=2.0)
    m = mixer_with(channels)
    out = np.zeros((256, 2), np.float32)
    m.post(Play())
    for _ in range(20):
        m.process(out)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(200):
        if i % 50 == 0:
            m.post(strip(i % 8, gain=0.5))
        m.process(out)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 16 * 1024, grown  # no buffers: a few small Python objects at most
