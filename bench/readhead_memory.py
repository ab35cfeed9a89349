"""Memory of a cached 44.1 kHz entry going live on the 48 kHz engine (issue #22 item 4).

    .venv/bin/python bench/readhead_memory.py [--minutes 10] [--channels 4]

Writes a cache-like entry (``channels.f32``: float32, (channels, 2, frames) at
44.1 kHz, as ``core/separation/cache.py`` maps it), then in this process: the
loader's publishing step (``TrackLoader._publish``, what a verified cache hit
runs) posts it to a prepared 48 kHz mixer, which plays 2 s of it. It prints the
process's anonymous memory (``RssAnon`` in /proc/self/status) before and after,
and then, for comparison in the same run, what the loader did before the read
head: ``resample_channels`` of the entry to 48 kHz (a copy in anonymous memory,
1.08 GB for 10 minutes of four stereo channels on main 49182a3).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from stemdeck.core.audiofile.samples import resample_channels
from stemdeck.core.control.registry import Registry
from stemdeck.core.mixer.commands import Play
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.daemon.loader import TrackLoader

SOURCE_SR = 44100
ENGINE_SR = 48000
BLOCK = 256


def rss_anon_mb() -> float:
    """This process's anonymous resident memory, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def write_entry(path: Path, channels: int, frames: int) -> np.memmap:
    """A (channels, 2, frames) float32 file written a minute at a time (no big array in
    memory), mapped read-only as the cache maps its entries."""
    out = np.memmap(path, dtype=np.float32, mode="w+", shape=(channels, 2, frames))
    rng = np.random.default_rng(0)
    step = SOURCE_SR * 60
    for start in range(0, frames, step):
        end = min(start + step, frames)
        out[:, :, start:end] = rng.standard_normal((channels, 2, end - start), np.float32) * 0.1
    out.flush()
    del out
    return np.memmap(path, dtype=np.float32, mode="r", shape=(channels, 2, frames))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--channels", type=int, default=4)
    args = ap.parse_args()
    frames = int(args.minutes * 60 * SOURCE_SR)
    spec = SeparationSpec("components")
    names = tuple(f"c{i + 1}" for i in range(args.channels))
    with tempfile.TemporaryDirectory(prefix="readhead-memory-") as folder:
        entry = write_entry(Path(folder) / "channels.f32", args.channels, frames)
        size_mb = entry.nbytes / 2**20
        engine = Mixer(max_channels=args.channels)
        engine.prepare(ENGINE_SR, BLOCK)
        loader = TrackLoader(engine, Registry(names), names, spec=spec, cache=None, library=[])
        out = np.zeros((BLOCK, 2), np.float32)
        engine.process(out)
        before = rss_anon_mb()
        # What a verified cache hit runs: the entry as it is, at its own rate.
        assert loader._publish(entry, SOURCE_SR, loader.generation)
        engine.post(Play())
        for _ in range(2 * ENGINE_SR // BLOCK):  # 2 s of output
            engine.process(out)
        track = engine.track
        assert track is not None and track.channels is entry and track.sr == SOURCE_SR
        after = rss_anon_mb()
        print(
            f"entry: {args.channels} stereo channels, {args.minutes:g} min at {SOURCE_SR} Hz, "
            f"{size_mb:.0f} MB mapped; engine at {ENGINE_SR} Hz"
        )
        print(
            f"read head (this code): RssAnon {before:.0f} -> {after:.0f} MB "
            f"(+{after - before:.1f} MB) after the entry went live and played 2 s"
        )
        copy = resample_channels(entry, SOURCE_SR, ENGINE_SR)  # what the loader did before
        resampled = rss_anon_mb()
        print(
            f"resampled copy (before): RssAnon {after:.0f} -> {resampled:.0f} MB "
            f"(+{resampled - after:.0f} MB for a {copy.nbytes / 2**20:.0f} MB copy)"
        )
        del copy
        loader.close()


if __name__ == "__main__":
    main()
