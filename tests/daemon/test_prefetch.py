"""Read-ahead of memory-mapped audio, through public numpy only."""

from pathlib import Path

import numpy as np

from stemdeck.core.mixer.commands import Loop, Play, SetTrack, Track
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.daemon.prefetch import Prefetcher, mapping_of, will_need


def test_finds_the_mapping_of_a_cached_entry(tmp_path: Path) -> None:
    cache = SeparationCache(tmp_path)
    audio = np.arange(4 * 2 * 5000, dtype=np.float32).reshape(4, 2, 5000)
    with cache.writer("k" * 40, 4, (2, 5000)) as w:
        for i in range(4):
            w.add_channel(str(i), audio[i])
        w.add_array("W", np.ones(1))
        w.add_array("H", np.ones(1))
        w.meta["sr"] = 48000
    entry = cache.load("k" * 40).entry
    assert entry is not None
    found = mapping_of(entry.channels)
    assert found is not None
    mm, offset = found
    assert offset == 0 and len(mm) == audio.nbytes
    assert will_need(entry.channels, 100, 4000) == 8  # every (channel, side) row
    assert will_need(entry.channels, 4000, 100) == 0
    assert will_need(audio, 0, 1000) == 0  # in memory: nothing to do
    m = Mixer(max_channels=4)
    m.prepare(48000, 256)
    m.post(SetTrack(Track(entry.channels, 48000, ("a", "b", "c", "d"))))
    m.post(Play())
    m.post(Loop(0.01, 0.05))
    m.process(np.zeros((256, 2), np.float32))
    Prefetcher(m).tick()  # the play head and the loop start; never raises
