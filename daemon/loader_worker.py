"""A track's channels from a separation worker: started on the decoded audio, its
reports watched, its partial entry played as it fills (docs/architecture.md,
"Track changes")."""

from __future__ import annotations

import logging
import threading

import numpy as np

from stemdeck.core.audiofile.files import MappedDecode
from stemdeck.core.mixer.params import plays_at

from .loader_base import HEAD_POLL_S, STEMS_STAGE, LoaderBase, Progressive
from .separation_worker import SeparationWorker

__all__ = ["SeparatedChannels"]

log = logging.getLogger(__name__)

#: Longest a worker's start, and the stems model's load for a track's identity, wait
#: for the daemon's audio to run (LoaderBase.sounding).
SOUNDING_WAIT_S = 2.0


class SeparatedChannels(LoaderBase):
    """The loader's separation side (a base of :class:`~.loader.TrackLoader`)."""

    def _spawn(
        self,
        y: np.ndarray,
        sr: int,
        key: str | None,
        gen: int,
        name: str,
        *,
        key_later: bool = False,
        decode: MappedDecode | None = None,
    ) -> SeparationWorker | None:
        """Start generation ``gen``'s worker on ``y`` (filed under ``key`` when there is
        a cache; with ``key_later``, under the key :meth:`SeparationWorker.send_key`
        hands it; ``decode``: ``y`` is its map, read by the worker as it decodes).
        The worker, or None when it did not start (said) or ``gen`` no longer plays.

        Not before the daemon's audio runs (:attr:`~.loader_base.LoaderBase.sounding`,
        at most :data:`SOUNDING_WAIT_S`): a worker started beside the daemon's first
        moments took the first sound 0.2 s later in one start of two.

        Under the lock, so that a newer track or :meth:`close` ends it and releases
        its audio whenever it comes: writing a 10-minute track into shared memory
        takes about 0.1 s, which a track posted meanwhile waits for.
        """
        cache_root = (
            str(self.cache.root)
            if self.cache is not None and (key is not None or key_later)
            else None
        )
        self.sounding.wait(SOUNDING_WAIT_S)
        with self._lock:
            if not self.current(gen):
                return None
            try:
                worker = SeparationWorker.start(
                    self.mp_context,
                    y,
                    sr,
                    spec=self.spec,
                    key=key if cache_root is not None else None,
                    cache_root=cache_root,
                    position=self._head(sr),
                    key_later=key_later,
                    decode=decode,
                )
            except OSError as exc:  # no process or pipe to be had (too many open files)
                failed = f"separation not started: {exc.strerror or exc}"
            else:
                failed = ""
                self._worker = worker
        if failed:
            self._give_up(gen, failed)
            return None
        log.info("%s: playing the original while separating (%s mode)", name, self.spec.mode)
        threading.Thread(
            target=self._watch,
            args=(worker, y, sr, gen, name),
            name="stemdeck-watch",
            daemon=True,
        ).start()
        return worker

    def _watch(self, worker: SeparationWorker, y: np.ndarray, sr: int, gen: int, name: str) -> None:
        """Generation ``gen``'s worker's reports, until its channels play or it fails.

        Chunks stream in (``("entry", ...)``, then ``("chunk", start, stop)``): at a
        rate the read head takes the partial entry plays as it fills (:class:`Progressive`); every
        :data:`HEAD_POLL_S` the play head goes to the worker, which separates from it."""
        progressive: Progressive | None = None
        try:
            while True:
                try:
                    if worker.position is not None:  # where to separate next
                        worker.position.value = self._head(sr)
                    if not worker.poll(HEAD_POLL_S):
                        continue
                    msg = worker.recv()
                except (EOFError, OSError):
                    if self._worker is worker:  # not ended for a newer start
                        self._give_up(gen, "separation stopped before it finished")
                    return
                if not self.current(gen) or self._worker is not worker:
                    return  # another track plays, or this worker was dropped
                kind = msg[0]
                if kind == "progress":
                    with self._lock:
                        if self.current(gen):
                            self.progress = (msg[1], float(msg[2]))
                elif kind == "entry":
                    progressive = self._progressive(str(msg[1]), int(msg[2]), int(msg[3]), y, sr)
                    worker.announced.set()  # opened: it may take its key's name now
                    if progressive is not None:
                        self._post_progressive(progressive, sr, gen, name, worker)
                elif kind == "chunk":
                    if progressive is not None:
                        progressive.land(int(msg[1]), int(msg[2]))
                        with self._lock:
                            if self.current(gen) and not self.separated:
                                self.progress = (STEMS_STAGE, progressive.fraction)
                elif kind == "done" and progressive is not None and progressive.posted:
                    worker.release()
                    # Every chunk is in: the channels alone (the original goes).
                    if self._publish(progressive.channels, sr, gen, worker):
                        log.info("%s: channels ready", name)
                    return
                elif kind == "done":
                    worker.release()  # the audio is separated: its memory goes now
                    channels = self._verified(str(msg[1]))
                    if channels is None:
                        self._give_up(gen, "separated channels unusable in the cache")
                        return
                    if self._publish(channels, sr, gen, worker):
                        log.info("%s: channels ready", name)
                    return
                elif kind == "data":
                    worker.release()
                    if self._publish(msg[1], sr, gen, worker):
                        log.info("%s: channels ready (not cached)", name)
                    return
                elif kind == "error":
                    self._give_up(gen, str(msg[1]))
                    return
        except MemoryError:
            self._give_up(gen, "channels not published: not enough memory")
        finally:
            worker.announced.set()
            worker.finish()

    def _progressive(
        self, key: str, chunks: int, size: int, y: np.ndarray, sr: int
    ) -> Progressive | None:
        """The partial entry ``key`` to play as it fills, or None when it cannot
        (a rate the read head does not take, or the entry cannot be read). Its
        channels and original play at the source's rate ``sr``: the mixer's read
        head converts it to the device's as it reads."""
        if self.cache is None or not plays_at(sr):
            return None
        partial = self.cache.open_partial(key)
        if partial is None or partial.channels.shape != (len(self.names), *y.shape):
            return None
        return Progressive(partial.channels, y[np.newaxis], chunks, size)

    def _end_worker_locked(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            threading.Thread(target=worker.end, daemon=True).start()
