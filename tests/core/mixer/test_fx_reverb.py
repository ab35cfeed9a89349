"""The reverb bus (issue #25 item 3): every strip's reverb send into one stereo
Freeverb behind a low-cut, its return into the master.

The compiled kernel against its numpy reference (bit for bit), the call's bounds,
block-size independence, no allocation per block, exactness at rest, the tail
after mute, fader, pause, stop and track change (its decay measured in a
recording), the low-cut, every rate, clicks on send and bus changes, and broken
values. Its surfaces (OSC, registry, scenes, OSCQuery) are tested with theirs.
"""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
from fx_helpers import (
    SR,
    block_allocations,
    burst_track,
    bus_events,
    click_energy,
    hard_step_energy,
    kernels_alike,
    mixer,
    noise,
    record,
    ring_out,
    run,
    tones,
)
from osc_host import SENDER, m, make_server, received

from stemdeck.core.control.registry import Registry
from stemdeck.core.mixer.commands import (
    Command,
    EchoTarget,
    Pause,
    Play,
    ReverbTarget,
    Seek,
    SetTrack,
    Stop,
    StripTarget,
    Track,
)
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.fx import REVERB_COMBS_44K, reverb_feedback, reverb_lengths
from stemdeck.core.mixer.kernel import (
    KERNEL_BUILT,
    REVERB_BUS_FIELDS,
    REVERB_STATE,
)
from stemdeck.core.mixer.numpy_kernel import NumpyKernel
from stemdeck.daemon.osc import Feedback
from stemdeck.daemon.osc.wire import encode_bundle


def _rsend(i: int, send: float, *, gain: float = 1.0, mute: bool = False) -> StripTarget:
    return StripTarget(i, gain, mute, False, 0.0, reverb=send)


def _reverb_events(rng: np.random.Generator, length: int, other: Track) -> dict[int, list[Command]]:
    def send() -> Command:
        return StripTarget(
            int(rng.integers(0, 4)),
            float(rng.uniform(0, 1)),
            bool(rng.random() < 0.2),
            False,
            0.0,
            float(rng.choice([0.0, rng.uniform(-1, 1)])),
            echo=float(rng.choice([0.0, rng.uniform(0, 1)])),
            reverb=float(rng.choice([0.0, 1.0, rng.uniform(0, 1)])),
        )

    def bus() -> Command:
        return ReverbTarget(
            float(rng.uniform(0, 1)), float(rng.uniform(20, 1000)), float(rng.uniform(0, 1))
        )

    def echo() -> Command:
        return EchoTarget(float(rng.uniform(1, 60)), float(rng.uniform(0, 1)), 0.0, 1.0)

    return bus_events(rng, length, other, ReverbTarget(0.7, 150.0, 1.0), send, bus, echo)


@pytest.mark.skipif(not KERNEL_BUILT, reason="the compiled kernel is not built")
@pytest.mark.parametrize("outputs", ["mix", "channels"])
# Seed 1 draws 1-frame blocks: seconds of Python per case, so it is in the slow tier.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_compiled_reverb_is_the_numpy_reference(outputs: str, seed: int) -> None:
    """Random sends (beside echo sends and filters), bus moves (size, low-cut and
    return gliding), mutes, pauses, seeks and track changes: the same samples from
    both kernels, master and outputs, bit for bit."""
    rng = np.random.default_rng(seed + 20)
    length = SR // 4
    other = Track(noise(3, 0.2, seed + 1), SR, ("x", "y", "z"))
    events = _reverb_events(rng, length, other)
    block = int(rng.choice([1, 64, 97, 256]))
    channels = noise(4, length / SR, seed)
    master, mixers = kernels_alike(channels, events, length=length, block=block, outputs=outputs)
    assert all(m.reverb_running for m in mixers)
    assert np.abs(master).max() > 0.1


def _call_args(n: int, b: int, sr: int = SR) -> tuple[np.ndarray, ...]:
    """A reverb call's buffers: strips, send ramps (one gliding), a bus with every
    ramp gliding, lengths at ``sr``, lines, state, mix."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((n, 2, b)) * 0.3).astype(np.float32)
    sends = np.array([[0.5, 1.0, 0.0], [0.001, -0.002, 0.0], [100.0, 300.0, 0.0]])
    bus = np.zeros(REVERB_BUS_FIELDS)
    bus[:10] = [0.9, -0.0005, 150.0, 0.8, 0.001, 50.0, 0.03, 0.0001, 200.0, 0.2]
    lens = reverb_lengths(sr)
    lines = np.zeros((2, int(lens.sum(axis=1).max()) + 5), np.float32)
    state = np.zeros((2, REVERB_STATE))
    mix = (rng.standard_normal((2, b)) * 0.1).astype(np.float32)
    return x, sends, bus, lens, lines, state, mix


@pytest.mark.skipif(not KERNEL_BUILT, reason="the compiled kernel is not built")
def test_the_reverb_call_is_the_numpy_reference_and_keeps_its_bounds() -> None:
    """The kernel call alone, over calls that carry state: equal to the reference
    in every buffer it writes; every ramp moves on. Positions, lengths or shapes
    that would leave a line raise ValueError and write nothing."""
    from stemdeck.core.mixer import _kernel

    n, b = 3, 3000
    results = []
    for kern in (_kernel, NumpyKernel(n, b)):
        x, sends, bus, lens, lines, state, mix = _call_args(n, b)
        kern.reverb(x, 2, b, sends, bus, lens, lines, state, mix)
        kern.reverb(x, 3, b - 7, sends, bus, lens, lines, state, mix)
        results.append((mix, lines, state, bus, sends))
    for got, want in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert np.abs(results[0][0]).max() > 0.1
    np.testing.assert_array_equal(results[0][4][2], [0.0] * 3)  # every send ramp moved on
    np.testing.assert_array_equal(results[0][3][[2, 5, 8]], [0.0] * 3)  # every bus ramp too
    x, sends, bus, lens, lines, state, mix = _call_args(n, 64)
    short = np.zeros((2, int(lens[1].sum()) - 1), np.float32)
    at_end = state.copy()
    at_end[1, 3] = lens[1, 3]  # a position one past its comb
    half = lens.copy()
    half[0, 2] = 2.5
    for args, what in (
        ((x, 2, 64, sends, bus, lens, short, state, mix), "reverb: lengths"),
        ((x, 2, 64, sends, bus, lens, lines, at_end, mix), "reverb: lengths"),
        ((x, 2, 64, sends, bus, half, lines, state, mix), "reverb: lengths"),
        ((x, 4, 64, sends, bus, lens, lines, state, mix), "reverb"),
        ((x, 2, 65, sends, bus, lens, lines, state, mix), "reverb"),
        ((x, 2, 64, sends, bus[:-1], lens, lines, state, mix), "reverb"),
    ):
        before = [a.copy() for a in args if isinstance(a, np.ndarray)]
        with pytest.raises(ValueError, match=f"^out of bounds: {what}$"):
            _kernel.reverb(*args)
        after = [a for a in args if isinstance(a, np.ndarray)]
        for was, now in zip(before, after, strict=True):
            np.testing.assert_array_equal(was, now)


@pytest.mark.parametrize("block", [1, 64, 65, 256, 4096])
def test_chunked_reverb_equals_whole(block: int) -> None:
    channels = noise(4, 0.5)
    events: dict[int, list[Command]] = {
        0: [_rsend(0, 0.7), _rsend(2, 1.0), ReverbTarget(0.8, 300.0, 0.9)],
        5000: [ReverbTarget(0.2, 40.0, 0.5), _rsend(1, 0.4)],
        9001: [Seek(0.1)],
        15000: [_rsend(0, 0.0), _rsend(2, 0.0, mute=True)],
    }
    whole = run(mixer(channels, block=24000), 24000, 24000, events)
    chunked = run(mixer(channels, block=block), 24000, block, events)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert np.abs(whole).max() > 0.1


def test_reverb_at_rest_is_exactly_the_plain_mix() -> None:
    """Sends opened then closed: once the tail has died away the bus stops and the
    output is, bit for bit, that of a mixer no send ever touched; a send of 0 and
    bus moves with no send open change nothing either."""
    channels = noise(4, 3.0)
    plain = run(mixer(channels), 3 * SR, 256)
    idle: dict[int, list[Command]] = {
        0: [_rsend(i, 0.0) for i in range(4)],
        100: [ReverbTarget(1.0, 20.0, 1.0)],
    }
    np.testing.assert_array_equal(run(mixer(channels), 3 * SR, 256, idle), plain)
    m = mixer(channels)
    events: dict[int, list[Command]] = {
        512: [_rsend(1, 0.8), ReverbTarget(0.3, 100.0, 1.0)],
        4096: [_rsend(1, 0.0)],
    }
    sent = run(m, 3 * SR, 256, events)
    assert not m.reverb_running and not m.fx.active
    assert np.abs(sent[3000:8000] - plain[3000:8000]).max() > 0.01  # it did reverberate
    done = 2 * SR  # size 0.3: feedback 0.784; -90 dBFS and 10 trips of 37 ms on, it stops
    np.testing.assert_array_equal(sent[done:], plain[done:])


def test_a_block_with_the_reverb_allocates_no_array_data() -> None:
    channels = noise(8, 3.0)
    m = Mixer(max_channels=8)
    m.prepare(SR, 1024)
    m.post(SetTrack(Track(channels, SR, tuple(map(str, range(8))))))
    out = np.zeros((1024, 2), np.float32)
    m.post(Play())
    m.post(ReverbTarget(0.8, 200.0, 0.8))
    m.post(EchoTarget(120.0, 0.7, 0.3, 0.8))
    for i in range(8):
        m.post(StripTarget(i, 1.0, False, False, 0.0, echo=0.3, reverb=0.5))
    for _ in range(5):
        m.process(out)

    def post(i: int) -> bool:
        if i % 10 == 0:
            m.post(_rsend(i % 8, 0.9 if i % 20 else 0.1))
        if i % 10 == 5:
            m.post(ReverbTarget(0.1 * (i % 7), 100.0 + i, 0.9))
        if i % 25 == 3:
            m.post(Seek(0.5))
        if i == 60:
            m.post(Pause())  # the tail blocks too
        return i % 5 == 0 or i % 25 == 3

    worst, steady = block_allocations(m, out, post)
    assert m.reverb_running and not m.playing
    assert worst < 8192 and steady < 4096, (worst, steady)


def _decay_db_per_s(master: np.ndarray, start: float, end: float) -> float:
    """The slope of the recorded level (dB per second, 20 ms RMS windows, both
    sides) fitted from ``start`` to ``end`` seconds."""
    win = int(0.02 * SR)
    a, b = int(start * SR) // win, int(end * SR) // win
    frames = master[a * win : b * win].astype(np.float64).reshape(b - a, win, 2)
    level = 10 * np.log10((frames**2).mean(axis=(1, 2)))
    t = (np.arange(a, b) + 0.5) * win / SR
    return float(np.polyfit(t, level, 1)[0])


@pytest.mark.parametrize("how", ["mute", "fader", "pause", "stop", "track"])
def test_the_reverb_tail_rings_out_as_its_size_says(how: str) -> None:
    """A 20 ms burst sent to the reverb (size 0.5: feedback 0.84), then the channel
    muted, its fader pulled down, the transport paused or stopped, or another track
    loaded: nothing new enters, and the recorded master decays smoothly at the rate
    the combs' feedback gives (between what the longest and the shortest comb
    give, -41 to -60 dB/s at 48 kHz), from a level it reached before the cut,
    with no drop at the cut; the bus then stops by itself."""
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    m.post(SetTrack(burst_track()))
    m.post(Play())
    m.post(_rsend(0, 1.0))
    m.post(ReverbTarget(0.5, 100.0, 1.0))
    cut: dict[str, list[Command]] = {
        "mute": [_rsend(0, 1.0, mute=True), _rsend(1, 0.0, mute=True)],
        "fader": [_rsend(0, 1.0, gain=0.0), _rsend(1, 0.0, gain=0.0)],
        "pause": [Pause()],
        "stop": [Stop()],
        "track": [SetTrack(Track(np.zeros((2, 2, SR * 3), np.float32), SR, ("a", "b")))],
    }
    master = record(m, 282 * 256, 2560, cut[how])  # 1.5 s; at 53 ms the burst is over
    assert m.reverb_running
    if how in ("pause", "stop"):
        assert not m.playing
    fast, slow = _comb_slopes(0.5)
    slope = _decay_db_per_s(master, 0.25, 1.4)
    assert fast < slope < slow * 0.95, (fast, slope, slow)
    # The level just after the cut goes on from the level before it (no drop), and
    # falls by more than 40 dB over the second after.
    rms = [float(np.sqrt((master[a : a + 960] ** 2).mean())) for a in (1600, 2600, 3600)]
    assert rms[1] > 0.5 * rms[0] and rms[2] > 0.5 * rms[0], rms
    late = float(np.sqrt((master[-4800:] ** 2).mean()))
    assert 20 * math.log10(late / rms[2]) < -40
    # The tail dies away and the bus stops: at once when stopped or paused;
    # playing, once the send is closed too.
    if how not in ("pause", "stop"):
        m.post(_rsend(0, 0.0, mute=how == "mute", gain=0.0 if how == "fader" else 1.0))
    ring_out(m, lambda: m.reverb_running)
    assert not m.reverb_running and not m.fx.active


@pytest.mark.parametrize("how", ["mute", "fader"])
def test_the_send_taps_the_strip_after_its_fader_and_mute(how: str) -> None:
    """The steady bed sent to the reverb: muted or pulled down, nothing of it enters
    any more and the return dies away (more than 60 dB down a second later); left
    alone, it keeps sounding."""
    levels = []
    for cut in (True, False):
        m = Mixer(max_channels=4)
        m.prepare(SR, 256)
        m.post(SetTrack(burst_track()))
        m.post(Play())
        m.post(_rsend(1, 1.0))
        m.post(ReverbTarget(0.0, 20.0, 1.0))  # feedback 0.7: about -90 dB a second
        out = np.zeros((256, 2), np.float32)
        tail = np.zeros((188 * 256, 2), np.float32)
        for _ in range(100):
            m.process(out)
        if cut:
            m.post(_rsend(1, 1.0, mute=how == "mute", gain=0.0 if how == "fader" else 1.0))
        for b in range(0, len(tail), 256):
            m.process(out)
            tail[b : b + 256] = m.master_view(256)
        levels.append(float(np.sqrt((tail[-4800:] ** 2).mean())))
        assert m.reverb_running
    assert levels[1] > 0.01 and levels[0] < levels[1] * 1e-3, levels


def _comb_slopes(size: float) -> tuple[float, float]:
    """The decay (dB/s) the shortest and the longest comb give at room ``size``."""
    fb = 20 * math.log10(reverb_feedback(size))
    return fb / (min(REVERB_COMBS_44K) / 44100), fb / ((max(REVERB_COMBS_44K) + 23) / 44100)


@pytest.mark.parametrize(("size", "fit"), [(0.0, (0.1, 0.5)), (1.0, (0.2, 1.9))])
def test_the_room_size_sets_the_decay(size: float, fit: tuple[float, float]) -> None:
    """Size 0 and 1 give feedback 0.7 and 0.98: after a pause the recorded tail
    falls at the rate those give (size 0.5 is measured by the tail test above)."""
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    m.post(SetTrack(burst_track()))
    m.post(Play())
    m.post(_rsend(0, 1.0))
    m.post(ReverbTarget(size, 100.0, 1.0))
    master = record(m, 375 * 256, 2560, [Pause()])  # 2 s
    fast, slow = _comb_slopes(size)
    slope = _decay_db_per_s(master, *fit)
    assert fast < slope < slow * 0.95, (fast, slope, slow)


def _return_level(hz: float, lowcut: float) -> float:
    """RMS of the reverb's return alone (the mix minus the dry mix) for a tone."""
    t = np.arange(SR) / SR
    ch = np.zeros((1, 2, SR), np.float32)
    ch[0] = 0.3 * np.sin(2 * np.pi * hz * t)
    dry = run(mixer(ch), SR, 256)
    wet = run(mixer(ch), SR, 256, {0: [_rsend(0, 1.0), ReverbTarget(0.5, lowcut, 1.0)]})
    return float(np.sqrt(((wet - dry)[SR // 2 :] ** 2).mean()))


def test_the_lowcut_spares_the_bass() -> None:
    """A 60 Hz tone reaches the reverb with the low-cut at 20 Hz, and is 30 dB down
    (12 dB/octave from 500 Hz: about 37) with it at 500 Hz; a 2 kHz tone loses
    under 1 dB."""
    assert _return_level(60.0, 500.0) < _return_level(60.0, 20.0) * 10 ** (-30 / 20)
    assert _return_level(2000.0, 500.0) > _return_level(2000.0, 20.0) * 10 ** (-1 / 20)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 96000, 192000])
def test_the_reverb_rings_at_every_rate(sr: int) -> None:
    """Its delays scale to the rate (each at least one sample, within the lines
    sized at prepare for the highest rate); the output is finite and the tail rings."""
    m = mixer(noise(2, 0.3, 0, sr), sr=sr)
    m.post(_rsend(0, 1.0))
    m.post(_rsend(1, 1.0))
    m.post(ReverbTarget(1.0, 1000.0, 1.0))
    frames = int(0.6 * sr)
    out = run(m, frames, 256, {int(0.3 * sr): [Pause()]})
    assert np.isfinite(out).all()
    assert np.abs(out[int(0.45 * sr) :]).max() > 0.01  # the tail, after the pause
    lens = reverb_lengths(sr)
    assert lens.min() >= 1 and lens[1, 0] > lens[0, 0]  # the right side spread wider


def test_reverb_send_and_bus_changes_never_click() -> None:
    """Reverb throws: both sends opened and closed in single commands every 40 ms,
    the return and low-cut thrown between extremes: under the click threshold;
    the same return throws as jumps (ramps of one sample): the detector hears them."""
    threshold = hard_step_energy() / 100
    throws: dict[int, list[Command]] = {0: [ReverbTarget(0.9, 100.0, 1.0)]}
    for j in range(20):
        on = j % 2 == 0
        throws[4096 + 1920 * j] = [_rsend(0, 1.0 if on else 0.0), _rsend(1, 0.7 if on else 0.2)]
    for j in range(6):
        throws[5000 + 6400 * j] = [ReverbTarget(0.9, 1000.0 if j % 2 else 20.0, j % 2)]
    out = run(mixer(tones()), SR, 256, throws)
    assert np.abs(out[SR // 2 :]).max() > 0.5
    assert click_energy(out) < threshold
    jumps = run(mixer(tones(), ramp_ms=1000 / SR), SR, 256, throws)
    assert click_energy(jumps) > 3 * threshold


def test_broken_reverb_values_never_reach_the_audio() -> None:
    """Commands that slipped past the registry (NaN, infinities, out of range) are
    clamped, NaN to the bottom of the range: the output stays finite and the engine
    shows what it applies."""
    m = mixer(noise(2, 0.5))
    nan, inf = float("nan"), float("inf")
    m.post(StripTarget(0, 1.0, False, False, 0.0, reverb=nan))
    m.post(StripTarget(1, 1.0, False, False, 0.0, reverb=inf))
    m.post(ReverbTarget(nan, inf, -inf))
    out = run(m, SR // 2, 256)
    assert np.isfinite(out).all() and np.abs(out).max() > 0.01
    assert m.nonfinite_blocks == 0
    assert m.reverb_state(0) == (0.0,) and m.reverb_state(1) == (1.0,)
    assert m.reverb_state(None) == (0.0, 1000.0, 0.0)
    m.post(ReverbTarget(inf, nan, nan))
    run(m, 256, 256)
    assert m.reverb_state(None) == (1.0, 20.0, 0.0)


# -- surfaces -----------------------------------------------------------------------


def test_reverb_over_osc_set_query_patterns_bundles_state_and_errors() -> None:
    host, server = make_server()
    try:
        assert server.datagram(m("/fx/reverb/*"), SENDER) == [
            ("/fx/reverb/size", [0.5]),
            ("/fx/reverb/lowcut", [200.0]),
            ("/fx/reverb/return", [1.0]),
        ]
        bundle = encode_bundle(
            [
                m("/fx/reverb/size", 0.75),
                m("/fx/reverb/lowcut", 350.0),
                m("/fx/reverb/return", 0.625),
                m("/ch/vocals/reverb", 0.5),
                m("/ch/[1-2]/reverb", 0.25),
            ]
        )
        assert server.datagram(bundle, SENDER) == []
        assert server.datagram(m("/ch/*/reverb"), SENDER) == [
            ("/ch/1/reverb", [0.25]),
            ("/ch/2/reverb", [0.25]),
            ("/ch/3/reverb", [0.5]),
            ("/ch/4/reverb", [0.0]),
        ]
        assert server.datagram(m("/fx/*/return"), SENDER) == [
            ("/fx/echo/return", [1.0]),
            ("/fx/reverb/return", [0.625]),
        ]
        host.block()
        assert host.engine.reverb_state(None) == (0.75, 350.0, 0.625)
        assert host.engine.reverb_state(2) == (0.5,) and host.engine.reverb_state(0) == (0.25,)
        state = dict(server.control.state())
        assert state["/ch/3/reverb"] == [0.5] and state["/fx/reverb/lowcut"] == [350.0]
        for bad, reason in (
            (m("/fx/reverb/lowcut", 19.5), "/fx/reverb/lowcut takes 20..1000 Hz, got 19.5"),
            (m("/fx/reverb/lowcut", 1001.0), "/fx/reverb/lowcut takes 20..1000 Hz, got 1001"),
            (m("/fx/reverb/size", 1.5), "/fx/reverb/size takes 0..1, got 1.5"),
            (m("/fx/reverb/size", "big"), "/fx/reverb/size takes a number, got str 'big'"),
            (m("/fx/reverb/return", float("nan")), "/fx/reverb/return got NaN"),
            (m("/fx/reverb/size"), None),
            (m("/ch/1/reverb", -0.5), "/ch/1/reverb takes 0..1, got -0.5"),
            (m("/ch/1/reverb", 0.5, 0.5), "/ch/1/reverb takes one number, got 2 arguments"),
            (m("/fx/reverb/damp", 0.5), "unknown address /fx/reverb/damp"),
            (m("/ch/1/reverb/pre", 1), "unknown address /ch/1/reverb/pre"),
        ):
            before = host.registry.snapshot()
            if reason is None:  # a query, not a change
                assert server.datagram(bad, SENDER) == [("/fx/reverb/size", [0.75])]
                continue
            # One in a bundle with a good change: the bundle is all or nothing.
            assert server.datagram(encode_bundle([m("/fx/reverb/size", 0.1), bad]), SENDER) == [
                ("/error", [reason])
            ]
            assert host.registry.snapshot() == before
        assert host.registry_as_engine() == host.engine_state()[:8]
    finally:
        server.sock.close()


def test_reverb_feedback_and_midi_views() -> None:
    """Subscribers hear a reverb change by name; the 0..1 view (MIDI) puts the
    low-cut exponentially over 20 Hz..1 kHz and the rest as it is."""
    _host, server = make_server()
    sub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sub.bind(("127.0.0.1", 0))
    sub.settimeout(5.0)
    feedback = Feedback(server)
    try:
        server.datagram(m("/subscribe", sub.getsockname()[1]), SENDER)
        feedback.tick()
        first = received(sub, "/transport/position")
        assert ("/ch/vocals/reverb", [0.0]) in first and ("/fx/reverb/size", [0.5]) in first
        server.datagram(m("/ch/3/reverb", 0.5), SENDER)
        server.datagram(m("/fx/reverb/lowcut", 100.0), SENDER)
        feedback.tick()
        assert received(sub, "/meter")[:2] == [
            ("/ch/vocals/reverb", [0.5]),
            ("/fx/reverb/lowcut", [100.0]),
        ]
    finally:
        sub.close()
        server.sock.close()
    reg = Registry(["drums", "bass"])
    since = reg.generation
    with reg.transaction() as txn:
        txn.set_norm("/fx/reverb/lowcut", 0.5)
        txn.set_norm("/fx/reverb/size", 0.25)
        txn.set_norm("/ch/bass/reverb", 0.75)
        assert txn.commit(lambda c: True)
    assert reg.get("/fx/reverb/lowcut") == pytest.approx(math.sqrt(20.0 * 1000.0))
    assert reg.get_norm("/fx/reverb/lowcut") == pytest.approx(0.5)
    assert reg.get("/fx/reverb/size") == 0.25 and reg.get("/ch/2/reverb") == 0.75
    assert reg.written_since(since) == {"/fx/reverb/lowcut", "/fx/reverb/size", "/ch/2/reverb"}
