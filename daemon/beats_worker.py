"""The beat analysis in a process of its own, forked from the separation's fork server.

The analysis (``core/beats/analysis.py``) is Python and numpy from the track's first
sample to its last: run in a daemon thread, it held the GIL most of the time, and
at the separation worker's niceness the scheduler often stopped it *holding* the GIL
while the worker's chunks had both cores: the audio callback, which needs the GIL
every block, then waited for that thread to be given a core again, 5 to 100 ms,
and blocks were dropped (``bench/start_xruns.py``; docs/architecture.md says how it
was found). In a process of its own the analysis takes no lock of the daemon's, and
runs at the worker's niceness (:data:`~.forkserver.WORKER_NICE`).

The samples cross without a copy where they are a map of a scratch file
(``core/audiofile/scratch.py``: the decoded track, a stem file's mix): the file's
descriptor goes with the process's start (``multiprocessing.reduction.DupFd``) and
the process maps it. Other samples (a track decoded into the heap) go through a
shared memory segment, or should shared memory have no room, an unlinked file in the
temporary folder, written with ``pwrite`` (never pickled with the start: that held the
GIL 70 ms for 3 minutes).

The daemon's thread waits for one message: ``("done", BeatAnalysis)`` or
``("error", exception)``, the analysis's own exception (one line where it cannot be
rebuilt), looking every :data:`POLL_S` whether it is still wanted (a newer track ends
it). A process that ends without a message (killed, out of memory) is an error too.
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from stemdeck.core.audiofile.scratch import mapped_file, new_file, write_at
from stemdeck.core.beats.analysis import BeatAnalysis

from .forkserver import ProcessContext, follow_parent, start_child, worker_context
from .separation_worker import WORKER_NICE, SharedAudio, share_audio

__all__ = ["BeatProcessError", "MappedSamples", "analyze_apart"]

#: How long the daemon waits for an ended analysis process to be reaped.
REAP_S = 5.0


class BeatProcessError(RuntimeError):
    """The analysis process ended without an answer (killed, or out of memory)."""


@dataclass(frozen=True)
class MappedSamples:
    """float32 samples in a file: its descriptor, the byte ``offset`` of the first
    sample, the array's ``shape`` and byte ``strides``. Pickled with a process's
    start, the descriptor goes as a descriptor (``DupFd``)."""

    fd: int
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (reduction.DupFd(self.fd), self.offset, self.shape, self.strides))

    def attach(self) -> np.ndarray:
        """Map the file, read-only (the descriptor is closed: the map keeps the file).

        Raises
        ------
        ValueError
            The array does not fit in the file.
        OSError
            The file cannot be mapped.
        """
        try:
            size = os.fstat(self.fd).st_size
            mapping = mmap.mmap(self.fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(self.fd)
        return np.ndarray(
            self.shape, np.float32, buffer=mapping, offset=self.offset, strides=self.strides
        )


def _rebuild(
    fd: Any, offset: int, shape: tuple[int, ...], strides: tuple[int, ...]
) -> MappedSamples:
    return MappedSamples(fd.detach(), offset, shape, strides)


def analyze_apart(
    y: np.ndarray,
    sr: int,
    *,
    context: ProcessContext | None = None,
    wanted: Callable[[], bool] = lambda: True,
) -> BeatAnalysis:
    """:func:`~stemdeck.core.beats.analysis.analyze_beats` of ``y`` at ``sr`` in a new
    process (``context``'s, default the fork server's), niced as the separation
    worker; returns its analysis. ``wanted()`` is asked every :data:`POLL_S` while it
    runs: False ends the process (a newer track superseded this one).

    Raises
    ------
    Exception
        What the analysis raised (``AudioFileError``, ``ParameterError``, ...).
    BeatProcessError
        The process ended without an answer, or was ended (no longer wanted).
    OSError
        No process could be started, or the samples had nowhere to go.
    """
    context = worker_context() if context is None else context
    shm: SharedMemory | None = None
    fds: list[int] = []
    try:
        found = _samples(y, fds)
        audio: MappedSamples | SharedAudio
        if isinstance(found, tuple):
            shm, audio = found
        else:
            audio = found
        kind, value = _run(context, audio, int(sr), fds, wanted)
    finally:
        for fd in fds:  # the process has its own (sent with its start)
            os.close(fd)
        if shm is not None:
            shm.close()
            shm.unlink()
    if kind == "error":
        try:
            raise value
        finally:
            del value  # not kept alive, with this frame and the track, by the traceback
    assert isinstance(value, BeatAnalysis)
    return value


#: How often the daemon's thread looks whether the analysis is still wanted.
POLL_S = 0.1
#: :class:`~.track_beats.TrackBeats` passes ``wanted`` to an analysis marked so.
analyze_apart.takes_wanted = True  # type: ignore[attr-defined]


def _samples(y: np.ndarray, fds: list[int]) -> MappedSamples | tuple[SharedMemory, SharedAudio]:
    """Where the process reads ``y`` from: the scratch file it maps (its descriptor
    appended to ``fds``, for the caller to close), else a new shared memory segment,
    else a new unlinked file in the temporary folder (written with ``pwrite``, which
    leaves the GIL: pickled with the start, 3 minutes took 70 ms holding it).

    Raises
    ------
    OSError
        No room anywhere.
    """
    found = mapped_file(y) if y.dtype == np.float32 and y.ndim == 2 else None
    if found is not None:
        fds.append(found[0])
        return MappedSamples(found[0], found[1], y.shape, y.strides)
    y = np.atleast_2d(y)
    try:
        shm = share_audio(y)
        return shm, SharedAudio(shm.name, (y.shape[0], y.shape[1]))
    except OSError:  # a container's small /dev/shm
        pass
    data = np.ascontiguousarray(y, dtype=np.float32)
    fd = new_file(tempfile.gettempdir(), data.nbytes)
    fds.append(fd)
    write_at(fd, data, 0)
    return MappedSamples(fd, 0, data.shape, data.strides)


def _run(
    context: ProcessContext,
    audio: MappedSamples | SharedAudio,
    sr: int,
    fds: list[int],
    wanted: Callable[[], bool],
) -> tuple[str, Any]:
    """Start the process, wait for its one message (or its end), reap it."""
    parent, child = context.Pipe(duplex=False)
    try:
        process = context.Process(
            target=_analyze,
            name="stemdeck-beats",
            daemon=True,
            args=(audio, sr, os.getpid(), child),
        )
        start_child(context, process, WORKER_NICE)
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    try:
        while not parent.poll(POLL_S):
            if not wanted():
                process.kill()
                raise BeatProcessError("the beat analysis was ended: no longer wanted")
        try:
            message: tuple[str, Any] = parent.recv()
        except Exception:  # gone without a message, or one that cannot be rebuilt here
            process.join(REAP_S)
            code = process.exitcode
            raise BeatProcessError(
                f"the beat analysis process ended without an answer (exit code {code})"
            ) from None
        return message
    finally:
        parent.close()
        _reap(process)


def _reap(process: Any) -> None:
    """End ``process`` if it still runs (it ends after its message), and reap it."""
    process.join(REAP_S)
    if process.is_alive():
        process.kill()
        process.join(REAP_S)
    try:
        process.close()  # its sentinel's descriptor
    except ValueError:  # still running: reaped by multiprocessing at the daemon's exit
        pass


def _analyze(audio: MappedSamples | SharedAudio, sr: int, parent: int, conn: Connection) -> None:
    """The analysis process: analyse, answer once, end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    message: tuple[str, object]
    try:
        follow_parent(parent, "stemdeck-beats")  # as its name in ps and top
        from stemdeck.core.beats.analysis import analyze_beats
        from stemdeck.core.separation.blas import keep_one_blas_thread

        keep_one_blas_thread(products=0)  # the analysis's products are few and small
        if isinstance(audio, MappedSamples):
            y = audio.attach()
        else:
            _shm, y = audio.attach()  # mapped until the process ends
        message = ("done", analyze_beats(y, sr))
    except MemoryError:
        message = ("error", MemoryError("not enough memory"))
    except Exception as exc:  # the daemon's thread says it in one line
        message = ("error", exc)
    try:  # rebuilt as it is, or its one line
        pickle.loads(pickle.dumps(message[1]))
    except Exception:
        message = ("error", RuntimeError(str(message[1]) or repr(message[1])))
    conn.send(message)
    conn.close()
