"""A track's channels from the cache: the entry its file's identity indexes,
confirmed by its audio's key, or the entry of that key; each played chunk by chunk
as its blocks are verified (docs/architecture.md, "Track changes")."""

from __future__ import annotations

import logging

import numpy as np

from stemdeck.core.errors import StemdeckError
from stemdeck.core.mixer.commands import SetTrack, Track
from stemdeck.core.mixer.params import plays_at
from stemdeck.core.separation.checks import CacheLookup

from .loader_base import STEMS_STAGE, LoaderBase, Progressive, TrackLoad

__all__ = ["VERIFY_CHUNK_S", "CachedChannels"]

log = logging.getLogger(__name__)

#: A cached entry's blocks are verified this many seconds of audio at a time (as
#: long as the worker's chunks), each span's stems playing once it is checked: the
#: one under the play head costs the same whatever the track's length.
VERIFY_CHUNK_S = 15.0


def _play_order(first: int, chunks: int) -> list[int]:
    """Chunks in play order from chunk ``first``: it, those after it, then those
    before it, nearest first (as the separation worker's)."""
    first = min(max(0, first), chunks - 1)
    return [*range(first, chunks), *range(first - 1, -1, -1)]


class CachedChannels(LoaderBase):
    """The loader's cache side (a base of :class:`~.loader.TrackLoader`)."""

    def _indexed(self, load: TrackLoad) -> str | None:
        """The key ``load``'s file identity indexes in the cache, when its entry can
        play at the source's rate as it is verified; else None."""
        if self.cache is None or load.identity is None or not plays_at(load.decode.sr):
            return None
        return self.cache.indexed_key(load.identity)

    def _key(self, load: TrackLoad) -> str | None:
        """The cache key of ``load``'s whole audio, taken once, and filed under the
        file's identity; None when it cannot be taken (said in the log)."""
        if load.key is not None:
            return load.key
        y = self._whole(load)
        if y is None or self.cache is None:
            return None
        try:
            load.key = self.spec.key(y, load.decode.sr)
        except StemdeckError as exc:
            log.warning("cache: %s", exc)
            return None
        if load.identity is not None:
            self.cache.index_source(load.identity, load.key)
        return load.key

    def _confirm(self, load: TrackLoad) -> bool:
        """Whether the entry ``load``'s file identity indexed (and that played as it
        was verified) is its audio's: its key once the whole file is decoded. When
        not, its stems go (the original plays again) and it is separated anew."""
        key = self._key(load)
        if key is not None and key == load.indexed:
            load.confirmed = True
            return True
        if load.published:
            gen = load.gen
            y = load.whole if load.whole is not None else load.decode.audio
            track = Track(y[np.newaxis], load.decode.sr, ("mix",), is_mix=True)

            def posted() -> None:
                self.separated = False
                self.progress = ("starting", 0.0)

            self._post_track(
                lambda: self.current(gen), SetTrack(track, same_audio=True), self.names, posted
            )
            load.published = False
            log.info(
                "%s: the cache entry its file named is not of its audio; separating it", load.name
            )
        return False

    def _cached_by_chunks(
        self, key: str, y: np.ndarray, sr: int, gen: int, name: str, load: TrackLoad | None = None
    ) -> str:
        """Play the cache entry ``key`` chunk by chunk as its blocks are verified: the
        chunk under the play head first (it plays its stems once its blocks and the
        activations are checked), then those after it, then those before it.

        With ``load``, ``key`` is the one its file's identity indexed and ``y`` the
        source still decoding: once it is decoded the key is confirmed
        (:meth:`_confirm`; between two chunks, and before the entry plays alone).

        Returns
        -------
        str
            ``played``: the entry was found and every block checked (its channels
            play, or generation ``gen`` no longer plays); ``none`` when there is none
            to play: absent, damaged (removed; the chunks already verified play on
            until the worker's new entry replaces them) or unreadable, said in the
            log; ``mismatch``: with ``load``, the key was not its audio's (its stems
            went, the original plays).
        """
        assert self.cache is not None
        found = self.cache.load(key, verify=False)
        entry = found.entry
        if entry is None or entry.channels.shape != (len(self.names), *y.shape):
            if found.problem:
                log.warning(found.problem)
            return "none"
        checker = self.cache.checker(entry)
        if isinstance(checker, CacheLookup):
            log.warning(checker.problem)
            return "none"
        size = max(1, int(VERIFY_CHUNK_S * sr))
        chunks = -(-int(y.shape[1]) // size)
        progressive = Progressive(entry.channels, y[np.newaxis], chunks, size)
        with self._lock:
            if self.current(gen):
                self.progress = ("verifying", 0.0)
        checked = checker.files()
        done: set[int] = set()
        while checked.found and len(done) < chunks:
            if not self.current(gen):
                return "played"  # another track plays
            if load is not None and load.decode.done and not load.confirmed:
                if not self._confirm(load):
                    return "mismatch"
            i = next(i for i in _play_order(self._head(sr) // size, chunks) if i not in done)
            checked = checker.samples(i * size, (i + 1) * size)
            if not checked.found:
                break
            done.add(i)
            progressive.land(i * size, (i + 1) * size)
            if not progressive.posted:
                self._post_progressive(progressive, sr, gen, name)
                if load is not None and progressive.posted:
                    load.published = True
            with self._lock:
                if self.current(gen) and not self.separated:
                    self.progress = (STEMS_STAGE, progressive.fraction)
        if not checked.found:
            log.warning(checked.problem)
            return "none"
        if load is not None and not load.confirmed and not self._confirm(load):
            return "mismatch"
        if self._publish(entry.channels, sr, gen):
            log.info("%s: %d channels from the cache", name, len(entry.channels))
        return "played"

    def _maybe_cached(self, y: np.ndarray, sr: int) -> bool:
        """Whether the cache may hold ``y``'s entry (:meth:`SeparationCache.may_hold`);
        a cache folder that cannot be listed: maybe."""
        assert self.cache is not None
        try:
            return self.cache.may_hold(sr, (int(y.shape[0]), int(y.shape[1])))
        except OSError:
            return True
