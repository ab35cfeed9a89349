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
    Seek,
    SetTrack,
    Stop,
    StripTarget,
    Track,
)
from stemdeck.core.mixer.engine import KERNEL_BUILT, Mixer, enter_audio_thread

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
        return [Play(), Pause(), Stop()][int(rng.integers(0, 3))]
    if kind == 10:
        return SetTrack(tracks[int(rng.integers(0, len(tracks)))], bool(rng.random() < 0.5))
    return Play()


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
        frames = int(rng.choice([1, 7, 64, 255, 256, 300, 600]))
        outs = []
        for m in mixers:
            for c in commands:
                m.post(c)
            out = np.full((frames, m.out_channels), np.nan, np.float32)
            m.process(out)
            outs.append(out)
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
from stemdeck.core.mixer.commands import Play, Seek, SetTrack, StripTarget, Track
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread

SR = 48000
m = Mixer(max_channels=16, compiled=sys.argv[1] == "compiled")
m.prepare(SR, 256, outputs="channels")  # the daemon's block
rng = np.random.default_rng(1)
channels = (rng.standard_normal((16, 2, SR)) * 0.2).astype(np.float32)
m.post(SetTrack(Track(channels, SR, tuple(f"c{i}" for i in range(16)))))
m.post(Play())
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
    m.post(StripTarget(i % 16, 0.5 + (i % 7) / 10, i % 5 == 0, False, 0.0))
    if i % 50 == 0:
        m.post(Seek(0.1 * (i // 50)))  # crossfades: a fading head too
    before = count[0]
    m.process(out)
    moved += count[0] != before
stop.set()
print("moved", moved)
"""


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
    from stemdeck.core.mixer import engine

    monkeypatch.setattr(engine, "_kernel", None)
    with pytest.raises(ParameterError, match="not built"):
        Mixer(compiled=True)
    assert Mixer().kernel == "numpy"
