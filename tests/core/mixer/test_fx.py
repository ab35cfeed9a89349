"""Per-stem FX in the mixer: the DJ filter on every strip and on the master, and
the echo bus every strip sends to.

The compiled kernel against its numpy reference, block-size independence, no
allocation per block, exactness at rest, stability at every setting and rate,
and a click detector over fast sweeps; then the filter over OSC (set, query,
patterns, bundles, feedback) and in scenes.
"""

from __future__ import annotations

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
    MasterTarget,
    Pause,
    Play,
    Seek,
    SetTrack,
    Stop,
    StripTarget,
    Track,
)
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.kernel import KERNEL_BUILT
from stemdeck.core.mixer.numpy_kernel import NumpyKernel
from stemdeck.daemon.osc import Feedback
from stemdeck.daemon.osc.wire import encode_bundle


def _filt(i: int, knob: float, res: float = 0.0, gain: float = 1.0) -> StripTarget:
    return StripTarget(i, gain, False, False, 0.0, knob, res)


def _knobs() -> np.ndarray:
    """A fast sweep through the whole knob: 0 -> -1 -> 1 -> 0 in 240 moves."""
    return np.concatenate([np.linspace(0, -1, 60), np.linspace(-1, 1, 120), np.linspace(1, 0, 60)])


def _sweep(strips: int, start: int, step: int, *, res: float = 0.0) -> dict[int, list[Command]]:
    """Every strip's knob swept (odd strips mirrored), a command every ``step``
    samples (160: a controller sending 300 changes a second)."""
    return {
        start + step * j: [_filt(i, float(k) * (-1) ** i, res) for i in range(strips)]
        for j, k in enumerate(_knobs())
    }


# -- the kernel ---------------------------------------------------------------------


def _fx_events(rng: np.random.Generator, length: int) -> dict[int, list[Command]]:
    events: dict[int, list[Command]] = {}
    for _ in range(40):
        t = int(rng.integers(0, length - 1))
        kind = rng.integers(0, 6)
        cmd: Command
        if kind < 3:
            knob = float(rng.choice([0.0, -1.0, 1.0, rng.uniform(-1, 1)]))
            cmd = _filt(int(rng.integers(0, 4)), knob, float(rng.uniform(0, 1)), 0.8)
        elif kind == 3:
            cmd = MasterTarget(0.9, False, float(rng.uniform(-1, 1)), float(rng.uniform(0, 1)))
        elif kind == 4:
            cmd = Seek(float(rng.uniform(0, length / SR)))
        elif rng.random() < 0.5:
            cmd = Pause()
        else:
            cmd = Play()
        events.setdefault(t, []).append(cmd)
    return events


@pytest.mark.skipif(not KERNEL_BUILT, reason="the compiled kernel is not built")
@pytest.mark.parametrize("outputs", ["mix", "channels"])
# Seed 1 draws 1-frame blocks: 2 s of Python per case, so it is in the slow tier.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), 2])
def test_compiled_filters_are_the_numpy_reference(outputs: str, seed: int) -> None:
    """Random filter moves on strips and the master, seeks (fading heads through the
    filters), pauses: the same samples from both kernels, bit for bit."""
    rng = np.random.default_rng(seed)
    length = SR // 3
    channels = noise(4, length / SR, seed)
    events = _fx_events(rng, length)
    block = int(rng.choice([1, 64, 97, 256]))
    outs = []
    for compiled in (True, False):
        m = mixer(channels, block=256, outputs=outputs, compiled=compiled)
        outs.append(run(m, length, block, events))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0]).max() > 0.1


@pytest.mark.skipif(not KERNEL_BUILT, reason="the compiled kernel is not built")
def test_the_filter_call_is_the_numpy_reference_on_every_path() -> None:
    """The kernel call alone: knobs at rest, gliding, at both ends, state carried
    across calls, every ramp moving on."""
    from stemdeck.core.mixer import _kernel

    rng = np.random.default_rng(7)
    n, b = 5, 300
    x = (rng.standard_normal((n, 2, b)) * 0.3).astype(np.float32)
    table = Mixer(max_channels=1)
    table.prepare(SR, 64)
    results = []
    for kern in (_kernel, NumpyKernel(n, b)):
        xx, state = x.copy(), np.zeros((n, 2, 2))
        params = (
            np.array([0.0, 0.5, -0.7, 1.0, -1.0]),
            np.array([0.0, 0.01, -0.002, 0.0, 0.001]),
            np.array([0.0, 100.0, 400.0, 0.0, 50.0]),
            np.full(n, 0.5),
            np.zeros(n),
            np.zeros(n),
        )
        kern.filter(xx, 4, b, *params, state, table.fx.table)
        kern.filter(xx, 4, b - 10, *params, state, table.fx.table)
        results.append((xx, state, params[2]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], [0.0] * 5)  # every ramp moved on
    np.testing.assert_array_equal(results[0][0][0], x[0])  # knob 0: untouched
    np.testing.assert_array_equal(results[0][0][4], x[4])  # past ``rows``: untouched


@pytest.mark.parametrize("block", [1, 64, 65, 256, 4096])
def test_chunked_filters_equal_whole(block: int) -> None:
    channels = noise(4, 0.5)
    events = _sweep(4, 1000, 80)
    events[9001] = [Seek(0.1)]
    events[15000] = [MasterTarget(1.0, False, 0.6)]
    whole = run(mixer(channels, block=24000), 24000, 24000, events)
    chunked = run(mixer(channels, block=block), 24000, block, events)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert np.abs(whole).max() > 0.1


@pytest.mark.parametrize("outputs", ["mix", "channels"])
def test_a_filtered_block_allocates_no_array_data(outputs: str) -> None:
    """As tests/test_engine.py holds the plain block: a filter on every strip and on
    the master, gliding, adds no array allocation."""
    channels = noise(8, 3.0)
    m = Mixer(max_channels=8)
    m.prepare(SR, 1024, outputs=outputs)
    m.post(SetTrack(Track(channels, SR, tuple(map(str, range(8))))))
    out = np.zeros((1024, m.out_channels), np.float32)
    m.post(Play())
    m.post(MasterTarget(1.0, False, 0.3, 0.2))
    for i in range(8):
        m.post(_filt(i, -0.5, 0.5))
    for _ in range(5):
        m.process(out)

    def post(i: int) -> bool:
        if i % 10 == 0:
            m.post(_filt(i % 8, 0.7 if i % 20 else -0.7, 0.9))
        if i % 25 == 3:
            m.post(Seek(0.5))
        return i % 10 == 0 or i % 25 == 3

    worst, steady = block_allocations(m, out, post)
    assert m.fx.active
    assert worst < 8192 and steady < 4096, (worst, steady)


@pytest.mark.parametrize("compiled", [None, False])
def test_every_filter_at_rest_is_exactly_the_plain_mix(compiled: bool | None) -> None:
    """Knobs at 0 from the start, or brought back to 0: once the glide has ended the
    output is bit for bit that of a mixer no filter ever touched (and the plain
    block path runs again)."""
    channels = noise(4, 0.5)
    plain = run(mixer(channels, compiled=compiled), 24000, 256)
    at_zero: dict[int, list[Command]] = {
        0: [*(_filt(i, 0.0, 0.7) for i in range(4)), MasterTarget(1.0, False, 0.0, 1.0)]
    }
    np.testing.assert_array_equal(
        run(mixer(channels, compiled=compiled), 24000, 256, at_zero), plain
    )
    moved: dict[int, list[Command]] = {
        512: [_filt(1, -0.8, 0.5), MasterTarget(1.0, False, 0.4)],
        4096: [_filt(1, 0.0, 0.5), MasterTarget(1.0, False, 0.0)],
    }
    m = mixer(channels, compiled=compiled)
    back = run(m, 24000, 256, moved)
    assert not m.fx.active
    settled = 4096 + m._ramp_len + 256  # the glide back, and the block it ends in
    assert np.abs(back[600:4096] - plain[600:4096]).max() > 0.05  # it did filter
    np.testing.assert_array_equal(back[settled:], plain[settled:])


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 96000, 192000])
def test_the_filter_is_stable_at_every_setting_and_rate(sr: int) -> None:
    """White noise through random knob and resonance moves (ends and extremes
    included) and full-scale steps: always finite, never above the resonance's
    own peak gain (Q 10) times the input."""
    rng = np.random.default_rng(sr)
    seconds = 0.5
    channels = noise(2, seconds, sr, sr)
    frames = int(seconds * sr)
    events: dict[int, list[Command]] = {}
    for t in range(0, frames, frames // 60):
        knob = float(rng.choice([-1.0, 1.0, -0.999, 0.999, rng.uniform(-1, 1)]))
        res = float(rng.choice([0.0, 1.0, rng.uniform(0, 1)]))
        events[t] = [_filt(0, knob, res), _filt(1, -knob, 1.0 - res)]
    out = run(mixer(channels, sr=sr), frames, 256, events)
    assert np.isfinite(out).all()
    assert np.abs(out).max() < 12 * np.abs(channels).sum(axis=0).max()


# -- clicks -------------------------------------------------------------------------


def test_a_fast_filter_sweep_never_clicks() -> None:
    """A click is a 64-sample frame with at least 1/100 (-20 dB) of a hard gain
    step's energy above 4 kHz. A sweep of both strips through the whole knob in a
    second, at any resonance, on strips and master, stays below it; the same
    sweep with no glide (each command a jump) does not: the detector sees zipper
    noise."""
    threshold = hard_step_energy() / 100
    assert click_energy(run(mixer(tones()), SR, 256)) < threshold / 1000  # the tones
    for res in (0.0, 1.0):
        sweep = _sweep(2, 4096, 160, res=res)
        assert click_energy(run(mixer(tones()), SR, 256, sweep)) < threshold, res
    master: dict[int, list[Command]] = {
        4096 + 160 * j: [MasterTarget(1.0, False, float(k))] for j, k in enumerate(_knobs())
    }
    assert click_energy(run(mixer(tones()), SR, 256, master)) < threshold
    jumps = run(mixer(tones(), ramp_ms=1000 / SR), SR, 256, _sweep(2, 4096, 160))
    assert click_energy(jumps) > 3 * threshold
    # A throw to either end and back, each in one command, glides too.
    throw: dict[int, list[Command]] = {
        4096: [_filt(0, -1.0)],
        20000: [_filt(0, 1.0)],
        36000: [_filt(0, 0.0)],
    }
    assert click_energy(run(mixer(tones()), SR, 256, throw)) < threshold


def test_the_filter_closes_and_opens_as_a_dj_expects() -> None:
    """Low-pass at -1 (20 Hz) nearly silences tones of 110 and 165 Hz, high-pass
    at 1 (20 kHz) does; low-pass at -0.3 and high-pass at 0.1 keep them, high-pass
    at 0.8 removes them (cutoffs exponential in the knob, docs/osc.md)."""
    low = tones()

    def level(knob: float) -> float:
        out = run(mixer(low), SR, 256, {0: [_filt(0, knob), _filt(1, knob)]})
        return float(np.sqrt((out[SR // 2 :] ** 2).mean()))

    open_ = level(0.0)
    assert level(-1.0) < open_ / 10 and level(1.0) < open_ / 100
    assert level(-0.3) > open_ * 0.9  # low-pass at 2.5 kHz keeps the low tones
    assert level(0.1) > open_ * 0.9  # high-pass at 40 Hz too
    assert level(0.8) < open_ / 100  # high-pass at 5 kHz removes them


# -- surfaces -----------------------------------------------------------------------


def test_filter_over_osc_set_query_patterns_bundles_and_errors() -> None:
    host, server = make_server()
    try:
        assert server.datagram(m("/ch/bass/filter", -0.5), SENDER) == []
        assert server.datagram(m("/ch/2/filter"), SENDER) == [("/ch/2/filter", [-0.5])]
        assert server.datagram(m("/ch/bass/filter/res"), SENDER) == [("/ch/bass/filter/res", [0.0])]
        assert server.datagram(m("/ch/*/filter/res", 0.25), SENDER) == []
        assert server.datagram(m("/ch/[1-2]/filter/res"), SENDER) == [
            ("/ch/1/filter/res", [0.25]),
            ("/ch/2/filter/res", [0.25]),
        ]
        bundle = encode_bundle([m("/master/filter", 0.75), m("/ch/drums/filter", 1.0)])
        assert server.datagram(bundle, SENDER) == []
        assert server.datagram(m("/master/filter"), SENDER) == [("/master/filter", [0.75])]
        assert host.engine_state()[5][0] == (1.0, 0.25)  # the engine took it: strip 1
        assert host.engine.filter_state(1) == (-0.5, 0.25)
        assert host.engine.filter_state(None) == (0.75, 0.0)
        for bad, reason in (
            (
                m("/ch/1/filter", 1.5),
                "/ch/1/filter takes -1..1 (below 0 low-pass, above 0 high-pass), got 1.5",
            ),
            (m("/ch/1/filter/res", -0.1), "/ch/1/filter/res takes 0..1, got -0.1"),
            (m("/ch/1/filter", float("nan")), "/ch/1/filter got NaN"),
            (m("/master/filter/q", 0.5), "unknown address /master/filter/q"),
        ):
            before = host.registry.snapshot()
            assert server.datagram(bad, SENDER) == [("/error", [reason])]
            assert host.registry.snapshot() == before
        # A bundle with one bad filter changes nothing.
        bundle = encode_bundle([m("/ch/3/filter", 0.5), m("/ch/4/filter", 2.0)])
        assert server.datagram(bundle, SENDER)[0][0] == "/error"
        assert server.datagram(m("/ch/3/filter"), SENDER) == [("/ch/3/filter", [0.0])]
        assert host.registry_as_engine() == host.engine_state()[:8]
    finally:
        server.sock.close()


def test_filter_feedback_reaches_subscribers_by_name() -> None:
    _host, server = make_server()
    sub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sub.bind(("127.0.0.1", 0))
    sub.settimeout(5.0)
    feedback = Feedback(server)
    try:
        port = sub.getsockname()[1]
        server.datagram(m("/subscribe", port), SENDER)
        feedback.tick()
        first = received(sub, "/transport/position")
        assert ("/ch/vocals/filter/res", [0.0]) in first and ("/master/filter", [0.0]) in first
        server.datagram(m("/ch/3/filter", 0.5), SENDER)
        feedback.tick()
        assert received(sub, "/meter")[0] == ("/ch/vocals/filter", [0.5])
    finally:
        sub.close()
        server.sock.close()


def test_scenes_keep_and_morph_filters() -> None:
    reg = Registry(["drums", "bass"])
    with reg.transaction() as txn:
        txn.set("/ch/bass/filter", [-0.5])
        txn.set("/ch/bass/filter/res", [0.5])
        txn.set("/master/filter", [0.25])
        assert txn.commit(lambda c: True)
    scene = reg.snapshot()
    assert scene["channels"]["bass"] == {
        "gain": 1.0,
        "mute": False,
        "solo": False,
        "pan": 0.0,
        "filter": -0.5,
        "res": 0.5,
        "echo": 0.0,
        "echo_pre": False,
        "reverb": 0.0,
    }
    assert scene["master"] == {"gain": 1.0, "mute": False, "filter": 0.25, "res": 0.0}
    other = Registry(["drums", "bass"])
    with other.transaction() as txn:
        txn.restore(scene)
        assert txn.written >= {"/ch/2/filter", "/ch/2/filter/res", "/master/filter"}
        assert txn.commit(lambda c: True)
    assert other.snapshot() == scene
    # MIDI's 0..1 view: the centre detent is a true bypass.
    with other.transaction() as txn:
        txn.set_norm("/ch/1/filter", 64 / 127)
        txn.set_norm("/ch/2/filter", 1.0)
        txn.commit(lambda c: True)
    assert other.get("/ch/1/filter") == 0.0 and other.get("/ch/2/filter") == 1.0
    assert other.get_norm("/ch/2/filter") == 1.0
    assert other.get_norm("/ch/1/filter") == 64 / 127


# -- the echo -----------------------------------------------------------------------


def _send(
    i: int, echo: float, *, pre: bool = False, gain: float = 1.0, mute: bool = False
) -> StripTarget:
    return StripTarget(i, gain, mute, False, 0.0, 0.0, 0.0, echo, pre)


def _echo_events(rng: np.random.Generator, length: int, other: Track) -> dict[int, list[Command]]:
    def send() -> Command:
        return _send(
            int(rng.integers(0, 4)),
            float(rng.choice([0.0, 1.0, rng.uniform(0, 1)])),
            pre=bool(rng.random() < 0.3),
            gain=float(rng.uniform(0, 1)),
            mute=bool(rng.random() < 0.2),
        )

    def bus() -> Command:
        return EchoTarget(
            float(rng.uniform(1, 60)),
            float(rng.uniform(0, 1)),
            float(rng.choice([0.0, rng.uniform(-1, 1)])),
            float(rng.uniform(0, 1)),
        )

    def filt() -> Command:
        return _filt(int(rng.integers(0, 4)), float(rng.uniform(-1, 1)))

    return bus_events(rng, length, other, EchoTarget(30.0, 0.6, 0.0, 1.0), send, bus, filt)


@pytest.mark.skipif(not KERNEL_BUILT, reason="the compiled kernel is not built")
@pytest.mark.parametrize("outputs", ["mix", "channels"])
# Seed 1 draws 1-frame blocks: 2 s of Python per case, so it is in the slow tier.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_compiled_echo_is_the_numpy_reference(outputs: str, seed: int) -> None:
    """Random sends (pre and post), bus moves (delay glides, feedback, its filter),
    mutes, pauses, seeks and track changes: the same samples from both kernels,
    master and outputs, bit for bit."""
    rng = np.random.default_rng(seed + 10)
    length = SR // 4
    other = Track(noise(3, 0.2, seed + 1), SR, ("x", "y", "z"))
    events = _echo_events(rng, length, other)
    block = int(rng.choice([1, 64, 97, 256]))
    channels = noise(4, length / SR, seed)
    master, _ = kernels_alike(channels, events, length=length, block=block, outputs=outputs)
    assert np.abs(master).max() > 0.1


@pytest.mark.parametrize("how", ["mute", "fader", "pause", "stop", "track"])
def test_the_echo_tail_rings_out_as_its_feedback_says(how: str) -> None:
    """A burst sent to the echo (100 ms, feedback 0.7), then the channel muted, its
    fader pulled down, the transport paused or stopped, or another track loaded:
    nothing new enters, and the recorded master holds echo after echo, each 0.7 of
    the one before, for at least 8 (here 14) repeats; the bus then stops by itself."""
    m = Mixer(max_channels=4)
    m.prepare(SR, 256)
    m.post(SetTrack(burst_track()))
    m.post(Play())
    m.post(_send(0, 1.0))
    m.post(EchoTarget(100.0, 0.7, 0.0, 1.0))
    cut: dict[str, list[Command]] = {
        "mute": [_send(0, 1.0, mute=True), _send(1, 0.0, mute=True)],
        "fader": [_send(0, 1.0, gain=0.0), _send(1, 0.0, gain=0.0)],
        "pause": [Pause()],
        "stop": [Stop()],
        "track": [SetTrack(Track(np.zeros((2, 2, SR * 3), np.float32), SR, ("a", "b")))],
    }
    master = record(m, int(1.6 * SR), 2560, cut[how])  # at 53 ms the burst is over
    assert m.echo_running
    if how in ("pause", "stop"):
        assert not m.playing
    step = int(0.1 * SR)
    peaks = np.array([np.abs(master[k * step : k * step + 960, 0]).max() for k in range(1, 15)])
    np.testing.assert_allclose(peaks[0], 0.5, rtol=1e-3)
    np.testing.assert_allclose(peaks[1:] / peaks[:-1], 0.7, rtol=1e-3)
    # Between the echoes (and the bed, where it still plays): nothing else.
    if how != "track":
        gaps = np.concatenate([master[k * step + 960 : (k + 1) * step, 0] for k in range(1, 14)])
        assert np.abs(gaps).max() < 1e-4
    # The tail dies away (0.7 ** 40 of 0.5 is under 1e-6) and the bus stops: at
    # once when stopped or paused; playing, once the send is closed too.
    if how not in ("pause", "stop"):
        m.post(_send(0, 0.0, mute=how == "mute", gain=0.0 if how == "fader" else 1.0))
    ring_out(m, lambda: m.echo_running)
    assert not m.echo_running


def test_an_echo_delay_change_glides_without_a_click() -> None:
    """The tones sent to the echo; its delay moved from 100 to 337 ms and back in
    single commands: the delay glides (tape-like) and stays under the click threshold;
    the same change as a jump (a glide of one sample) does not."""
    threshold = hard_step_energy() / 100
    moves: dict[int, list[Command]] = {
        0: [_send(0, 1.0), _send(1, 1.0), EchoTarget(100.0, 0.5, 0.0, 1.0)],
        20480: [EchoTarget(337.0, 0.5, 0.0, 1.0)],
        36864: [EchoTarget(100.0, 0.5, -0.5, 1.0)],
    }
    assert click_energy(run(mixer(tones()), SR, 256, moves)) < threshold
    jumpy = mixer(tones())
    jumpy.fx.echo_glide = 1  # what the glide prevents
    assert click_energy(run(jumpy, SR, 256, moves)) > 3 * threshold


def test_fast_send_changes_never_click() -> None:
    """Echo throws: both sends opened and closed in single commands every 40 ms (one
    strip also switching between pre and post, at unity where both taps are equal),
    the echo at a short delay and high feedback: under the click threshold."""
    threshold = hard_step_energy() / 100
    throws: dict[int, list[Command]] = {0: [EchoTarget(60.0, 0.8, 0.0, 1.0)]}
    for j in range(20):
        on = j % 2 == 0
        throws[4096 + 1920 * j] = [
            _send(0, 1.0 if on else 0.0),
            _send(1, 0.7 if on else 0.2, pre=on),
        ]
    out = run(mixer(tones()), SR, 256, throws)
    assert np.abs(out[SR // 2 :]).max() > 0.5  # the echo sounds
    assert click_energy(out) < threshold
    # The same throws as jumps (ramps of one sample): the detector hears them.
    jumps = run(mixer(tones(), ramp_ms=1000 / SR), SR, 256, throws)
    assert click_energy(jumps) > 3 * threshold


def test_echo_at_rest_is_exactly_the_plain_mix() -> None:
    """Sends opened then closed: once the tail has died away the bus stops and the
    output is, bit for bit, that of a mixer no send ever touched."""
    channels = noise(4, 2.0)
    plain = run(mixer(channels), 2 * SR, 256)
    m = mixer(channels)
    events: dict[int, list[Command]] = {
        512: [_send(1, 0.8), EchoTarget(50.0, 0.3, 0.0, 1.0)],
        4096: [_send(1, 0.0)],
    }
    sent = run(m, 2 * SR, 256, events)
    assert not m.echo_running and not m.fx.active
    assert np.abs(sent[3000:8000] - plain[3000:8000]).max() > 0.01  # it did echo
    done = SR  # 0.3 ** k of the loudest echo is under 1e-6 long before a second
    np.testing.assert_array_equal(sent[done:], plain[done:])


def test_a_block_with_the_echo_allocates_no_array_data() -> None:
    channels = noise(8, 3.0)
    m = Mixer(max_channels=8)
    m.prepare(SR, 1024)
    m.post(SetTrack(Track(channels, SR, tuple(map(str, range(8))))))
    out = np.zeros((1024, 2), np.float32)
    m.post(Play())
    m.post(EchoTarget(120.0, 0.7, 0.3, 0.8))
    for i in range(8):
        m.post(_send(i, 0.5, pre=i % 2 == 0))
    for _ in range(5):
        m.process(out)

    def post(i: int) -> bool:
        if i % 10 == 0:
            m.post(_send(i % 8, 0.9 if i % 20 else 0.1, pre=i % 30 == 0))
        if i % 25 == 3:
            m.post(Seek(0.5))
        if i == 60:
            m.post(Pause())  # the tail blocks too
        return i % 10 == 0 or i % 25 == 3

    worst, steady = block_allocations(m, out, post)
    assert m.echo_running and not m.playing
    assert worst < 8192 and steady < 4096, (worst, steady)


def test_echo_over_osc_set_query_patterns_and_errors() -> None:
    host, server = make_server()
    try:
        assert server.datagram(m("/fx/echo/ms"), SENDER) == [("/fx/echo/ms", [500.0])]
        bundle = encode_bundle(
            [
                m("/fx/echo/ms", 250.0),
                m("/fx/echo/feedback", 0.75),
                m("/fx/echo/filter", 0.5),
                m("/fx/echo/return", 0.5),
                m("/ch/vocals/echo", 0.5),
                m("/ch/3/echo/pre", 1),
            ]
        )
        assert server.datagram(bundle, SENDER) == []
        assert server.datagram(m("/fx/echo/*"), SENDER) == [
            ("/fx/echo/ms", [250.0]),
            ("/fx/echo/beats", [0.0]),  # 0: the delay is set in ms
            ("/fx/echo/feedback", [0.75]),
            ("/fx/echo/filter", [0.5]),
            ("/fx/echo/return", [0.5]),
        ]
        assert server.datagram(m("/ch/vocals/echo/pre"), SENDER) == [("/ch/vocals/echo/pre", [1])]
        host.block()
        assert host.engine.echo_state(None) == (250.0, 0.75, 0.5, 0.5)
        assert host.engine.echo_state(2) == (0.5, 1.0)
        for bad, reason in (
            (m("/fx/echo/ms", 0.5), "/fx/echo/ms takes 1..4000 ms, got 0.5"),
            (m("/fx/echo/ms", 4001.0), "/fx/echo/ms takes 1..4000 ms, got 4001"),
            (m("/fx/echo/feedback", 1.5), "/fx/echo/feedback takes 0..1, got 1.5"),
            (m("/fx/echo/return", float("nan")), "/fx/echo/return got NaN"),
            (m("/ch/1/echo", -0.5), "/ch/1/echo takes 0..1, got -0.5"),
            (m("/ch/1/echo/pre", 2), "/ch/1/echo/pre takes 1/0 or T/F, got 2"),
            (m("/fx/echo/beats", 8.0), "/fx/echo/beats takes 1/16..4 beats (0.0625..4), got 8"),
        ):
            before = host.registry.snapshot()
            assert server.datagram(bad, SENDER) == [("/error", [reason])]
            assert host.registry.snapshot() == before
        assert host.registry_as_engine() == host.engine_state()[:8]
    finally:
        server.sock.close()


def test_broken_fx_values_never_reach_the_audio() -> None:
    """Commands that slipped past the registry (NaN, infinities, out of range) are
    clamped, NaN to the bottom of the range: the output stays finite and the engine
    shows what it applies."""
    m = mixer(noise(2, 0.5))
    nan, inf = float("nan"), float("inf")
    m.post(StripTarget(0, 1.0, False, False, 0.0, nan, inf, nan, True))
    m.post(StripTarget(1, 1.0, False, False, 0.0, -inf, nan, inf, False))
    m.post(MasterTarget(1.0, False, inf, -inf))
    m.post(EchoTarget(nan, inf, nan, inf))
    out = run(m, SR // 2, 256)
    assert np.isfinite(out).all() and np.abs(out).max() > 0.01
    assert m.nonfinite_blocks == 0
    assert m.filter_state(0) == (-1.0, 1.0) and m.filter_state(1) == (-1.0, 0.0)
    assert m.filter_state(None) == (1.0, 0.0)
    assert m.echo_state(0) == (0.0, 1.0) and m.echo_state(1) == (1.0, 0.0)
    assert m.echo_state(None) == (1.0, 1.0, -1.0, 1.0)
