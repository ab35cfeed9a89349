"""The compiled mixer kernel (core/mixer/_kernel.c): same output as the numpy
reference path, the GIL kept through a block, and no bad argument reaching memory."""

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import (
    Command,
    Loop,
    MasterTarget,
    Pause,
    Play,
    Rate,
    Seek,
    SetTrack,
    Stop,
    StripTarget,
    Track,
)
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread
from stemdeck.core.mixer.kernel import KERNEL_BUILT

SR = 48000


def test_the_kernel_is_built() -> None:
    # scripts/setup installs the compiler and headers; without them the mixer
    # still runs (numpy), but the GIL is then handed over in every large call.
    assert KERNEL_BUILT, "the compiled kernel is missing or stale: run scripts/setup --test"
    assert Mixer().kernel == "compiled"
    assert Mixer(compiled=False).kernel == "numpy"


def _channels(rng: np.random.Generator, n: int, sides: int, length: int) -> np.ndarray:
    return (rng.standard_normal((n, sides, length)) * 0.2).astype(np.float32)


def _random_command(rng: np.random.Generator, tracks: list[Track], length: int) -> Command:
    kind = rng.integers(0, 12)
    if kind < 6:
        return StripTarget(
            int(rng.integers(0, 6)),
            float(rng.choice([0.0, 0.5, 1.0, 1.7, rng.uniform(0, 3.9)])),
            bool(rng.random() < 0.2),
            bool(rng.random() < 0.15),
            float(rng.uniform(-1, 1)),
        )
    if kind == 6:
        return MasterTarget(float(rng.uniform(0, 2)), bool(rng.random() < 0.1))
    if kind == 7:
        return Seek(float(rng.uniform(0, length / SR)))
    if kind == 8:
        start = float(rng.uniform(0, length / SR))
        return Loop(start, start + float(rng.uniform(0, 0.3)))
    if kind == 9:
        transport: list[Command] = [Play(), Pause(), Stop()]
        return transport[int(rng.integers(0, 3))]
    if kind == 10:
        return SetTrack(tracks[int(rng.integers(0, len(tracks)))], bool(rng.random() < 0.5))
    return Play()


def _blocks(mixers: list[Mixer], commands: list[Command], frames: int) -> list[np.ndarray]:
    """The commands posted to each mixer, then a block of ``frames`` from each."""
    outs = []
    for m in mixers:
        for c in commands:
            m.post(c)
        out = np.full((frames, m.out_channels), np.nan, np.float32)
        m.process(out)
        outs.append(out)
    return outs


@pytest.mark.parametrize("outputs", ["mix", "channels"])
@pytest.mark.parametrize("seed", range(6))
def test_compiled_mix_is_the_numpy_reference(outputs: str, seed: int) -> None:
    """Random command streams over mono, stereo and standing-in tracks, blocks of
    every size (larger than prepared too): the two paths give the same samples
    (float32, the same operations in the same order) and the same meters."""
    rng = np.random.default_rng(seed)
    length = SR // 2
    tracks = [
        Track(_channels(rng, 4, 2, length), SR, ("a", "b", "c", "d")),
        Track(_channels(rng, 3, 1, length), SR, ("m1", "m2", "m3")),  # mono channels
        Track(_channels(rng, 1, 2, length), SR, ("mix",), is_mix=True),
        Track(_channels(rng, 6, 2, length // 3), SR, tuple("uvwxyz")),
    ]
    mixers = [Mixer(max_channels=6, compiled=c, at_end="loop") for c in (True, False)]
    for m in mixers:
        m.prepare(SR, 256, outputs=outputs)
        m.post(SetTrack(tracks[0]))
        m.post(Play())
    enter_audio_thread()
    for _ in range(400):
        commands = [_random_command(rng, tracks, length) for _ in range(rng.integers(0, 4))]
        outs = _blocks(mixers, commands, int(rng.choice([1, 7, 64, 255, 256, 300, 600])))
        np.testing.assert_array_equal(outs[0], outs[1])
        assert mixers[0].position == mixers[1].position
        assert mixers[0].playing == mixers[1].playing
        if rng.random() < 0.2:
            a, b = (m.read_meters() for m in mixers)
            np.testing.assert_array_equal(a.peak, b.peak)
            # Sums of squares: the kernel adds in float64, numpy pairwise in float32.
            np.testing.assert_allclose(a.rms, b.rms, rtol=1e-5, atol=1e-9)


def test_a_non_finite_block_is_silenced_on_both_paths() -> None:
    bad = np.full((2, 2, SR // 10), 0.1, np.float32)
    bad[1, 0, 1000] = np.inf
    for compiled in (True, False):
        m = Mixer(max_channels=4, compiled=compiled)
        m.prepare(SR, 256)
        m.post(SetTrack(Track(bad, SR, ("a", "b"))))
        m.post(Play())
        outs = []
        for _ in range(8):
            out = np.zeros((256, 2), np.float32)
            m.process(out)
            outs.append(out)
        assert m.nonfinite_blocks == 1
        assert not np.any(outs[3]), compiled  # samples 768..1023 hold the inf
        assert np.all(np.isfinite(np.concatenate(outs)))
        meters = m.read_meters()
        assert np.all(np.isfinite(meters.peak)) and np.all(np.isfinite(meters.rms))


# Run in a fresh interpreter: in the suite's process, threads left by other tests
# (asyncio loops, JACK clients) wait for the GIL with their own timeouts and force
# switches, and the collector finalizes their leftovers (which may release the GIL).
_GIL_PROBE = """
import gc, sys, threading, time
import numpy as np
from stemdeck.core.mixer.commands import (
    EchoTarget, Play, Rate, Seek, SetTrack, StripTarget, Track
)
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread

SR = 48000
fx = "fx" in sys.argv[2:]  # every strip filtered and sending to the echo
rate = "rate" in sys.argv[2:]  # a 44.1 kHz track at rate 1.08: the read head between rates
m = Mixer(max_channels=16, compiled=sys.argv[1] == "compiled")
m.prepare(SR, 256, outputs="channels")  # the daemon's block
rng = np.random.default_rng(1)
channels = (rng.standard_normal((16, 2, SR)) * 0.2).astype(np.float32)
m.post(SetTrack(Track(channels, 44100 if rate else SR, tuple(f"c{i}" for i in range(16)))))
m.post(Play())
if rate:
    m.post(Rate(1.08))
if fx:
    m.post(EchoTarget(120.0, 0.7, 0.3, 1.0))
out = np.zeros((256, m.out_channels), np.float32)
enter_audio_thread()
count = [0]
stop = threading.Event()

def spin():  # hands the GIL over by itself each turn: never forces a switch
    while not stop.is_set():
        count[0] += 1
        time.sleep(0)

sys.setswitchinterval(30.0)
thread = threading.Thread(target=spin, daemon=True)
thread.start()
while count[0] < 10:  # it runs; from here on it waits for the GIL whenever we hold it
    time.sleep(0)
gc.disable()
moved = 0
for i in range(300):
    knob = (0.2 + (i % 3) / 5) if fx else 0.0
    send = 0.5 if fx else 0.0
    gain, pre = 0.5 + (i % 7) / 10, i % 4 == 0
    m.post(StripTarget(i % 16, gain, i % 5 == 0, False, 0.0, knob, 0.5, send, pre))
    if i % 50 == 0:
        m.post(Seek(0.1 * (i // 50)))  # crossfades: a fading head too
    before = count[0]
    m.process(out)
    moved += count[0] != before
stop.set()
assert m.fx.active == fx
print("moved", moved)
"""


@pytest.mark.e2e
def test_a_block_never_hands_the_gil_over() -> None:
    """numpy hands the GIL over in every call on more than 500 elements; a
    control thread then takes it and the audio callback waits for it back (the
    p99 that bench/web.py measured). In the probe, a counter thread gives the
    GIL up by itself on every turn, and the switch interval is far longer than
    the run, so no switch is ever forced: the only way it can run while
    ``process`` runs is a release inside ``process``. It must never move during
    one (the numpy path moves it in most of the 300 blocks)."""
    done = subprocess.run(
        [sys.executable, "-c", _GIL_PROBE, "compiled"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["moved", "0"]


@pytest.mark.e2e
def test_an_fx_block_never_hands_the_gil_over() -> None:
    """The probe above with a DJ filter and an echo send (pre and post) on all 16
    strips (tests/core/mixer/test_fx.py has the FX): the FX path keeps the GIL through every
    block too."""
    done = subprocess.run(
        [sys.executable, "-c", _GIL_PROBE, "compiled", "fx"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["moved", "0"]


@pytest.mark.e2e
def test_a_block_between_rates_never_hands_the_gil_over() -> None:
    """The probe above with a 44.1 kHz track at rate 1.08: the read head's
    interpolation (the kernel's ``read``) keeps the GIL through every block too."""
    done = subprocess.run(
        [sys.executable, "-c", _GIL_PROBE, "compiled", "rate"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["moved", "0"]


def test_the_kernel_refuses_bad_arguments() -> None:
    from stemdeck.core.mixer import _kernel

    f32 = np.zeros((2, 2, 64), np.float32)
    prod = np.zeros((3, 2, 64), np.float32)
    mix = np.zeros((2, 64), np.float32)
    segment_cases: list[tuple[Any, ...]] = [
        (f32, 60, 8, None, None, prod, 1, 0, mix, False, None),  # past the track's end
        (f32, -1, 8, None, None, prod, 1, 0, mix, False, None),  # before its start
        (f32, 0, 8, None, None, prod, 2, 0, mix, False, None),  # rows past prod
        (f32, 0, 8, None, None, prod, 1, 60, mix, False, None),  # past the block
        (f32, 0, 8, f32[:1], None, prod, 1, 0, mix, False, None),  # fewer curves than channels
        (f32, 0, 8, None, np.zeros(4, np.float32), prod, 1, 0, mix, False, None),  # short row
        (f32.astype(np.float64), 0, 8, None, None, prod, 1, 0, mix, False, None),  # float64
        (np.zeros((2, 3, 64), np.float32), 0, 8, None, None, prod, 1, 0, mix, False, None),
        (f32, 0, 8, None, None, prod, 1, 0, mix[:, :4], False, None),  # short mix
        (f32, 0, 0, None, None, prod, 1, 0, mix, False, None),  # nothing to do is a bug
    ]
    readonly = prod.copy()
    readonly.flags.writeable = False
    segment_cases.append((f32, 0, 8, None, None, readonly, 1, 0, mix, False, None))
    for args in segment_cases:
        with pytest.raises(ValueError):
            _kernel.segment(*args)
    out = np.zeros((64, 2), np.float32)
    peak = np.zeros(3, np.float32)
    finish_cases: list[tuple[Any, ...]] = [
        (prod, 4, 64, mix, None, 1.0, peak, peak, out, None),  # more rows than prod
        (prod, 3, 65, mix, None, 1.0, peak, peak, out, None),  # more frames than the block
        (prod, 3, 64, mix, None, 1.0, peak[:2], peak, out, None),  # short meters
        (prod, 3, 64, mix, None, 1.0, peak, peak, out[:32], None),  # short output
        (prod, 3, 64, mix, np.zeros(8, np.float32), 1.0, peak, peak, out, None),  # short master
        (prod, 3, 64, mix, None, 1.0, peak, peak, out, f32),  # 4 columns wanted, 2 given
    ]
    for args in finish_cases:
        with pytest.raises(ValueError):
            _kernel.finish(*args)
    cur = np.zeros((2, 2))
    ramp_cases: list[tuple[Any, ...]] = [
        (cur, cur, cur, np.zeros(8), np.zeros((2, 2, 64), np.float32), 64, 2),  # short ramp
        (cur, cur, cur, np.zeros(64), np.zeros((3, 2, 64), np.float32), 64, 2),  # shapes differ
        (cur, cur, cur, np.zeros(64), np.zeros((2, 2, 64)), 64, 2),  # curves not float32
        (cur, cur, cur, np.zeros(64), np.zeros((2, 2, 64), np.float32), 64, 3),  # rows > strips
    ]
    for args in ramp_cases:
        with pytest.raises(ValueError):
            _kernel.ramp_curves(*args)
    with pytest.raises(ValueError):
        _kernel.zero(np.zeros(4))  # float64
    with pytest.raises(ValueError):
        _kernel.zero(readonly)
    assert not np.any(prod) and not np.any(mix) and not np.any(out) and not np.any(peak)


def test_a_track_not_in_float32_is_refused_on_both_paths() -> None:
    # Track says float32; the kernel reads nothing else. A float64 track is counted
    # as refused, and the one playing goes on.
    good = np.full((2, 2, SR), 0.25, np.float32)
    for compiled in (True, False):
        m = Mixer(max_channels=4, compiled=compiled)
        m.prepare(SR, 256)
        m.post(SetTrack(Track(good, SR, ("a", "b"))))
        m.post(Play())
        m.post(SetTrack(Track(good.astype(np.float64), SR, ("a", "b"))))
        out = np.zeros((256, 2), np.float32)
        m.process(out)
        assert m.dropped == 1 and m.track is not None and m.track.channels is good
        assert out[-1].tolist() == [0.5, 0.5]  # two channels of 0.25 after the fade-in


def test_compiled_true_without_the_kernel_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from stemdeck.core.mixer import kernel

    monkeypatch.setattr(kernel, "COMPILED", None)
    with pytest.raises(ParameterError, match="not built"):
        Mixer(compiled=True)
    assert Mixer().kernel == "numpy"


def _isolated(code: str) -> None:
    """Run ``code`` in a fresh interpreter: a crash fails the test, not the suite."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip().endswith("ok"), done.stdout


def _guarded(shape: tuple[int, ...], fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """An array in the middle of a larger one: (view, whole); the rest must stay NaN."""
    size = int(np.prod(shape))
    whole = np.full(size + 2 * 64, np.nan, np.float32)
    view = whole[64 : 64 + size].reshape(shape)
    view[...] = fill
    return view, whole


def _guard_intact(view: np.ndarray, whole: np.ndarray) -> bool:
    return bool(np.isnan(whole[:64]).all() and np.isnan(whole[64 + view.size :]).all())


@pytest.mark.parametrize(
    ("first", "off"),
    [
        (0, 2**63 - 1),  # off + count wrapped negative: passed the check, wrote before mix
        (2**63 - 1, 0),  # first + n wrapped: wrote before prod
        (1, 2**63 - 1),
        (2**63 - 2, 2**63 - 2),
        (0, 2**62),
    ],
)
def test_segment_ends_that_overflow_are_refused(first: int, off: int) -> None:
    from stemdeck.core.mixer import _kernel

    src = np.ones((1, 2, 64), np.float32)
    prod, pw = _guarded((2, 2, 64))
    mix, mw = _guarded((2, 64))
    co, cw = _guarded((1, 2, 64))
    curves, _ = _guarded((1, 2, 64), 1.0)
    for cv, c in ((None, None), (curves, co)):
        with pytest.raises(ValueError):
            _kernel.segment(src, 0, 1, cv, None, prod, first, off, mix, False, c)
    assert _guard_intact(prod, pw) and _guard_intact(mix, mw) and _guard_intact(co, cw)
    assert not np.any(prod) and not np.any(mix) and not np.any(co)


def test_a_track_of_no_channels_sums_to_silence() -> None:
    # With no strips the kernel took the first strip's row of prod as the sum: a
    # row outside the buffer it was given (here: in the guard), or on the engine a
    # stale one, so the compiled path played the previous track's strip.
    from stemdeck.core.mixer import _kernel

    prod, whole = _guarded((1, 2, 64))
    mix = np.full((2, 64), 5.0, np.float32)
    _kernel.segment(
        np.zeros((0, 2, 64), np.float32), 0, 64, None, None, prod, 1, 0, mix, False, None
    )
    assert not np.any(mix) and _guard_intact(prod, whole)
    mix[:] = 5.0
    xprod = np.zeros((0, 2, 64), np.float32)
    _kernel.segment(
        np.zeros((0, 1, 64), np.float32), 0, 64, None, None, xprod, 0, 0, mix, True, None
    )
    assert np.all(mix == 5.0)
    outs = []
    for compiled in (True, False):
        m = Mixer(max_channels=4, compiled=compiled)
        m.prepare(SR, 256)
        m.post(SetTrack(Track(np.full((2, 2, SR), 0.5, np.float32), SR, ("a", "b"))))
        m.post(Play())
        out = np.zeros((256, 2), np.float32)
        m.process(out)
        m.post(SetTrack(Track(np.zeros((0, 2, SR), np.float32), SR, ())))
        for _ in range(4):
            m.process(out)
            outs.append(out.copy())
    half = len(outs) // 2
    np.testing.assert_array_equal(np.concatenate(outs[:half]), np.concatenate(outs[half:]))
    assert not np.any(outs[-1])


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 8, 9])
def test_each_row_has_its_own_levels(rows: int) -> None:
    """finish reads the levels four rows at a time: each row's peak and sum of
    squares are its own samples' alone, in the order of a row alone (the same
    bits as adding them one by one in float64), and a NaN in one row shows in
    that row's peak and no other's."""
    from stemdeck.core.mixer import _kernel

    rng = np.random.default_rng(rows)
    frames = 70
    prod = (rng.standard_normal((rows, 2, frames)) * np.arange(1, rows + 1)[:, None, None]).astype(
        np.float32
    )
    nan_row = rows // 2
    prod[nan_row, 1, 33] = np.nan
    prod[0] = prod[0] * np.float32(0.25)  # the master row stays finite
    if nan_row == 0:
        prod[0, 1, 33] = 0.125
    mix = np.ascontiguousarray(prod[0])
    peak = np.full(rows, 0.5, np.float32)
    sumsq = np.full(rows, 2.0, np.float32)
    out = np.zeros((frames, 2), np.float32)
    before = prod.copy()
    assert _kernel.finish(prod, rows, frames, mix, None, 1.0, peak, sumsq, out, None)
    for r in range(rows):
        sq = 0.0
        for x in before[r].ravel().tolist():  # side 0, then side 1, in order
            sq += x * x
        want_sumsq = np.float32(2.0 + sq)
        top = np.float32(np.abs(before[r]).max())
        if r == nan_row and r > 0:
            assert np.isnan(peak[r]) and np.isnan(sumsq[r])
        else:
            assert peak[r] == max(top, np.float32(0.5)), r
            assert sumsq[r].view(np.int32) == want_sumsq.view(np.int32), r


@pytest.mark.parametrize("add", [False, True])
def test_a_long_segment_of_many_strips_sums_as_the_reference(add: bool) -> None:
    """segment sums the strips many frames at a time (256): a segment of 600
    frames (a block of more than 256, with curves, a fade row and per-strip outputs)
    is the numpy reference's bit for bit, in the mix, the strips' rows and outputs."""
    from stemdeck.core.mixer import _kernel
    from stemdeck.core.mixer.numpy_kernel import NumpyKernel

    rng = np.random.default_rng(int(add))
    n, count, off = 40, 600, 5
    src = _channels(rng, n, 2, 2000)
    curves = rng.uniform(0, 2, (n, 2, count + off)).astype(np.float32)
    row = rng.uniform(0, 1, count).astype(np.float32)
    got = []
    for kern in (_kernel, NumpyKernel(n, count + off)):
        prod = np.zeros((n + 1, 2, count + off), np.float32)
        mix = np.full((2, count + off), 0.25, np.float32)
        co = np.full((n, 2, count + off), 0.5, np.float32)
        kern.segment(src, 300, count, curves, row, prod, 1, off, mix, add, co)
        got.append((mix, prod, co))
    for a, b in zip(*got, strict=True):
        np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))


@pytest.mark.parametrize("rate", [1.08, 0.92])
def test_many_channels_between_rates_mix_as_the_reference(rate: float) -> None:
    """A track of 40 stereo and one of 19 mono channels at a rate (the read head's
    groups of rows, the strips' sums many frames at a time, the levels four rows
    at a time), blocks of 1 to 600 frames and faders moving: the compiled path is
    the numpy reference's samples bit for bit, and its peaks."""
    rng = np.random.default_rng(int(rate * 100))
    length = SR // 3
    tracks = [
        Track(_channels(rng, 40, 2, length), SR, tuple(f"s{i}" for i in range(40))),
        Track(_channels(rng, 19, 1, length), 44100, tuple(f"m{i}" for i in range(19))),
    ]
    mixers = [Mixer(max_channels=40, compiled=c, at_end="loop") for c in (True, False)]
    for m in mixers:
        m.prepare(SR, 256)
        m.post(SetTrack(tracks[0]))
        m.post(Rate(rate))
        m.post(Play())
    enter_audio_thread()
    for i in range(120):
        commands: list[Command] = []
        if i == 60:
            commands.append(SetTrack(tracks[1]))
        if rng.random() < 0.3:
            commands.append(
                StripTarget(int(rng.integers(0, 40)), float(rng.uniform(0, 2)), False, False, 0.0)
            )
        outs = _blocks(mixers, commands, int(rng.choice([1, 7, 64, 255, 256, 300, 600])))
        np.testing.assert_array_equal(outs[0].view(np.int32), outs[1].view(np.int32))
        assert np.any(outs[0])
    a, b = (m.read_meters() for m in mixers)
    np.testing.assert_array_equal(a.peak, b.peak)


@pytest.mark.e2e
def test_buffers_without_strides_are_read_as_c_contiguous() -> None:
    # ctypes arrays export no strides whatever the flags ask: the kernel read
    # strides[0] through a NULL pointer (a segfault).
    _isolated(
        """
import ctypes
import numpy as np
from stemdeck.core.mixer import _kernel
a = ((ctypes.c_float * 5) * 3)()
np.ctypeslib.as_array(a)[:] = 1.0
_kernel.zero(a)
assert not np.ctypeslib.as_array(a).any()
src = np.arange(128, dtype=np.float32).reshape(1, 2, 64)
prod = np.zeros((2, 2, 64), np.float32)
mix = ((ctypes.c_float * 64) * 2)()
_kernel.segment(src, 0, 64, None, None, prod, 1, 0, mix, False, None)
assert (np.ctypeslib.as_array(mix) == src[0]).all()
short = (ctypes.c_float * 8)()  # one dimension where two are wanted
try:
    _kernel.segment(src, 0, 64, None, None, prod, 1, 0, short, False, None)
except ValueError:
    print("ok")
"""
    )


@pytest.mark.e2e
def test_block_never_writes_a_read_only_co() -> None:
    # block clears and adds to the per-strip outputs, but took them read-only: it
    # wrote into immutable bytes, and into a read-only mapping (a segfault).
    _isolated(
        """
import mmap
import numpy as np
from stemdeck.core.mixer import _kernel
n, B = 1, 64
src = np.ones((n, 2, B), np.float32)
args = lambda co: (np.ones((n, 2)), np.zeros((n, 2)), np.zeros((n, 2)),
                   np.arange(1, B + 1.0), np.ones((n, 2, B), np.float32), 0, n, src, 0, B,
                   False, np.zeros((n + 1, 2, B), np.float32), np.zeros((2, B), np.float32),
                   None, 1.0, np.zeros(n + 1, np.float32), np.zeros(n + 1, np.float32),
                   np.zeros((B, 2 * n), np.float32), co)
ro = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ)
blob = bytes(4 * 2 * B)
for co in (np.frombuffer(ro, np.float32, 2 * B).reshape(n, 2, B),
           np.frombuffer(blob, np.float32).reshape(n, 2, B),
           memoryview(blob).cast("f", (n, 2, B))):
    try:
        _kernel.block(*args(co))
        raise SystemExit("a read-only co was taken")
    except ValueError:
        pass
assert blob == bytes(4 * 2 * B)
print("ok")
"""
    )


def test_a_refused_block_changes_nothing() -> None:
    # block moved the strip ramps and cleared co before it checked the segment.
    from stemdeck.core.mixer import _kernel

    rng = np.random.default_rng(3)
    n, B = 2, 64
    cur, step, left = rng.random((n, 2)), rng.random((n, 2)), np.full((n, 2), 30.0)
    curves = rng.random((n, 2, B)).astype(np.float32)
    co = rng.random((n, 2, B)).astype(np.float32)
    src = np.ones((n, 2, 100), np.float32)
    state = [a.copy() for a in (cur, left, curves, co)]
    for pos in (90, -1, 2**63 - 1):
        with pytest.raises(ValueError):
            _kernel.block(
                cur, step, left, np.arange(1, B + 1.0), curves, B, n, src, pos, B, False,
                np.zeros((n + 1, 2, B), np.float32), np.zeros((2, B), np.float32), None, 1.0,
                np.zeros(n + 1, np.float32), np.zeros(n + 1, np.float32),
                np.zeros((B, 2 * n), np.float32), co,
            )  # fmt: skip
    for before, after in zip(state, (cur, left, curves, co), strict=True):
        np.testing.assert_array_equal(before, after)


def test_buffer_formats() -> None:
    from stemdeck.core.mixer import _kernel

    native = np.ones((2, 4), np.float32)
    # The C takes any buffer; its stub names the ndarray the mixer passes (Any: past it).
    view: Any = native.data  # a memoryview, format "f"; ctypes gives "<f" (tested above)
    _kernel.zero(view)
    assert not native.any()
    # Wrong on purpose (Any: past the stub): the C must refuse each at run time.
    wrong: tuple[Any, ...] = (
        np.ones(4, ">f4"),
        np.ones(4, np.float16),
        np.ones(4, np.int32),
        b"abcd",
        3,
    )
    for bad in wrong:
        with pytest.raises(ValueError):
            _kernel.zero(bad)
    assert _kernel.ABI == 11


@pytest.mark.e2e
@pytest.mark.parametrize(
    "channels",
    [
        np.zeros((2, 2, 0), np.float32),  # no samples: at_end="loop" jumped to 0 forever
        np.zeros((2, 3, 1000), np.float32),  # neither mono nor stereo: raised every block
        np.zeros((2, 1000), np.float32),  # not (channels, sides, samples)
        [[[0.0] * 10] * 2],  # not an array
    ],
    ids=["empty", "three-sides", "2-d", "list"],
)
def test_a_malformed_track_is_refused_on_both_paths(channels: Any) -> None:
    # In a subprocess: before the fix the empty track hung the callback.
    _isolated(
        f"""
import numpy as np
from stemdeck.core.mixer.commands import Play, SetTrack, Track
from stemdeck.core.mixer.engine import Mixer
channels = {_literal(channels)}
for compiled in (True, False):
    m = Mixer(max_channels=4, compiled=compiled, at_end="loop")
    m.prepare(48000, 256)
    good = np.full((2, 2, 1000), 0.25, np.float32)
    m.post(SetTrack(Track(good, 48000, ("a", "b"))))
    m.post(Play())
    m.post(SetTrack(Track(channels, 48000, ("a", "b"))))
    out = np.zeros((256, 2), np.float32)
    for _ in range(3):
        m.process(out)
    assert m.dropped == 1 and m.track is not None and m.track.channels is good, compiled
    assert out[-1].tolist() == [0.5, 0.5]
print("ok")
"""
    )


def _literal(channels: Any) -> str:
    if isinstance(channels, np.ndarray):
        return f"np.zeros({channels.shape}, np.float32)"
    return repr(channels)
