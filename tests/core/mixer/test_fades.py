"""Fades to silence end smoothly (#21 item 10), on the compiled and the numpy path.

The probe is a full-scale DC track: four channels of 0.25, which sum to 1.0 at
unity, so the output is the gain envelope itself. A linear fade of ``L`` samples
from 1.0 ends with a last nonzero sample of at most ``1/L``; the shortest fade
is the 5 ms crossfade (240 samples at 48 kHz, -47.6 dBFS), the strip and
master ramps take 10 ms. So before every stretch of silence the last nonzero
sample must be at most 1/240 of the signal's peak: a fade that is cut short, or
a play head dropped while still audible, leaves a larger step.

Every kind of fade to silence is driven through :meth:`Mixer.process` at
several block sizes, with commands arriving mid-ramp and mid-crossfade; then a
seeded random stream of commands (seeks past the end, loops, track changes,
transport, strips, master) is searched the same way.

What failed before: the end of the track reached while a head a jump left
behind was still fading (a seek to the end, or to just before it). The engine
dropped every fading head there, and their share of that whole block: a step of
the full signal into silence. Every other fade already ended within one step.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stemdeck.core.mixer.commands import (
    Batch,
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
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread
from stemdeck.core.mixer.kernel import KERNEL_BUILT

SR = 48000
XFADE = 240  # the 5 ms crossfade and transport fade at 48 kHz: the shortest fade
QUIET = 32  # frames of exact silence that count as "silence"
STEP = (1 + 1e-6) / XFADE  # one step of the shortest fade from 1.0 (float32 rounding allowed)
T = 5000  # when the scenarios' fade starts


def probe(length: int, value: float = 0.25, n: int = 4) -> np.ndarray:
    """``n`` stereo DC channels of ``value``, ending in a fade of its own (its content)."""
    channels = np.full((n, 2, length), value, np.float32)
    channels[:, :, -XFADE:] *= np.linspace(1.0, 0.0, XFADE + 1)[1:].astype(np.float32)
    return channels


TRACK = Track(probe(SR), SR, ("a", "b", "c", "d"))
OTHER = Track(probe(SR, 0.2), SR, ("e", "f", "g", "h"))
SILENT = Track(probe(SR, 0.0), SR, ("e", "f", "g", "h"))


def strips(*, gain: float = 1.0, mute: bool = False, solo: bool = False) -> Batch:
    return Batch(tuple(StripTarget(i, gain, mute, solo, 0.0) for i in range(4)))


def run(m: Mixer, frames: int, block: int, events: dict[int, list[Command]]) -> np.ndarray:
    """``frames`` of output in blocks of ``block``, posting ``events[t]`` at sample t."""
    out = np.zeros((frames, m.out_channels), np.float32)
    cuts = sorted({*range(0, frames, block), *events, frames})
    for a, b in itertools.pairwise(cuts):
        for command in events.get(a, []):
            m.post(command)
        while a < b:
            n = min(block, b - a)
            m.process(out[a : a + n])
            a += n
    return out


def silences(out: np.ndarray) -> list[tuple[int, float, float]]:
    """(index, level, step before) of the last nonzero frame before each stretch of
    silence: its level is the step into silence; the step before is the largest
    change of a side from the frame before it."""
    level = np.abs(out).max(axis=1)
    found = []
    for i in np.flatnonzero((level[:-1] != 0) & (level[1:] == 0)):
        if not level[i + 1 : i + 1 + QUIET].any() and i + QUIET < len(level) and i > 0:
            before = float(np.abs(out[i] - out[i - 1]).max())
            found.append((int(i), float(level[i]), before))
    return found


SCENARIOS: dict[str, dict[int, list[Command]]] = {
    "pause": {0: [Play()], T: [Pause()]},
    "stop": {0: [Play()], T: [Stop()]},
    "pause mid fade-in": {0: [Play()], 100: [Pause()]},
    "every strip muted": {0: [Play()], T: [strips(mute=True)]},
    "every fader to 0": {0: [Play()], T: [strips(gain=0.0)]},
    "faders re-aimed mid-ramp": {0: [Play()], T: [strips(gain=0.5)], T + 100: [strips(gain=0)]},
    "a silent strip soloed": {0: [Play()], T: [Batch((StripTarget(0, 0.0, False, True, 0.0),))]},
    "master muted": {0: [Play()], T: [MasterTarget(1.0, True)]},
    "master re-aimed mid-ramp": {
        0: [Play()],
        T: [MasterTarget(0.5, False)],
        T + 100: [MasterTarget(0.0, False)],
    },
    "pause mid-crossfade of a seek": {0: [Play()], T: [Seek(0.5)], T + 100: [Pause()]},
    "two seeks, then a pause": {
        0: [Play()],
        T: [Seek(0.5)],
        T + 60: [Seek(0.3)],
        T + 120: [Pause()],
    },
    "mute mid-crossfade": {0: [Play()], T: [Seek(0.5)], T + 100: [strips(mute=True)]},
    "pause mid loop-wrap crossfade": {0: [Play(), Loop(0.0, 0.1)], 4800 + 50: [Pause()]},
    "pause mid track change": {0: [Play()], T: [SetTrack(OTHER)], T + 100: [Pause()]},
    "master muted mid track change": {
        0: [Play()],
        T: [SetTrack(OTHER)],
        T + 100: [MasterTarget(1.0, True)],
    },
    "a silent track loaded": {0: [Play()], T: [SetTrack(SILENT)]},
    "fader to 0 mid pause": {0: [Play()], T: [Pause()], T + 100: [strips(gain=0.0)]},
    "the track's end": {0: [Play(), Seek((SR - 2000) / SR)]},
    # The play head reaches the end while the head the seek left behind still fades.
    "a seek to the end": {0: [Play()], T: [Seek(1e9)]},
    "a seek just before the end": {0: [Play()], T: [Seek((SR - 100) / SR)]},
    "a seek to the end mid pause": {0: [Play()], T: [Pause()], T + 100: [Seek(1e9)]},
    "play again as the end fades": {
        0: [Play()],
        T: [Seek(1e9)],
        T + 100: [Play()],
        T + 3000: [Pause()],
    },
}


def mixer(compiled: bool, block: int) -> Mixer:
    m = Mixer(max_channels=8, compiled=compiled)
    m.prepare(SR, block)
    m.post(SetTrack(TRACK))
    return m


PATHS = (True, False) if KERNEL_BUILT else (False,)  # the compiled kernel, numpy


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_fade_to_silence_ends_within_one_step(name: str) -> None:
    enter_audio_thread()
    outs: dict[tuple[bool, int], np.ndarray] = {}
    for compiled, block in itertools.product(PATHS, (64, 97, 256, 1000)):
        out = run(mixer(compiled, block), 20000, block, SCENARIOS[name])
        found = silences(out)
        assert found, f"{name}: no silence at all"
        steps = [(i, level) for i, level, _ in found if level > STEP]
        assert not steps, f"{name}, block {block}: steps into silence (sample, level): {steps}"
        # Nor a cut on the way: at most three linear fades move at once (the
        # content's own, the transport and a play head), each 1/240 a sample at most.
        jump = np.abs(np.diff(out, axis=0)).max()
        assert jump <= 3 * STEP, f"{name}, block {block}: a jump of {jump * XFADE:.1f} steps"
        outs[compiled, block] = out
    for (_, block), out in outs.items():
        # The compiled path gives the reference's samples; no block size changes them.
        np.testing.assert_array_equal(out, outs[PATHS[-1], block])
        np.testing.assert_allclose(out, outs[PATHS[-1], 1000], atol=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_random_commands_never_cut_a_fade(seed: int) -> None:
    """A seeded stream of commands every 1..600 samples. A fade may end while
    another ramp rises (a fader, the master), so its last step can pass 1/240 of
    the loudest output; but a linear fade's last step is then no larger than the
    one before it. A step into silence larger than both is a cut."""
    rng = np.random.default_rng(seed)
    tracks = [TRACK, Track(probe(SR // 3, 0.2, 3), SR, ("x", "y", "z"))]
    tracks.append(Track(probe(SR, 0.5, 1), SR, ("mix",), is_mix=True))
    block = int(rng.choice([64, 97, 256]))
    at_end = str(rng.choice(["stop", "loop"]))
    events: dict[int, list[Command]] = {0: [Play()]}
    t = 0
    while t < 200_000:
        t += int(rng.integers(1, 600))
        events.setdefault(t, []).append(random_command(rng, tracks))
    enter_audio_thread()
    outs = []
    for compiled in PATHS:
        m = Mixer(max_channels=6, compiled=compiled, at_end=at_end)
        m.prepare(SR, block)
        m.post(SetTrack(tracks[0]))
        outs.append(run(m, 200_000, block, events))
    np.testing.assert_array_equal(outs[0], outs[-1])
    out = outs[0]
    found = silences(out)
    assert len(found) > 5
    peak = float(np.abs(out).max())
    cuts = [(i, level, b) for i, level, b in found if level > max(peak * STEP, 1.5 * b)]
    assert not cuts, f"cuts into silence (sample, level, step before) of a peak {peak}: {cuts}"


def random_command(rng: np.random.Generator, tracks: list[Track]) -> Command:
    kind = int(rng.integers(0, 11))
    if kind < 4:
        return StripTarget(
            int(rng.integers(0, 6)),
            float(rng.choice([0.0, 0.5, 1.0, 2.0])),
            bool(rng.random() < 0.2),
            bool(rng.random() < 0.15),
            float(rng.choice([-1.0, 0.0, 0.5])),
        )
    if kind == 4:
        return MasterTarget(float(rng.choice([0.0, 0.5, 1.0])), bool(rng.random() < 0.2))
    if kind == 5:
        return Seek(float(rng.choice([rng.uniform(0, 0.3), 0.33, 0.499, 1e9])))
    if kind == 6:
        start = float(rng.uniform(0, 0.5))
        return Loop(start, start + float(rng.uniform(0, 0.2)))
    if kind in (7, 8):
        transport: list[Command] = [Play(), Pause(), Stop()]
        return transport[int(rng.integers(0, 3))]
    if kind == 9:
        # "Same audio" only with the same length: what the loader posts.
        k = int(rng.integers(0, 3))
        return SetTrack(tracks[k], k != 1 and bool(rng.random() < 0.3))
    return Play()
