"""The separation worker process: what it is handed, its body, and its pipe.

The daemon (``loader.py``) decodes a track once and takes its cache key once;
the worker separates exactly that audio, under that key, in its own process (the
GIL and the CPU stay with the audio thread). The audio crosses in POSIX shared
memory: the daemon writes it into a segment named ``stemdeck-<pid>-<random>``
and the worker maps it, so neither a second decode nor a copy in the worker's
heap is needed, and a file rewritten on disk meanwhile changes nothing. Should
shared memory have no room (a container's small ``/dev/shm``), the samples are
pickled to the worker instead, with its start. A track still being decoded
(``decode``) crosses as the file it is decoded into (:class:`DecodingAudio`: a
descriptor passed with the worker's start, which maps it) and a shared count of
the frames in, so the worker starts on the first minute of an hour-long track
while the rest decodes, with no copy at all.

The segment is released (unlinked) by :meth:`SeparationWorker.release`, which
the daemon calls once the worker has reported or been ended: on "done", an
error, a superseded request, a killed worker and the daemon's exit. If the
daemon itself is killed, multiprocessing's resource tracker, which outlives it,
unlinks the segment once the worker has gone (within 0.1 s of its parent).

With a cache the track is separated in chunks (``core/separation/chunks.py``),
each written into the cache entry as it is done (``.partial-<key>``), two at a
time, in play order: the chunk under the play head first, then those after it,
then those before it. The play head is re-read before each chunk is started,
from a shared 64-bit integer the daemon writes (:attr:`SeparationWorker.position`,
in samples of the track's own rate), so a seek re-prioritises within a chunk's
time without restarting anything (a restarted stream would first re-verify
every chunk written so far). Chunks a killed worker left in the entry are kept.
When no entry of the track's shape and rate is in the cache, the daemon starts
the worker before it has decoded and hashed the track: the worker writes its
chunks into an entry under a provisional name (``new-<random>``), which the
daemon plays as it fills, and takes the key from a second pipe
(:meth:`SeparationWorker.send_key`, sent once the daemon has opened that entry):
the partial entry then takes the key's name, so that a worker killed from then
on is resumed, and the entry is sealed under the key.

Messages, worker to daemon, over a one-way pipe::

    ("progress", stage, fraction)   at most every 0.2 s, and at each stage's end
    ("entry", key, chunks, size)    the partial entry exists (``open_partial``):
                                    ``chunks`` chunks of ``size`` samples
    ("chunk", start, stop)          samples ``[start, stop)`` are in the entry
    ("done", key)                   the channels are in the cache under ``key``
    ("data", channels)              no cache (disabled, or full): the channels
    ("error", message)              one line; the daemon plays the original on
"""

from __future__ import annotations

import logging
import mmap
import os
import secrets
import threading
import time
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from stemdeck.core.audiofile.files import MappedDecode
from stemdeck.core.audiofile.scratch import write_at
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.partial import discard_partial

from .forkserver import WORKER_NICE, ProcessContext, start_child

__all__ = [
    "SHARED_PREFIX",
    "WORKER_NICE",
    "DecodeStopped",
    "DecodingAudio",
    "ProcessContext",
    "SeparationWorker",
    "SharedAudio",
    "WorkerJob",
]

log = logging.getLogger(__name__)

#: The name an entry is written under until its track's key comes (``new-<hex>``).
PROVISIONAL = "new-"
#: Name prefix of the shared memory segments (``/dev/shm/stemdeck-<pid>-...`` on Linux).
SHARED_PREFIX = "stemdeck-"


@dataclass(frozen=True)
class SharedAudio:
    """Where a track's samples wait for the worker: float32, C order, ``shape``."""

    name: str
    shape: tuple[int, int]

    def attach(self) -> tuple[SharedMemory, np.ndarray]:
        """Map the segment; the array is read-only and lives as long as the segment object."""
        shm = SharedMemory(name=self.name)
        y = np.ndarray(self.shape, dtype=np.float32, buffer=shm.buf)
        y.flags.writeable = False
        return shm, y


class DecodeStopped(Exception):
    """The track a worker reads as it is decoded will not be decoded whole (its
    decode failed, was cancelled, or the file ended early): the daemon ends it."""


#: How long removing a provisional entry waits for its ended worker to be gone.
DISCARD_WAIT_S = 5.0
#: How often :meth:`SeparationWorker.send_key` looks whether its worker still lives.
ANNOUNCE_POLL_S = 0.1
#: How often a worker reading a track being decoded looks at the frames in.
DECODE_POLL_S = 0.005


@dataclass(frozen=True)
class DecodingAudio:
    """A track being decoded (:meth:`~stemdeck.core.audiofile.files.MappedDecode.share`):
    the descriptor of the file it is decoded into, float32 ``shape`` planar as the
    map, and the shared count of frames in (-1: it stops short).

    Pickled with the worker's start, the descriptor goes as a descriptor
    (``multiprocessing.reduction.DupFd``, as a pipe's does); a forked worker has it."""

    fd: int
    shape: tuple[int, int]
    decoded: Any  # RawValue("q")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_decoding, (reduction.DupFd(self.fd), self.shape, self.decoded))

    def attach(self) -> np.ndarray:
        """Map the file (read-only; the descriptor is closed, the map keeps the file)."""
        size = 4 * self.shape[0] * self.shape[1]
        try:
            mapping = mmap.mmap(self.fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(self.fd)
        return np.ndarray(self.shape, dtype=np.float32, buffer=mapping)

    def available(self, frames: int) -> None:
        """Return once the first ``frames`` frames are in.

        Raises
        ------
        DecodeStopped
            The decode stopped before them.
        """
        while True:
            at = int(self.decoded.value)
            if at < 0:
                raise DecodeStopped("the track's decode stopped")
            if at >= min(frames, self.shape[1]):
                return
            time.sleep(DECODE_POLL_S)


def _rebuild_decoding(fd: Any, shape: tuple[int, int], decoded: Any) -> DecodingAudio:
    return DecodingAudio(fd.detach(), shape, decoded)


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs, pickled to it with its start.

    ``audio`` is the segment holding the samples, the samples themselves when
    shared memory had no room, or the track as it is decoded; ``key`` and
    ``cache_root`` come together (the entry is filed under ``key``) or not at all
    (no cache: the channels come back through the pipe).
    """

    audio: SharedAudio | np.ndarray | DecodingAudio
    sr: int
    spec: SeparationSpec
    key: str | None
    cache_root: str | None
    parent: int
    position: Any = None  # the play head (a shared int64, ``RawValue("q")``), or None
    #: With ``cache_root`` and no ``key``: the pipe the key comes through once the
    #: daemon has taken it (None: no entry), while the worker starts separating.
    key_later: Connection | None = None
    #: With ``key_later``: the name the entry is written under until the key comes
    #: (the daemon's choice, so that it can remove the entry of a worker it ended).
    provisional: str | None = None


def share_audio(y: np.ndarray) -> SharedMemory:
    """A new shared memory segment holding ``y`` (float32, C order).

    Written through the segment's file descriptor where there is one: a full
    ``/dev/shm`` is then an OSError (ENOSPC) here, where writing through the
    mapping would be a SIGBUS; and no page of the daemon's mapping is touched.

    Raises
    ------
    OSError
        No room, or no shared memory.
    """
    data = np.ascontiguousarray(y, dtype=np.float32)
    shm = SharedMemory(
        name=f"{SHARED_PREFIX}{os.getpid()}-{secrets.token_hex(4)}", create=True, size=data.nbytes
    )
    try:
        # CPython keeps a POSIX segment's descriptor here; -1 elsewhere (Windows).
        fd = getattr(shm, "_fd", -1)
        if fd >= 0:
            write_at(fd, data, 0)  # in pieces: the page cache's folios (scratch.WRITE_PIECE)
        else:
            assert shm.buf is not None
            shm.buf[: data.nbytes] = data.data.cast("B")
    except BaseException:
        shm.close()
        shm.unlink()
        raise
    return shm


class SeparationWorker:
    """A started worker process, the pipe it reports through, and its audio's segment.

    Use :meth:`start`. :meth:`end` stops the process and releases the segment;
    :meth:`release` releases it only. Both may be called from any thread, any
    number of times.
    """

    def __init__(
        self,
        process: BaseProcess,
        conn: Connection,
        shm: SharedMemory | None,
        position: Any = None,
    ) -> None:
        self.process = process
        self.conn = conn
        self._shm = shm
        self._key_conn: Connection | None = None
        self._lock = threading.Lock()
        #: Held while the provisional entry is removed: :meth:`end` and the watcher's
        #: :meth:`finish` may both come, and whichever comes second returns only once
        #: the entry is gone (the first may still be removing it).
        self._discard_lock = threading.Lock()
        #: Set once the daemon has taken the worker's "entry" (or its watcher ended):
        #: :meth:`send_key` waits for it, since the entry takes the key's name then.
        self.announced = threading.Event()
        #: The cache folder and the provisional name its entry is written under
        #: until the key comes: removed once the process is gone (:meth:`finish`,
        #: :meth:`end`), unless the entry took the key's name (then it is resumed).
        self._provisional: tuple[Path, str] | None = None
        #: The play head the worker separates from (samples at the track's rate):
        #: a shared int64 (``.value``) the daemon writes, or None.
        self.position = position

    @classmethod
    def start(
        cls,
        context: ProcessContext,
        y: np.ndarray,
        sr: int,
        *,
        spec: SeparationSpec,
        key: str | None,
        cache_root: str | None,
        position: int = 0,
        key_later: bool = False,
        decode: MappedDecode | None = None,
    ) -> SeparationWorker:
        """Hand ``y`` (the track at its own rate ``sr``) over and start a worker on it.

        ``key`` with ``cache_root``: the entry is filed under ``key`` in that cache
        folder, and "done" carries it; its chunks are separated from the play head
        ``position`` (samples at ``sr``; later ones through :attr:`position`).
        ``key_later`` with ``cache_root`` and no ``key``: the worker starts on the
        chunk under the play head at once, into an entry under a provisional name,
        and files it under the key :meth:`send_key` hands over (the daemon hashes
        the track meanwhile). ``decode``: ``y`` is its map, still being decoded; the
        worker reads it as it comes (:class:`DecodingAudio`; shared memory once the
        decode has ended).
        """
        shm: SharedMemory | None = None
        audio: SharedAudio | np.ndarray | DecodingAudio | None = None
        decoding = -1
        if decode is not None:
            counter = context.RawValue("q", 0)
            shared = decode.share(counter)
            if shared is not None:
                decoding = shared
                audio = DecodingAudio(shared, (int(y.shape[0]), int(y.shape[1])), counter)
        try:
            if audio is None:
                try:
                    shm = share_audio(y)
                    audio = SharedAudio(shm.name, (int(y.shape[0]), int(y.shape[1])))
                except OSError as exc:
                    log.info(
                        "no room in shared memory (%s): the track goes to the separation "
                        "with its start",
                        exc.strerror or exc,
                    )
                    audio = np.ascontiguousarray(y, dtype=np.float32)
            return cls._launch(context, audio, shm, sr, spec, key, cache_root, position, key_later)
        finally:
            if decoding >= 0:  # the worker has its own (or none: it did not start)
                os.close(decoding)

    @classmethod
    def _launch(
        cls,
        context: ProcessContext,
        audio: SharedAudio | np.ndarray | DecodingAudio,
        shm: SharedMemory | None,
        sr: int,
        spec: SeparationSpec,
        key: str | None,
        cache_root: str | None,
        position: int,
        key_later: bool,
    ) -> SeparationWorker:
        head = context.RawValue("q", int(position))
        key_in: Connection | None = None
        key_out: Connection | None = None
        provisional: str | None = None
        if key_later and key is None and cache_root is not None:
            key_in, key_out = context.Pipe(duplex=False)
            provisional = f"{PROVISIONAL}{secrets.token_hex(16)}"
        job = WorkerJob(audio, sr, spec, key, cache_root, os.getpid(), head, key_in, provisional)
        parent, child = context.Pipe(duplex=False)
        process = context.Process(
            target=_work, name="stemdeck-separate", daemon=True, args=(job, child)
        )
        worker = cls(process, parent, shm, head)
        worker._key_conn = key_out
        if provisional is not None and cache_root is not None:
            worker._provisional = (Path(cache_root), provisional)
        try:
            start_child(context, process, WORKER_NICE)
        except BaseException:
            parent.close()
            if key_out is not None:
                key_out.close()
            worker.release()
            raise
        finally:
            child.close()
            if key_in is not None:
                key_in.close()
        return worker

    def send_key(self, key: str | None) -> None:
        """Hand over the key of a worker started with ``key_later`` (None: the track is
        separated without an entry, its channels sent back); once only. A worker gone
        meanwhile is not an error here: its pipe says so."""
        conn, self._key_conn = self._key_conn, None
        if conn is None:
            return
        # Not before the daemon opened the entry under its provisional name.
        while not self.announced.wait(ANNOUNCE_POLL_S) and self.process.is_alive():
            pass
        try:
            conn.send(key)
        except OSError:
            pass
        finally:
            conn.close()

    @property
    def shared_name(self) -> str | None:
        """The segment's name while it exists (None once released, or never made)."""
        shm = self._shm
        return shm.name if shm is not None else None

    def poll(self, timeout: float) -> bool:
        """Whether a message (or the pipe's end) is there within ``timeout`` s."""
        return self.conn.poll(timeout)

    def recv(self) -> tuple[Any, ...]:
        """The next message (EOFError or OSError once the worker is gone)."""
        message: tuple[Any, ...] = self.conn.recv()
        return message

    def release(self) -> None:
        """Unlink the audio's segment (the worker's mapping, if any, stays valid).

        Under the lock: a call made while another is releasing returns once the
        segment is gone (the watcher and :meth:`end` may release at once).
        """
        with self._lock:
            shm, self._shm = self._shm, None
            if shm is None:
                return
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:
                pass

    def finish(self, timeout: float = 10.0) -> None:
        """After the last message: close the pipe, reap the process, release."""
        self.conn.close()
        self.process.join(timeout=timeout)  # it ends after its last message: no zombie
        self.release()
        self._discard_provisional()

    def _discard_provisional(self) -> None:
        """The entry still under its provisional name, once the process is gone:
        nobody could resume it (done, it is in place under the key; renamed to the
        key's name, it is not there)."""
        with self._discard_lock:
            provisional = self._provisional
            if provisional is None:
                return
            self.process.join(timeout=DISCARD_WAIT_S)  # ended: gone within moments
            if self.process.is_alive():
                return
            self._provisional = None
            discard_partial(*provisional)

    def end(self) -> None:
        """Stop the process now (SIGTERM, then SIGKILL) and release the segment."""
        conn, self._key_conn = self._key_conn, None
        if conn is not None:
            conn.close()
        process = self.process
        if process.is_alive():
            process.terminate()
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join(timeout=2)
        self.release()
        self._discard_provisional()


def _work(job: WorkerJob, conn: Connection) -> None:
    """The worker process: :func:`.separation_run.run`, imported here, in the worker
    (forked from the fork server, which has it already: PRELOAD), never in the
    daemon: its process holds no separation stack (scipy and its OpenBLAS, ~18 MB)."""
    from .separation_run import run

    run(job, conn)
