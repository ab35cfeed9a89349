"""Keylock: the cost, latency, clicks and quality of the master's pitch shifter.

    OPENBLAS_CORETYPE=... flock /tmp/heavy.lock .venv/bin/python bench/stretch.py \
        [--blocks 3000] [--items 1 2 3 4 5 6]

Prints, side by side in one run (48 kHz):

1. CPU per block of one shifter alone (``Shifter.block``, 256 frames), and what
   keylock adds to ``Mixer.process`` (keylock on minus off, rate 1.08) at 4 and 16
   channels, each as a ratio to the one shifter (target <= 1.5x): the shifter
   runs on the master, so the channel count should not matter.
2. The engine's p50/p99 per block, as a share of the block's time, with keylock
   on at rate 1.08, at 256 and 64 frames, for 4 and 64 channels (targets: 4
   channels at 256 frames <= 25 %, 64 channels at 64 frames <= 25 %).
3. The latency, control to audible: a mute posted, the sample after which the
   output stays under 1 %, with keylock off and on (target <= 15 ms), with a mute in
   one sample and with the mixer's 10 ms ramp (256-frame blocks, and the slowest of
   four mutes a block apart at 64-frame blocks); and with keylock on and an effect on
   the strip, where the mute still goes through the shifter's latency.
4. Clicks over a rate sweep 0.84..1.16 with keylock on: the largest 64-sample
   energy above 4 kHz of a low two-tone mix, over 1/100 of a hard gain step's (the
   tests' detector): under 1 is no click.
5. Quality at rates 0.84, 0.92, 1.08, 1.16: four songs (the demo song and
   ``random_song`` 11, 12 and 13, four bars each) played at rate r with keylock
   against the ideal (the same song synthesized at r times its tempo, same key):
   the mean absolute difference of log-mel spectra (64 bands: the spectrum's
   shape, where a smeared drum hit shows), and of log-CQT spectra (36 bins an
   octave from 32.7 Hz: where a partial out of tune shows, which the mel bands,
   60 Hz wide and more, do not), dB, lower is better, the songs' mean; for the
   frames 512, 1024 and 2048, beside the offline references (librosa's
   phase-vocoder ``time_stretch`` of the song, and Signalsmith Stretch through
   ``python-stretch`` when installed: ``pip install python-stretch``, MIT, bench
   only) and vinyl (no keylock: the pitch off by the rate); and the pitch of a
   440 Hz sine kept (cents).
6. Pitch through a rate change with keylock on: a 1 kHz tone through the mixer's
   30 ms glide (1.0 -> 1.08, 0.92 -> 1.0, 1.5 -> 0.9, 1.16 -> 0.84) at 64 and
   256-frame blocks, the largest and the mean |cents| off over the 0.15 s around
   it (the phase's derivative, 2 ms averages); and the partials of chords kept (a
   300 + 440 Hz pair, a 110 Hz and a 55 Hz bass note's first 8 harmonics, an
   A3-C#4-E4 chord, a C4-E4-G4-B4 chord) at rates 0.84, 0.92, 1.08 and 1.16,
   live and fine (``serve --keylock-quality``): the worst partial's cents
   (partials closer than about two bins, 94 Hz at 48 kHz for the live frame of
   21 ms, 47 Hz for the fine one, cannot be told apart and move with their
   region's peak).
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from dataclasses import replace
from typing import Any

import librosa
import numpy as np
from scipy import signal

from stemdeck.core.material.songs import SongSpec, random_song, render_song
from stemdeck.core.mixer.commands import Batch, Keylock, Play, Rate, SetTrack, StripTarget, Track
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread
from stemdeck.core.mixer.keylock import FRAME, FRAME_SECONDS, KEYLOCK_QUALITY, LATENCY, Shifter

SR = 48000
RATES = (0.84, 0.92, 1.08, 1.16)


def _noise_track(n: int, seconds: float) -> Track:
    rng = np.random.default_rng(1)
    ch = (rng.standard_normal((n, 2, int(seconds * SR))) * 0.05).astype(np.float32)
    return Track(ch, SR, tuple(f"s{i}" for i in range(n)))


def _engine(n: int, block: int, keylock: bool, blocks: int, outputs: str = "mix") -> np.ndarray:
    """Per-block seconds of Mixer.process, n channels, rate 1.08, keylock on or off;
    ``outputs="channels"``: a pair a channel, each through its own shifter."""
    m = Mixer(max_channels=max(n, 4))
    m.prepare(SR, block, outputs=outputs)
    m.post(SetTrack(_noise_track(n, 20.0)))
    m.post(Batch((Rate(1.08), Keylock(keylock))))
    m.post(Play())
    out = np.zeros((block, m.out_channels), np.float32)
    enter_audio_thread()
    for _ in range(200):
        m.process(out)
    times = np.empty(blocks)
    for i in range(blocks):
        if i % 50 == 0:
            m.post(StripTarget(i % n, 0.5 + (i % 100) / 200, False, False, 0.0))
        t0 = time.perf_counter()
        m.process(out)
        times[i] = time.perf_counter() - t0
    np.setbufsize(8192)
    return times


def _shifter_alone(block: int, blocks: int) -> np.ndarray:
    s = Shifter()
    s.prepare(SR)
    s.set(keylock=True)
    rng = np.random.default_rng(2)
    io = (rng.standard_normal((blocks, block, 2)) * 0.1).astype(np.float32)
    times = np.empty(blocks)
    for i in range(blocks):
        t0 = time.perf_counter()
        s.block(io[i], block, 1.08, None)
        times[i] = time.perf_counter() - t0
    return times


def cost(blocks: int) -> None:
    one = float(np.median(_shifter_alone(256, blocks)))
    print(f"1. one shifter alone, 256 frames: {one * 1e6:.1f} us/block (median)")
    for n in (4, 16):
        on = float(np.median(_engine(n, 256, True, blocks)))
        off = float(np.median(_engine(n, 256, False, blocks)))
        print(
            f"   {n:2d} channels: engine {off * 1e6:.1f} us -> {on * 1e6:.1f} us with keylock, "
            f"keylock adds {(on - off) * 1e6:.1f} us = {(on - off) / one:.2f}x one shifter"
        )


def budget(blocks: int) -> None:
    print("2. engine per block with keylock on (rate 1.08), share of the block's time")
    for n, block in ((4, 256), (4, 64), (64, 256), (64, 64)):
        times = _engine(n, block, True, blocks) / (block / SR)
        print(
            f"   {n:2d} ch {block:3d} frames: p50 {np.median(times):6.1%}  "
            f"p99 {np.percentile(times, 99):6.1%}"
        )
    print("   --outputs channels (a shifter a channel, and the master's for the recorder):")
    for n, block in ((4, 256), (4, 64), (16, 256), (8, 128)):
        times = _engine(n, block, True, blocks, "channels") / (block / SR)
        print(
            f"   {n:2d} ch {block:3d} frames: p50 {np.median(times):6.1%}  "
            f"p99 {np.percentile(times, 99):6.1%}"
        )


def latency() -> None:
    """Control to audible: a mute, the sample after which the output stays under 1 %."""
    t = np.arange(SR * 2) / SR
    y = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    track = Track(np.stack([y, y])[np.newaxis], SR, ("a",))

    def heard(keylock: bool, ramp_ms: float, effect: bool, block: int = 256, late: int = 0) -> int:
        m = Mixer(max_channels=4, ramp_ms=ramp_ms)
        m.prepare(SR, block)
        m.post(SetTrack(track))
        m.post(Batch((Keylock(keylock),)))
        if effect:  # the FX path: the strip's history is not kept, the mute goes through
            m.post(StripTarget(0, 1.0, False, False, 0.0, filter=-0.05))
        m.post(Play())
        out = np.zeros((SR, 2), np.float32)
        at = SR // 2 // 256 * 256 + late  # on a block boundary: posted before that block
        for i in range(0, SR, block):
            if i == at:
                m.post(StripTarget(0, 1.0, True, False, 0.0, filter=-0.05 if effect else 0.0))
            m.process(out[i : i + block])
        env = np.abs(out[:, 0])
        # The first sample after which the output stays under 1 % of the tone's peak.
        loud = np.nonzero(env > 0.005)[0]
        return int(loud[-1]) + 1 - at

    ms = 1e3 / SR
    for ramp_ms, label in ((1000 / SR, "a mute in one sample"), (10.0, "the mixer's 10 ms ramp")):
        vinyl, kept, through = (
            heard(k, ramp_ms, e) for k, e in ((False, False), (True, False), (True, True))
        )
        print(
            f"3. control to audible ({label}): vinyl {vinyl} samples ({vinyl * ms:.1f} ms), "
            f"keylock {kept} samples ({kept * ms:.1f} ms); keylock with an effect on, the mute "
            f"through the shifter, {through} samples ({through * ms:.1f} ms; the shifter's "
            f"latency {LATENCY} samples, {LATENCY * ms:.1f} ms)"
        )
    # At 64-frame blocks a change waits for a block where the shifter does no frame
    # work: a mute posted before each of the four blocks of a hop, the slowest.
    worst = max(heard(True, 10.0, False, 64, late) for late in (0, 64, 128, 192))
    print(
        f"3. control to audible (the mixer's 10 ms ramp, 64-frame blocks, the slowest of "
        f"the four blocks of a hop): keylock {worst} samples ({worst * ms:.1f} ms)"
    )


HIGHS = signal.butter(8, 4000, "highpass", fs=SR, output="sos")


def _click_energy(out: np.ndarray) -> float:
    highs = signal.sosfilt(HIGHS, out[:, 0].astype(np.float64))
    frames = highs[2048 : len(highs) // 64 * 64].reshape(-1, 64)
    return float((frames**2).sum(axis=1).max())


def _tones(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    out = np.empty((2, 2, len(t)), np.float32)
    out[0] = 0.3 * np.sin(2 * np.pi * 110 * t + 0.3)
    out[1] = 0.3 * np.sin(2 * np.pi * 165 * t + 1.1)
    return out


def _render(m: Mixer, frames: int, events: dict[int, list]) -> np.ndarray:
    out = np.zeros((frames, 2), np.float32)
    for i in range(0, frames, 256):
        for cmd in events.get(i, []):
            m.post(cmd)
        m.process(out[i : i + 256])
    return out


def _mixer(channels: np.ndarray, **kw: float) -> Mixer:
    m = Mixer(max_channels=8, **kw)  # type: ignore[arg-type]
    m.prepare(SR, 256)
    m.post(SetTrack(Track(channels, SR, ("a", "b"))))
    m.post(Play())
    return m


def clicks() -> None:
    hard = _render(
        _mixer(_tones(1.0), ramp_ms=1000 / SR), SR, {25600: [StripTarget(0, 0.25, False, False, 0)]}
    )
    threshold = _click_energy(hard) / 100
    sweep: dict[int, list] = {0: [Keylock(True)]}
    for j in range(120):  # 0.84 -> 1.16 -> 0.84 over 2.5 s, a step every 10 ms
        r = 0.84 + 0.32 * (j / 59 if j < 60 else (119 - j) / 59)
        sweep[SR // 4 + 512 * j // 256 * 256] = [Rate(r)]
    out = _render(_mixer(_tones(4.0)), 3 * SR, sweep)
    switch = _render(
        _mixer(_tones(4.0)), 3 * SR, {SR // 2: [Keylock(True)], 2 * SR: [Keylock(False)]}
    )
    print(
        f"4. clicks, largest energy over the click threshold: rate sweep 0.84..1.16 with "
        f"keylock {_click_energy(out) / threshold:.3f}, keylock on and off "
        f"{_click_energy(switch) / threshold:.3f} (under 1: no click)"
    )


def _mel_db(x: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=x.astype(np.float32), sr=SR, n_fft=2048, hop_length=512, n_mels=64
    )
    return np.maximum(librosa.power_to_db(mel, ref=1.0), -80.0)


def _cqt_db(x: np.ndarray) -> np.ndarray:
    cqt = librosa.cqt(
        x.astype(np.float32), sr=SR, hop_length=512, fmin=32.7, n_bins=252, bins_per_octave=36
    )
    return np.maximum(librosa.amplitude_to_db(np.abs(cqt), ref=1.0), -80.0)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.shape[1], b.shape[1])
    return float(np.mean(np.abs(a[:, :n] - b[:, :n])))


def _keylocked(song: np.ndarray, rate: float, frame: int | None, keylock: bool) -> np.ndarray:
    """The song (2, n) through the read head at ``rate``, then (``frame``) a shifter of
    that frame, its latency taken off."""
    m = Mixer(max_channels=2)
    m.prepare(SR, 256)
    m.post(SetTrack(Track(song[np.newaxis], SR, ("mix",), is_mix=True)))
    m.post(Rate(rate))
    m.post(Play())
    frames = int(song.shape[1] / rate) - 4096
    out = _render(m, frames, {})
    if frame is None or not keylock:
        return out[:, 0]
    s = Shifter(frame)
    s.prepare(SR)
    s.set(keylock=True)
    s.xfade_samples(1)
    padded = np.concatenate([out, np.zeros((s.latency, 2), np.float32)])
    for i in range(0, len(padded), 256):
        s.block(padded[i : i + 256], len(padded[i : i + 256]), rate, None)
    return padded[s.latency :, 0]


def _sine_cents(rate: float, frame: int) -> float:
    t = np.arange(SR * 2) / SR
    y = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    x = _keylocked(np.stack([y, y]), rate, frame, True)[SR // 2 :].astype(np.float64)
    neg = np.signbit(x)
    idx = np.nonzero(neg[:-1] & ~neg[1:])[0]
    at = idx + x[idx] / (x[idx] - x[idx + 1])
    hz = (len(at) - 1) * SR / (at[-1] - at[0])
    return float(1200 * np.log2(hz / 440.0))


def quality() -> None:
    python_stretch: Any
    try:  # a bench-only extra, imported by name: it may not be installed
        python_stretch = importlib.import_module("python_stretch")
    except ImportError:
        python_stretch = None
    specs = [replace(SongSpec(), bars=4)] + [replace(random_song(s), bars=4) for s in (11, 12, 13)]
    songs = [render_song(spec, sr=SR).mix for spec in specs]
    frames = (512, 1024, 2048)
    kinds: list[tuple[str, int | str | None]] = [(f"frame {f:4d}", f) for f in frames]
    kinds += [("librosa", "librosa"), ("signalsmith", "signalsmith"), ("vinyl", None)]
    rows: dict[float, dict[str, list[list[float]]]] = {}
    for rate in RATES:
        rows[rate] = {"mel": [], "cqt": []}
        for spec, song in zip(specs, songs, strict=True):
            ideal = render_song(replace(spec, bpm=spec.bpm * rate), sr=SR).mix[0]
            played: list[np.ndarray | None] = []
            for _, kind in kinds:
                if isinstance(kind, int):
                    played.append(_keylocked(song, rate, kind, True))
                elif kind == "librosa":
                    played.append(librosa.effects.time_stretch(song[0], rate=rate, n_fft=2048))
                elif kind == "signalsmith" and python_stretch is not None:
                    st = python_stretch.Signalsmith.Stretch()
                    st.preset(1, SR)
                    st.setTimeFactor(rate)
                    played.append(np.asarray(st.process(song[:1].astype(np.float32)))[0])
                elif kind == "signalsmith":
                    played.append(None)
                else:
                    played.append(_keylocked(song, rate, None, False))
            for name, db in (("mel", _mel_db), ("cqt", _cqt_db)):
                ref = db(ideal)
                rows[rate][name].append(
                    [np.nan if y is None else _distance(db(y), ref) for y in played]
                )
    for name, what in (("mel", "log-mel"), ("cqt", "log-CQT")):
        print(f"5. quality: {what} distance to the ideal (dB, lower is better; 4 songs' mean)")
        head = "   rate  " + "".join(f"  {label:>11s}" for label, _ in kinds)
        if name == "mel":
            head += "   | 440 Hz kept (cents, frame 512/1024/2048)"
        print(head)
        for rate in RATES:
            means = np.mean(np.array(rows[rate][name]), axis=0)
            row = f"   {rate:4.2f}  " + "".join(
                f"  {'-' if np.isnan(v) else f'{v:.2f}':>11s}" for v in means
            )
            if name == "mel":
                row += "   | " + " ".join(f"{_sine_cents(rate, f):+.2f}" for f in frames)
            print(row)
        means = np.mean([np.mean(np.array(rows[r][name]), axis=0) for r in RATES], axis=0)
        print("   mean  " + "".join(f"  {'-' if np.isnan(v) else f'{v:.2f}':>11s}" for v in means))


def _glide_cents(r0: float, r1: float, block: int) -> tuple[float, float]:
    from scipy.signal import hilbert

    t = np.arange(SR * 8) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    m = Mixer()
    m.prepare(SR, block)
    m.post(SetTrack(Track(np.stack([tone, tone])[np.newaxis], SR, ("t",))))
    m.post(Batch((Keylock(True), Rate(r0, at_once=True))))
    m.post(Play())
    out = np.zeros((SR * 2, 2), np.float32)
    at = SR // block * block
    for i in range(0, len(out), block):
        if i == at:
            m.post(Rate(r1))
        m.process(out[i : i + block])
    phase = np.unwrap(np.angle(hilbert(out[:, 0].astype(np.float64))))
    f = np.convolve(np.diff(phase) * SR / (2 * np.pi), np.ones(96) / 96, mode="same")
    c = np.abs(1200 * np.log2(np.maximum(f[at - SR // 20 : at + SR // 10], 1.0) / 1000.0))
    return float(c.max()), float(c.mean())


def _partials_cents(
    parts: list[tuple[float, float]], rate: float, frame_s: float = FRAME_SECONDS
) -> float:
    t = np.arange(SR * 4) / SR
    y = np.sum([a * np.sin(2 * np.pi * f * t) for f, a in parts], axis=0).astype(np.float32)
    m = Mixer(keylock_frame_s=frame_s)
    m.prepare(SR, 256)
    m.post(SetTrack(Track(np.stack([y, y])[np.newaxis], SR, ("t",))))
    m.post(Batch((Keylock(True), Rate(rate))))
    m.post(Play())
    out = _render(m, SR * 3, {})[SR:, 0].astype(np.float64)
    n = len(out)
    spec = np.abs(np.fft.rfft(out * np.hanning(n), 8 * n))
    freqs = np.fft.rfftfreq(8 * n, 1 / SR)
    worst = 0.0
    for hz, _ in parts:
        near = (freqs > hz * 0.94) & (freqs < hz * 1.06)
        got = float(freqs[near][np.argmax(spec[near])])
        worst = max(worst, abs(1200 * np.log2(got / hz)))
    return worst


def pitch() -> None:
    print("6. pitch with keylock on through the mixer's rate glide, max / mean |cents|:")
    for r0, r1 in ((1.0, 1.08), (0.92, 1.0), (1.5, 0.9), (1.16, 0.84)):
        figures = [_glide_cents(r0, r1, block) for block in (64, 256)]
        print(
            f"   {r0} -> {r1}: 64 frames {figures[0][0]:.1f} / {figures[0][1]:.2f}, "
            f"256 frames {figures[1][0]:.1f} / {figures[1][1]:.2f}"
        )
    chords = {
        "300 + 440 Hz (0.25, 0.1)": [(300.0, 0.25), (440.0, 0.1)],
        "110 Hz bass, 8 harmonics": [(110.0 * k, 0.3 / k) for k in range(1, 9)],
        "55 Hz bass, 8 harmonics": [(55.0 * k, 0.3 / k) for k in range(1, 9)],
        "A3 C#4 E4": [(220.0, 0.2), (277.18, 0.15), (329.63, 0.15)],
        "C4 E4 G4 B4": [(261.63, 0.15), (329.63, 0.12), (392.0, 0.12), (493.88, 0.1)],
    }
    for quality, frame_s in KEYLOCK_QUALITY.items():
        print(
            f"   partials kept, {quality} (frames of {frame_s * 1e3:.1f} ms), the worst one's "
            "|cents| at rate " + " / ".join(map(str, RATES)) + ":"
        )
        for name, parts in chords.items():
            cents = [_partials_cents(parts, r, frame_s) for r in RATES]
            print(f"   {name:26s} " + " / ".join(f"{c:6.1f}" for c in cents))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--blocks", type=int, default=3000)
    ap.add_argument(
        "--items", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], help="which items (1-6)"
    )
    args = ap.parse_args()
    print(
        f"bench/stretch.py: {SR} Hz, shifter frame {FRAME}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    items = {
        1: lambda: cost(args.blocks),
        2: lambda: budget(args.blocks),
        3: latency,
        4: clicks,
        5: quality,
        6: pitch,
    }
    for item in sorted(set(args.items)):
        items[item]()


if __name__ == "__main__":
    main()
