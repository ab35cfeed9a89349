"""The separation worker process's body: what runs in the worker, never in the daemon.

:func:`run` separates a :class:`~.separation_worker.WorkerJob` and reports through
its pipe (the messages are in ``separation_worker.py``); :func:`stream_into_cache`
is its chunk by chunk path into a cache entry. This module imports the separation
(numpy, scipy); the daemon's process never imports it: the worker's entry
(``separation_worker._work``) does, in the worker, forked from the fork server that
preloaded it (``separation_worker.PRELOAD``).
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from stemdeck.core.errors import StemdeckError
from stemdeck.core.separation.blas import keep_one_blas_thread
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.chunk_writer import ChunkWriter
from stemdeck.core.separation.chunks import CHUNK_SECONDS, Chunk, ChunkedSeparator
from stemdeck.core.separation.separate import separate

from .forkserver import follow_parent
from .separation_worker import (
    PROVISIONAL,
    DecodeStopped,
    DecodingAudio,
    SharedAudio,
    WorkerJob,
)

__all__ = ["KeyLater", "run", "stream_into_cache"]
#: How often a worker writing under a provisional name looks for the key.
KEY_POLL_S = 0.05
#: How long a worker whose track's decode stopped waits for the daemon to end it.
STOPPED_WAIT_S = 30.0
#: Chunks a worker separates at once (:func:`stream_into_cache`).
WORKERS = 2
#: The worker process's name in ``ps`` and ``top`` (15 bytes at most).
WORKER_NAME = "stemdeck-worker"


def run(job: WorkerJob, conn: Connection) -> None:
    """The worker process: separate ``job``'s audio, report through ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # ended: no traceback
    follow_parent(job.parent, WORKER_NAME)  # ends with the daemon
    # From the main thread, at once (core/separation/blas.py); BLAS's buffers for the
    # products that run at once: a chunk in each worker thread, and the last chunk's
    # NMF on two threads beside the other chunk.
    keep_one_blas_thread(products=WORKERS + 1)
    nmf_threads = max(1, (os.cpu_count() or 1) - 1)  # a core for the audio
    try:
        available = None
        if isinstance(job.audio, SharedAudio):
            try:
                _shm, y = job.audio.attach()  # mapped until the process ends
            except FileNotFoundError:
                os._exit(0)  # released before we mapped it: the daemon ended this request
        elif isinstance(job.audio, DecodingAudio):
            y = job.audio.attach()
            available = job.audio.available
        else:
            y = job.audio
        cache = SeparationCache(job.cache_root) if job.cache_root else None
        last = [0.0]

        def progress(stage: str, fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] > 0.2 or fraction >= 1.0:
                last[0] = now
                conn.send(("progress", stage, fraction))

        key: str | KeyLater | None = job.key
        if job.key_later is not None:
            key = KeyLater(job.key_later)
        if cache is not None and key is not None:
            if stream_into_cache(
                y,
                job,
                cache,
                key,
                conn,
                threads=nmf_threads,
                available=available,
            ):
                return
        if available is not None:
            available(y.shape[1])  # the whole track, for one separation of it
        entry = key.get() if isinstance(key, KeyLater) else key
        result = separate(
            y,
            job.sr,
            spec=job.spec,
            cache=cache if entry is not None else None,
            key=entry,
            progress=progress,
            nmf_threads=nmf_threads,
        )
        if result.info.get("cache_path"):
            conn.send(("done", entry))
        else:  # no cache (disabled or full disk): hand the audio over
            conn.send(("data", np.asarray(result.channels)))
    except (BrokenPipeError, EOFError, ConnectionError):
        os._exit(0)  # the daemon went away: nobody to tell
    except DecodeStopped:
        # The daemon says why (the decode's failure) and ends this worker, or starts
        # another on the track the file really held: nothing to report.
        time.sleep(STOPPED_WAIT_S)
        os._exit(0)
    except StemdeckError as exc:
        _send_quietly(conn, ("error", str(exc)))
    except MemoryError:
        _send_quietly(conn, ("error", "separation failed: not enough memory"))
    except Exception as exc:  # report, the parent keeps playing the original
        _send_quietly(conn, ("error", f"separation failed: {exc!r}"))
    finally:
        try:
            conn.close()
        except OSError:
            pass


class KeyLater:
    """The key of an entry, which the daemon sends once it has taken it (after the
    whole track is decoded and hashed; None: no entry)."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe: Connection | None = pipe
        self._key: str | None = None

    def arrived(self) -> bool:
        """Whether the key is here (taken without waiting)."""
        pipe = self._pipe
        if pipe is None:
            return True
        try:
            if not pipe.poll():
                return False
        except (EOFError, OSError):
            os._exit(0)  # the daemon ended this request before it sent the key
        self.get()
        return True

    def get(self) -> str | None:
        """The key, once it comes."""
        pipe = self._pipe
        if pipe is not None:
            try:
                self._key = pipe.recv()
            except (EOFError, OSError):
                os._exit(0)  # the daemon ended this request before it sent the key
            pipe.close()
            self._pipe = None
        return self._key


def stream_into_cache(
    y: np.ndarray,
    job: WorkerJob,
    cache: SeparationCache,
    key: str | KeyLater,
    conn: Connection,
    *,
    threads: int | None = None,
    workers: int = WORKERS,
    chunk_seconds: float = CHUNK_SECONDS,
    available: Callable[[int], None] | None = None,
) -> bool:
    """Separate ``y`` chunk by chunk into the cache entry ``key`` and report each
    chunk through ``conn`` as it lands (the module's messages).

    ``key`` may be a :class:`KeyLater` (the daemon is taking it): the entry is
    written under a provisional name (:data:`PROVISIONAL`) from the first chunk,
    and filed under the key once it comes (None: no entry, the provisional one
    removed). ``available`` (a track still being decoded into ``y``) returns once
    that many samples are in (:class:`~.separation_worker.DecodingAudio`).

    ``workers`` chunks at a time, each started in play order
    (:meth:`~stemdeck.core.separation.chunks.ChunkPlan.order`) from the play head
    read from ``job.position`` at that moment, except the first of this run, which
    goes alone: on a load the daemon's decode, hash and beat analysis have the other
    core meanwhile and the first stems come sooner; where nothing else runs (a mode
    switch) the whole takes at most one chunk's time (0.2-0.3 s) longer. The next
    chunks start as soon as one is separated, before it is written (its samples,
    checksums, peaks and record: 30-40 ms), and the last one is separated on
    ``workers`` threads (alone on one, it would leave the other core idle). Chunks a
    killed writer left are reported first and kept.

    Returns
    -------
    bool
        False (nothing written) when another live process writes the entry, or
        there is no key: :func:`separate` then goes its way as before.
    """
    keep_one_blas_thread()  # in this thread, before the chunks' threads
    conn.send(("progress", "starting", 0.0))
    separator = ChunkedSeparator(
        y, job.sr, job.spec, threads=threads, chunk_seconds=chunk_seconds, available=available
    )
    plan = separator.plan
    later = key if isinstance(key, KeyLater) else None
    writer = cache.chunk_writer(
        (job.provisional or f"{PROVISIONAL}{secrets.token_hex(16)}")
        if later is not None
        else str(key),
        separator.names,
        (int(y.shape[0]), int(y.shape[1])),
        W=separator.W,
        frames=plan.frames,
        meta=separator.entry_meta(),
    )
    if writer is None:
        return False
    named = later is None
    with (
        writer,
        ThreadPoolExecutor(workers, thread_name_prefix="stemdeck-chunk") as pool,
    ):
        running: dict[Future[Chunk], int] = {}
        conn.send(("entry", writer.key, plan.n_chunks, plan.chunk_frames * plan.hop))
        kept = writer.ready
        done: set[int] = set()
        landed = False  # a chunk of this run is separated (the next ones go two at a time)
        landing: set[int] = set()  # separated, being written
        for i in range(plan.n_chunks):
            start, stop = plan.samples(i)
            if any(a <= start and stop <= b for a, b in kept):  # left by a killed worker
                done.add(i)
                conn.send(("chunk", start, stop))

        def top_up() -> None:
            """Start chunks in play order from the play head read now, up to
            ``workers`` at once. The chunk under the play head goes alone: the
            daemon's decode, hash and beat analysis have the other core meanwhile,
            and the first stems, not sharing a core with a second chunk as well,
            come in half the time. The last one is separated on ``workers`` threads."""
            head = int(job.position.value) if job.position is not None else 0
            left = [
                i
                for i in plan.order(head)
                if i not in done and i not in landing and i not in running.values()
            ]
            for i in left[: max(0, (workers if landed else 1) - len(running))]:
                # The last chunk runs on every thread: once the one beside it ends,
                # it would have a core to itself and the other idle (0.1-0.2 s).
                threads = workers if i == left[-1] else 1
                running[pool.submit(separator.chunk, i, threads=threads)] = i

        while len(done) < plan.n_chunks:
            if not named and later is not None and later.arrived():
                if not _file_under(writer, later.get()):
                    return False
                named = True
            top_up()
            # Until the key comes, look for it every KEY_POLL_S: the entry takes the
            # key's name as soon as it can (a worker killed from then on is resumed).
            finished, _ = wait(
                running, timeout=None if named else KEY_POLL_S, return_when=FIRST_COMPLETED
            )
            chunks = [(running.pop(future), future.result()) for future in finished]
            if chunks:
                # The next chunks start before these are written: a chunk's write
                # (its samples, checksum and record: 30-40 ms) no longer idles a core.
                landing.update(i for i, _ in chunks)
                landed = True
                top_up()
            for i, c in chunks:
                if i not in done:  # a chunk a killed worker left, separated meanwhile
                    writer.add_chunk(c.start, c.stop, c.channels, c.frames, c.H)
                    done.add(i)
                    conn.send(("chunk", c.start, c.stop))
                landing.discard(i)
        if not named and later is not None and not _file_under(writer, later.get()):
            return False
        writer.finish()
    conn.send(("done", writer.key))
    return True


def _file_under(writer: ChunkWriter, key: str | None) -> bool:
    """File a provisional entry under its track's key; False (the entry removed) when
    the track has none."""
    if key is None:
        writer.discard()
        return False
    writer.file_under(key)
    return True


def _send_quietly(conn: Connection, message: tuple[Any, ...]) -> None:
    try:
        conn.send(message)
    except OSError:
        os._exit(0)
