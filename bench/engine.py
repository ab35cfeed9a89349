"""Engine cost per block at 48 kHz, for 4 to 64 stereo channels and 32 to 256 frames.

    .venv/bin/python bench/engine.py [--blocks 4000] [--runs 5] [--realtime]
                                     [--baseline PATH]

Prints the median and 99th percentile of Mixer.process as a fraction of the
block's time budget (frames / 48000 s), with a gain change every 50 blocks
and a solo toggled on every strip every 400 blocks, so ramps are part of the
load. The audio thread set-up of the daemon (``enter_audio_thread``) is
applied. Baseline, timed side by side: the least a mixer must do, one numpy
sum of the channels' block (no gains, no ramps).
Targets (p99 share of the block budget): 64 channels at 64 frames <= 25 %,
4 channels at 32 frames <= 25 %.

FX cases (issue #25) run beside the same cases without FX: ``filter`` puts the
DJ filter on every strip (knobs off 0, one gliding every 50 blocks with the gain
change), ``filter+echo`` also opens every strip's echo send (the bus at 375 ms,
feedback 0.6, its filter at 0.2), ``filter+echo+reverb`` also opens every
strip's reverb send (size 0.7, low-cut 200 Hz). Targets: 16 channels at 64
frames with filter and echo, and with filter, echo and reverb, p99 <= 25 %.
``--baseline`` times the FX cases too when the old engine has them
(``Mixer.filter_state``, ``Mixer.reverb_state``); an older one shows them as ``-``.

Read-head cases (issues #22 and #23) run beside the same cases at equal rates:
``44k`` plays a 44.1 kHz track on the 48 kHz engine (the read head converts the
rate as it reads, a windowed sinc of 32 taps per frame), ``r1.08`` at the vinyl
rate 1.08, ``44k+r1.08`` both. Target: 64 channels at 64 frames within the same
25 %. A ``--baseline`` engine from before the read head shows them as ``-``.

``--baseline PATH`` times another checkout's engine against this one's, side by
side in one run: every case of every run is measured twice, each time in a
fresh process, once with ``stemdeck`` imported from PATH (old) and once from
this checkout (new), the order alternating from case to case and run to run so
that neither side always goes first. PATH is either a folder holding an
installed ``stemdeck`` (put first on ``PYTHONPATH``), or a source checkout (it
holds ``pyproject.toml``), which is then installed, compiled kernel included,
into a temporary folder first. For the starting commit of a change::

    git worktree add /tmp/engine-base <commit>
    .venv/bin/python bench/engine.py --baseline /tmp/engine-base --runs 3

It prints, per case, the median and p99 shares of old and new (medians over
the runs) and new / old, and the noise: for each side, the spread of its p99
over the runs (largest / smallest), which a ratio must exceed to mean anything.
Both sides must run the compiled kernel; the header says which file each
imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

from stemdeck.core.mixer.commands import Batch, Play, SetTrack, StripTarget, Track
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread

SR = 48000
# (channels, frames, FX): "" none, "filter" on every strip, "filter+echo" and every echo
# send, "filter+echo+reverb" and every reverb send too.
CASES = (
    (4, 32, ""),
    (4, 256, ""),
    (16, 64, ""),
    (16, 64, "filter+echo"),
    (16, 64, "filter+echo+reverb"),
    (16, 256, ""),
    (64, 64, ""),
    (64, 256, ""),
    (64, 256, "filter"),
    (4, 256, "44k"),
    (16, 64, "44k"),
    (64, 64, "44k"),
    (64, 64, "r1.08"),
    (64, 64, "44k+r1.08"),
    (64, 256, "44k"),
    (64, 256, "44k+r1.08"),
)
TARGETS = {
    (64, 64, ""): 0.25,
    (4, 32, ""): 0.25,
    (16, 64, "filter+echo"): 0.25,
    (16, 64, "filter+echo+reverb"): 0.25,
    (64, 64, "44k"): 0.25,
    (64, 64, "44k+r1.08"): 0.25,
}


def _mode(fx: str) -> tuple[bool, bool, int, float]:
    """A case's fourth field: (filter on, echo on, the track's rate, the vinyl rate)."""
    parts = fx.split("+") if fx else []
    rate = next((float(p[1:]) for p in parts if p[:1] == "r" and p[1:2].isdigit()), 1.0)
    return "filter" in parts, "echo" in parts, 44100 if "44k" in parts else SR, rate


def _reverbed(fx: str) -> bool:
    """A case with every reverb send open."""
    return "reverb" in fx.split("+")


def run(n: int, block: int, blocks: int, fx: str = "") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    filtered, echoed, track_sr, rate = _mode(fx)
    reverbed = _reverbed(fx)

    def strip(i: int, gain: float, solo: bool) -> StripTarget:
        if not (filtered or echoed):  # the fields every engine has (a --baseline before FX)
            return StripTarget(i, gain, False, solo, 0.0)
        knob = float(rng.uniform(-0.9, 0.9)) if filtered else 0.0
        send = 0.3 if echoed else 0.0
        if reverbed:  # a field only engines with the reverb have
            return StripTarget(i, gain, False, solo, 0.0, knob, 0.3, send, reverb=0.3)
        return StripTarget(i, gain, False, solo, 0.0, knob, 0.3, send)

    seconds = (blocks + 60) * block / SR * rate + 1
    channels = (0.1 * rng.standard_normal((n, 2, int(seconds * track_sr)))).astype(np.float32)
    m = Mixer(max_channels=n)
    m.prepare(SR, block)
    m.post(SetTrack(Track(channels, track_sr, tuple(f"c{i}" for i in range(n)))))
    m.post(Play())
    if rate != 1.0:
        # Imported here: a --baseline engine from before the read head has no Rate.
        from stemdeck.core.mixer.commands import Rate

        m.post(Rate(rate))
    if echoed:
        # Imported here: a --baseline engine from before the FX work has no EchoTarget
        # and runs only the cases without FX.
        from stemdeck.core.mixer.commands import EchoTarget

        m.post(EchoTarget(375.0, 0.6, 0.2, 0.8))
    if reverbed:
        from stemdeck.core.mixer.commands import ReverbTarget  # as EchoTarget above

        m.post(ReverbTarget(0.7, 200.0, 0.8))
    if filtered or echoed:
        m.post(Batch(tuple(strip(i, 1.0, False) for i in range(n))))
    out = np.zeros((block, 2), np.float32)
    for _ in range(50):
        m.process(out)
    engine = np.empty(blocks)
    base = np.empty(blocks)
    pos = 0
    for b in range(blocks):
        if b % 50 == 0:
            m.post(strip(b % n, float(rng.uniform(0.2, 1.0)), False))
        if b % 400 == 200:  # /ch/*/solo 1, then 0: every strip re-aimed
            solo = b % 800 == 200
            m.post(Batch(tuple(strip(i, 1.0, solo) for i in range(n))))
        t0 = time.perf_counter()
        m.process(out)
        t1 = time.perf_counter()
        at = pos % (channels.shape[2] - block)  # a slower track is shorter in frames
        channels[:, :, at : at + block].sum(axis=0, out=out.T)
        t2 = time.perf_counter()
        engine[b] = t1 - t0
        base[b] = t2 - t1
        pos += block
    assert _fx_path(m) == (filtered or echoed), "the FX path runs exactly in the FX cases"
    assert not reverbed or m.reverb_running, "the reverb runs in its case"
    assert m.dropped == 0 and m.playing, "the track plays (a refused one would be silence)"
    return engine, base


def _scheduling(realtime: bool) -> str:
    enter_audio_thread()
    if not realtime:
        return "SCHED_OTHER"
    from stemdeck.daemon.realtime import make_realtime  # only with --realtime

    return make_realtime()


def _fx_path(m: Mixer) -> bool:
    """The FX path runs: ``Mixer.fx.active`` (``Mixer._fx`` in a ``--baseline``
    engine from before ``core/mixer/fx.py``; an engine from before the FX work has
    neither and no FX path)."""
    return bool(m.fx.active if hasattr(m, "fx") else getattr(m, "_fx", False))


def _child(case: str, blocks: int, realtime: bool) -> None:
    """One case in this process: a JSON line of its statistics (``--baseline``'s worker)."""
    import stemdeck.core.mixer.engine as engine_module

    n_text, block_text, fx = case.split(",")
    n, block = int(n_text), int(block_text)
    scheduling = _scheduling(realtime)
    filtered, echoed, track_sr, rate = _mode(fx)
    old_fx = (filtered or echoed) and not hasattr(Mixer, "filter_state")  # before #25
    old_fx = old_fx or (_reverbed(fx) and not hasattr(Mixer, "reverb_state"))
    old_rate = (track_sr != SR or rate != 1.0) and not hasattr(Mixer, "seconds")  # before #22
    if old_fx or old_rate:
        print(json.dumps({"file": engine_module.__file__, "kernel": "compiled", "skip": True}))
        return
    engine, base = run(n, block, blocks, fx)
    result = {
        "file": engine_module.__file__,
        "kernel": Mixer(max_channels=1).kernel,
        "scheduling": scheduling,
        "median": float(np.median(engine)),
        "p99": float(np.percentile(engine, 99)),
        "base": float(np.median(base)),
    }
    print(json.dumps(result))


def _baseline_path(path: Path, keep: tempfile.TemporaryDirectory[str]) -> Path:
    """The folder to import the old ``stemdeck`` from: ``path``, or an install of it."""
    if not (path / "pyproject.toml").exists():
        return path
    target = Path(keep.name) / "site"
    print(f"installing {path} into {target} ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), path],
        check=True,
    )
    return target


BASELINE_CASES = CASES


def _measure(case: tuple[int, int, str], blocks: int, realtime: bool, site: Path | None) -> dict:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    child = ",".join(map(str, case))
    command = [sys.executable, __file__, "--child", child, "--blocks", str(blocks)]
    if realtime:
        command.append("--realtime")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {'old' if site else 'new'} engine failed:\n{done.stderr}")
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    if result["kernel"] != "compiled":
        raise SystemExit(f"{result['file']} runs the {result['kernel']} kernel, not the compiled")
    return result


def side_by_side(args: argparse.Namespace, baseline: Path) -> None:
    """Old (``baseline``) against new (this checkout), a fresh process per measurement."""
    keep = tempfile.TemporaryDirectory(prefix="engine-baseline-")
    with keep:
        site = _baseline_path(baseline.resolve(), keep)
        results: dict[tuple[int, int, str], dict[str, list[dict]]] = {
            case: {"old": [], "new": []} for case in BASELINE_CASES
        }
        for r in range(args.runs):
            for c, case in enumerate(BASELINE_CASES):
                order = ("old", "new") if (r + c) % 2 == 0 else ("new", "old")
                for side in order:
                    where = site if side == "old" else None
                    results[case][side].append(_measure(case, args.blocks, args.realtime, where))
            print(f"run {r + 1} of {args.runs} done", file=sys.stderr, flush=True)
    first = results[BASELINE_CASES[0]]
    print(
        f"48 kHz; {first['new'][0]['scheduling']}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
        f"{args.runs} runs of {args.blocks} blocks, each case in a fresh process per side, "
        "old and new alternating"
    )
    print(f"old: {first['old'][0]['file']} (kernel {first['old'][0]['kernel']})")
    print(f"new: {first['new'][0]['file']} (kernel {first['new'][0]['kernel']})")
    print("shares of the block budget, medians over the runs; spread: largest / smallest p99")
    print(
        f"{'channels':>8} {'frames':>6} {'fx':>18} {'med old':>8} {'med new':>8} {'new/old':>7} "
        f"{'p99 old':>8} {'p99 new':>8} {'new/old':>7} {'spread old':>10} {'spread new':>10}"
    )
    per_run = []
    for n, block, fx in BASELINE_CASES:
        budget = block / SR
        if any(g.get("skip") for side in ("old", "new") for g in results[(n, block, fx)][side]):
            print(f"{n:>8} {block:>6} {fx:>18} {'-':>8}")  # the old engine has no FX
            continue
        row = {}
        for side in ("old", "new"):
            got = results[(n, block, fx)][side]
            p99s = [g["p99"] / budget for g in got]
            row[side] = (median(g["median"] / budget for g in got), median(p99s), p99s)
        (mo, po, p99s_old), (mn, pn, p99s_new) = row["old"], row["new"]
        print(
            f"{n:>8} {block:>6} {fx or '-':>18} "
            f"{mo * 100:>7.1f}% {mn * 100:>7.1f}% {mn / mo:>6.2f}x "
            f"{po * 100:>7.1f}% {pn * 100:>7.1f}% {pn / po:>6.2f}x "
            f"{max(p99s_old) / min(p99s_old):>9.2f}x {max(p99s_new) / min(p99s_new):>9.2f}x"
        )
        per_run.append(
            f"{n:>8} {block:>6} {fx or '-':>18}  old "
            + " ".join(f"{p * 100:.1f}%" for p in p99s_old)
            + "  new "
            + " ".join(f"{p * 100:.1f}%" for p in p99s_new)
        )
    print("p99 of each run:")
    print("\n".join(per_run))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--blocks", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="run under SCHED_FIFO, as the daemon's audio thread does where allowed",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        metavar="PATH",
        help="time the engine imported from PATH (an installed stemdeck, or a source "
        "checkout to install) side by side with this checkout's",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)  # "channels,frames,fx": one case, JSON
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.blocks, args.realtime)
        return
    if args.baseline is not None:
        side_by_side(args, args.baseline)
        return
    scheduling = _scheduling(args.realtime)
    print(
        f"48 kHz; {scheduling}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
        f"medians of {args.runs} runs of {args.blocks} blocks"
    )
    print(
        f"{'channels':>8} {'frames':>6} {'fx':>18} {'median':>9} {'p99':>9} {'median %':>9} "
        f"{'p99 %':>7} {'baseline':>9} {'x baseline':>10} target"
    )
    for n, block, fx in CASES:
        budget = block / SR
        meds, p99s, bases = [], [], []
        for _ in range(args.runs):
            engine, base = run(n, block, args.blocks, fx)
            meds.append(float(np.median(engine)))
            p99s.append(float(np.percentile(engine, 99)))
            bases.append(float(np.median(base)))
        med, p99, b = median(meds), median(p99s), median(bases)
        target = TARGETS.get((n, block, fx))
        verdict = ""
        if target is not None:
            ok = p99 / budget <= target
            verdict = f"p99 <= {target * 100:.0f} %: {'met' if ok else 'MISSED'}"
        print(
            f"{n:>8} {block:>6} {fx or '-':>18} {med * 1e3:>7.3f}ms {p99 * 1e3:>7.3f}ms "
            f"{med / budget * 100:>8.1f}% {p99 / budget * 100:>6.1f}% {b * 1e3:>7.3f}ms "
            f"{med / b:>9.1f}x {verdict}"
        )


if __name__ == "__main__":
    main()
