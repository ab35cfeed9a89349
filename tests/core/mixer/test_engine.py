"""The mixer called directly: block-size independence, click-free changes, logic."""

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from fx_helpers import block_allocations

from stemdeck.core.mixer.commands import (
    Batch,
    Command,
    Keylock,
    Loop,
    MasterTarget,
    Pause,
    Pitch,
    Play,
    Rate,
    Seek,
    SetTrack,
    Stop,
    StripTarget,
    Track,
)
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.params import db_to_gain, fader_to_db

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


def run(
    m: Mixer, frames: int, block: int, events: Mapping[int, Sequence[Command]] | None = None
) -> np.ndarray:
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


SCENARIO: dict[int, list[Command]] = {
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
    m.post(SetTrack(Track(channels, SR, ("a", "b", "c", "d")), same_audio=True))
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


def test_full_queue_is_counted() -> None:
    m = Mixer(max_channels=2, queue_size=3)
    m.prepare(SR, 256)
    assert all(m.post(Play()) for _ in range(3))
    assert not m.post(Play())
    assert m.dropped == 1
    m.process(np.zeros((256, 2), np.float32))
    assert m.post(Play())


def test_batch_lands_in_one_block() -> None:
    """A batch is processed whole at the top of one block: the same output as its
    commands posted together, and both mutes start in the same block."""
    channels = stems(n=2)
    batch = Batch((strip(0, mute=True), strip(1, mute=True)))
    a = mixer_with(channels)
    out_a = run(a, 8192, 256, {0: [Play()], 1024: [batch]})
    b = mixer_with(channels)
    out_b = run(b, 8192, 256, {0: [Play()], 1024: [strip(0, mute=True), strip(1, mute=True)]})
    np.testing.assert_array_equal(out_a, out_b)
    x = a._xfade_len  # the play fade-in
    np.testing.assert_allclose(out_a[x:1024, 0], channels[:, 0, x:1024].sum(axis=0), atol=1e-6)
    assert np.abs(out_a[1024 + a._ramp_len :]).max() == 0.0  # both faded out
    assert np.abs(out_a[1024 : 1024 + a._ramp_len - 1]).max() > 0.01  # as a fade, no cut
    c = mixer_with(channels)
    out_c = run(c, 8192, 256, {0: [Play()], 1024: [strip(0, mute=True)], 1280: [batch]})
    assert not np.array_equal(out_c, out_a)  # a command one block later is heard


def test_meters_one_per_strip_post_fader_and_transport() -> None:
    channels = stems()
    m = mixer_with(channels)
    run(m, 8192, 256, {0: [Play(), strip(1, mute=True), strip(2, gain=0.5)]})
    m.read_meters()  # clears: the mute's fade-out is behind us
    run(m, 8192, 256)
    meters = m.read_meters()
    assert meters.peak.shape == (9,)  # every strip (8) and the master
    assert meters.names == ("ch0", "ch1", "ch2", "ch3")
    assert meters.peak[1] == 0.0 and meters.peak[0] > 0.1 and meters.peak[-1] > 0.1
    assert meters.peak[4:8].tolist() == [0.0] * 4  # strips with no channel
    np.testing.assert_allclose(meters.peak[2], 0.5 * np.abs(channels[2]).max(), rtol=1e-3)
    assert 0 < meters.rms[0] < meters.peak[0]
    m.post(Pause())  # channel meters follow the transport fade, like the master
    run(m, 4096, 256)
    m.read_meters()
    run(m, 4096, 256)
    assert m.read_meters().peak.tolist() == [0.0] * 9


def test_original_standing_in_has_silent_channel_meters() -> None:
    channels = stems()
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    m.post(SetTrack(Track(channels.sum(axis=0, keepdims=True), SR, ("mix",), is_mix=True)))
    run(m, 4096, 256, {0: [Play()]})
    meters = m.read_meters()
    assert meters.peak.shape == (5,) and meters.peak[:4].tolist() == [0.0] * 4
    assert meters.peak[4] > 0.1 and meters.names == ()


def _two_tracks() -> tuple[np.ndarray, np.ndarray]:
    # Same length: "same audio" must come from the command, never from the length.
    return stems(seconds=1.0, seed=1), stems(seconds=1.0, seed=2)[:, :, ::-1].copy()


def test_track_change_starts_new_track_and_fades_old_out() -> None:
    old, new = _two_tracks()
    m = mixer_with(old)
    m.post(Loop(0.1, 0.5))
    run(m, 10000, 256, {0: [Play()]})
    pos = m.position
    m.post(SetTrack(Track(new, SR, ("a", "b", "c", "d"))))
    out = run(m, 4000, 256)
    x = m._xfade_len
    fade_in = np.arange(1, x + 1) / x
    want = old[:, 0, pos : pos + x].sum(axis=0) * (1 - fade_in) + new[:, 0, :x].sum(0) * fade_in
    np.testing.assert_allclose(out[:x, 0], want, atol=1e-5)
    np.testing.assert_allclose(out[x:, 0], new[:, 0, x:4000].sum(axis=0), atol=1e-5)
    assert m.loop is None and m.position == 4000


def test_same_audio_keeps_position_and_loop() -> None:
    old = stems()
    m = mixer_with(old)
    m.post(Loop(0.1, 0.5))
    run(m, 10000, 256, {0: [Play()]})
    pos, loop = m.position, m.loop
    m.post(SetTrack(Track(old.copy(), SR, ("a", "b", "c", "d")), same_audio=True))
    out = run(m, 256, 256)
    assert m.loop == loop and m.position == pos + 256
    np.testing.assert_allclose(out[:, 0], old[:, 0, pos : pos + 256].sum(axis=0), atol=1e-5)


@pytest.mark.parametrize("gap", [1, 60, 239])
def test_seek_during_crossfade_keeps_the_fading_head(gap: int) -> None:
    channels = stems()
    x = round(5e-3 * SR)
    assert gap < x
    events: dict[int, list[Command]] = {
        0: [Play()],
        5000: [Seek(0.5)],
        5000 + gap: [Seek(0.25)],
        9000: [Seek(0.6)],
    }
    out = run(mixer_with(channels), 20000, 64, events)
    natural = np.abs(np.diff(channels.sum(axis=0), axis=1)).max()
    assert np.abs(np.diff(out, axis=0)).max() < natural + 0.01
    chunked = run(mixer_with(channels), 20000, 7, events)
    np.testing.assert_allclose(chunked, out, atol=1e-6)


@pytest.mark.parametrize("block", [64, 256])
def test_a_seek_to_the_end_lets_the_old_head_fade_out(block: int) -> None:
    """The play head reaches the end at once; the head the seek left behind ends its
    crossfade (it was cut, #21 item 10), then the transport stops at position 0 with
    the loop kept, as at any end of the track."""
    channels = stems()
    m = mixer_with(channels, block=block)
    run(m, 10000, block, {0: [Play(), Loop(0.1, 0.2)]})
    pos, loop = m.position, m.loop
    m.post(Seek(1e9))
    out = run(m, block, block)
    assert not m.rolling  # the play LED is off from the end on
    out = np.concatenate([out, run(m, 1024 - block, block)])
    x = m._xfade_len
    fade_out = 1 - np.arange(1, x + 1) / x
    np.testing.assert_allclose(
        out[:x, 0], channels[:, 0, pos : pos + x].sum(axis=0) * fade_out, atol=1e-6
    )
    assert np.abs(out[x:]).max() == 0.0
    assert (m.playing, m.position, m.loop) == (False, 0, loop)


def test_play_as_the_end_fades_starts_from_the_beginning() -> None:
    channels = stems()
    m = mixer_with(channels)
    run(m, 10000, 64, {0: [Play()]})
    pos = m.position
    out = run(m, 2000, 64, {0: [Seek(1e9)], 100: [Play()]})
    x = m._xfade_len
    t = np.arange(2000)
    old = np.zeros(2000)
    old[:x] = channels[:, 0, pos : pos + x].sum(axis=0) * (1 - (t[:x] + 1) / x)
    new = np.zeros(2000)
    new[100:] = channels[:, 0, : 2000 - 100].sum(axis=0) * np.minimum((t[:1900] + 1) / x, 1)
    np.testing.assert_allclose(out[:, 0], old + new, atol=1e-6)
    assert m.rolling and m.position == 1900


def test_short_loops_are_lengthened_and_wrap_without_clicks() -> None:
    channels = stems()
    m = mixer_with(channels)
    out = run(m, 20000, 256, {0: [Play(), Loop(0.2, 0.2001)]})
    min_loop = round(m.min_loop_ms * 1e-3 * SR)  # 20 ms: longer than two crossfades
    assert m.loop == (int(0.2 * SR), int(0.2 * SR) + min_loop)
    assert min_loop >= 2 * m._xfade_len
    natural = np.abs(np.diff(channels.sum(axis=0), axis=1)).max()
    assert np.abs(np.diff(out, axis=0)).max() < natural + 0.01


def test_stop_clears_the_loop_also_when_stopped() -> None:
    m = mixer_with(stems())
    m.post(Seek(0.3))
    m.post(Loop(0.2, 0.4))
    run(m, 256, 256)
    assert m.loop is not None and not m.playing
    m.post(Stop())
    run(m, 256, 256)
    assert m.loop is None and m.position == 0


def test_strip_targets_recomputed_once_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Mixer(max_channels=64)
    m.prepare(SR, 64)
    m.post(SetTrack(Track(stems(n=64, seconds=0.1), SR, tuple(map(str, range(64))))))
    calls = []
    real = m._retarget

    def counted(*, immediate: bool = False, now: bool = False) -> None:
        calls.append(1)
        real(immediate=immediate, now=now)

    monkeypatch.setattr(m, "_retarget", counted)
    for i in range(64):
        m.post(strip(i, solo=True))
    m.process(np.zeros((64, 2), np.float32))
    assert calls == [1]


def test_a_non_finite_sample_is_never_output() -> None:
    channels = stems()
    channels[2, 1, 3000:3004] = np.nan
    channels[1, 0, 6000] = np.inf
    m = mixer_with(channels)
    out = run(m, 10000, 256, {0: [Play()]})
    assert np.isfinite(out).all()
    assert m.nonfinite_blocks == 2
    assert np.abs(out[:2816]).max() > 0.1  # blocks before the damage play
    assert np.abs(out[3072:3300]).max() > 0.1  # and after it
    meters = m.read_meters()
    assert np.isfinite(meters.peak).all() and np.isfinite(meters.rms).all()
    master = np.zeros((256, 2), np.float32)
    m.post(Seek(3000 / SR))
    m.process(master)
    assert np.isfinite(m.master_view(256)).all()


@pytest.mark.parametrize("keylock", [False, True])
@pytest.mark.parametrize("outputs", ["mix", "channels"])
def test_block_allocates_no_array_data(outputs: str, keylock: bool) -> None:
    """A block allocates less than one channel's stereo block of data (8 KiB at
    1024 frames), only views, scalars and numpy's iterator buffers of
    AUDIO_BUFSIZE elements (see core/mixer/engine.py); a block with no command under 4 KiB.
    The same with keylock on and a pitch shift at another rate (the shifter runs)."""
    channels = stems(n=8, seconds=3.0)
    m = Mixer(max_channels=8)
    m.prepare(SR, 1024, outputs=outputs)
    m.post(SetTrack(Track(channels, SR, tuple(map(str, range(8))))))
    out = np.zeros((1024, m.out_channels), np.float32)
    if keylock:
        m.post(Batch((Rate(1.08), Keylock(True), Pitch(2.0))))
    m.post(Play())
    for _ in range(5):
        m.process(out)

    def post(i: int) -> bool:
        if i % 10 == 0:
            m.post(strip(i % 8, gain=0.5, solo=i % 20 == 0, pan=0.3))
        if i % 25 == 3:
            m.post(Seek(0.5))
        if i == 50:
            m.post(MasterTarget(0.7, False))
            m.post(Loop(1.0, 1.05))
        return i % 10 == 0 or i % 25 == 3

    worst, steady = block_allocations(m, out, post)
    assert worst < 8192 and steady < 4096, (worst, steady)


def _aim_from_scratch(m: Mixer) -> np.ndarray:
    """Where every strip must be heading, computed from its parameters alone."""
    strips = [m.strip_state(i) for i in range(m.max_channels)]
    any_solo = any(s.solo for s in strips)
    want = np.empty((m.max_channels, 2))
    for i, s in enumerate(strips):
        audible = (1.0 if s.solo else 0.0) if any_solo else 1.0
        audible = audible * (0.0 if s.mute else 1.0) * s.gain
        # Balance law: centre is unity; the side turned away from falls linearly.
        want[i] = [g * audible for g in (min(1.0, 1.0 - s.pan), min(1.0, 1.0 + s.pan))]
    return want


def test_only_changed_strips_are_reaimed_and_every_target_stays_right() -> None:
    """A change re-aims its own strip only; a solo change, every strip. After any mix of
    commands, each strip heads where its parameters say, and ends there exactly."""
    import random

    rng = random.Random(7)
    m = mixer_with(stems(n=6, seconds=2.0))
    m.post(Play())
    block = np.zeros((256, 2), np.float32)
    for _ in range(300):
        for _ in range(rng.choice([0, 1, 1, 3])):
            m.post(
                StripTarget(
                    rng.randrange(8),
                    rng.choice([0.0, 0.5, 1.0, rng.uniform(0.0, 2.0)]),
                    rng.random() < 0.2,
                    rng.random() < 0.15,
                    rng.choice([0.0, rng.uniform(-1.0, 1.0)]),
                )
            )
        m.process(block)
        np.testing.assert_array_equal(m._tgt, _aim_from_scratch(m))
    for _ in range(4):  # a ramp is 480 samples: two blocks end every one of them
        m.process(block)
    np.testing.assert_array_equal(m._cur, _aim_from_scratch(m))


def test_separation_replacing_the_original_reaims_every_strip() -> None:
    channels = stems(n=3)
    m = Mixer(max_channels=3)
    m.prepare(SR, 256)
    m.post(SetTrack(Track(channels.sum(axis=0, keepdims=True), SR, ("mix",), is_mix=True)))
    m.post(StripTarget(1, 0.25, False, False, -0.5))  # set while the original stands in
    m.post(Play())
    block = np.zeros((256, 2), np.float32)
    m.process(block)
    m.post(SetTrack(Track(channels, SR, ("a", "b", "c")), same_audio=True))
    m.process(block)  # every strip starts at unity and glides to its level
    expected = np.array([[1.0, 1.0], [0.25, 0.25 * 0.5], [1.0, 1.0]])
    np.testing.assert_array_equal(m._tgt, expected)
    for _ in range(3):
        m.process(block)
    np.testing.assert_array_equal(m._cur, expected)


def _pages_in_memory(array: np.ndarray) -> tuple[int, int]:
    """(in memory, in all) of the pages under ``array`` (/proc/self/pagemap, bit 63)."""
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    first = array.ctypes.data // page
    last = (array.ctypes.data + array.nbytes - 1) // page
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = np.frombuffer(f.read((last - first + 1) * 8), np.uint64)
    return int((entries >> np.uint64(63)).sum()), len(entries)


def _drop_pages(array: np.ndarray) -> None:
    """Give the whole pages inside ``array``, all zeros, back to the kernel
    (``madvise(MADV_DONTNEED)``): they read as zeros again, out of memory."""
    import ctypes
    import os

    assert not array.any()
    page = os.sysconf("SC_PAGE_SIZE")
    start = -(-array.ctypes.data // page) * page
    stop = (array.ctypes.data + array.nbytes) // page * page
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.madvise(start, stop - start, 4) == 0, os.strerror(ctypes.get_errno())


def test_fault_in_puts_every_buffer_in_memory_and_changes_none() -> None:
    """The daemon locks only pages in memory (daemon/realtime.py): the buffers the
    block writes must be there before the audio starts, or the callback takes the
    page faults. The echo's delay line is the largest, and prepare leaves it
    unwritten (a fresh mapping of zeros)."""
    m = Mixer(max_channels=4)
    m.prepare(48000, 256)
    line = m.fx._echo_line
    arrays = {name: v for name, v in vars(m).items() if isinstance(v, np.ndarray)}
    before = {name: v.copy() for name, v in arrays.items()}
    _drop_pages(line)  # as a fresh mapping has them (the heap may have reused some)
    touched, pages = _pages_in_memory(line)
    assert touched < pages  # not yet: the test would prove nothing otherwise
    assert m.fault_in() >= line.nbytes + m._metered.nbytes
    assert _pages_in_memory(line) == (pages, pages)
    assert not line.any()
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(m, name), value, err_msg=name)


def test_fault_in_needs_prepare() -> None:
    with pytest.raises(RuntimeError, match=r"^Mixer\.fault_in before prepare$"):
        Mixer(max_channels=2).fault_in()
