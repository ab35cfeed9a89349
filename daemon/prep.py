"""``stemdeck prep``: separate a whole library ahead of time, in parallel, with Dask.

The client (this process) finds the tracks, decides what is already done,
hands the rest to Dask workers as pure tasks (``core/separation/prep.py``: the
track's bytes and the parameters in, the separation out), and records every
track exactly once: outputs, the report, the progress line. ``docs/prep.md``
explains the design; in short:

- by default a ``LocalCluster`` on 127.0.0.1: N worker processes, one thread
  each, single-threaded BLAS (set before each worker starts); its workers
  decode and hash the tracks, the client only reads them; ``--scheduler``
  uses an existing cluster whose workers have stemdeck installed, and the
  client takes each key first;
- an index in the cache folder (``prep_index.py``) gives the key of a file
  unchanged since it was prepared, so a rerun only stats the files;
- workers that see the client's cache folder write the cache entries there
  (atomic, a key already there is kept); others send the separation back and
  the client stores it; per-track files (wav, flac, stem.mp4) are written by
  the client, atomically;
- a worker that dies mid-task: the scheduler runs the task again elsewhere, and
  the client still records the track once;
- Ctrl-C cancels the tasks and closes the cluster; nothing half-written stays
  under a final name, and a rerun resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from stemdeck.core.audiofile.files import load
from stemdeck.core.audiofile.mp4 import is_mp4_path
from stemdeck.core.audiofile.stemfile import probe, read_tags, stem_track_name
from stemdeck.core.audiofile.stemfile_write import check_encodable
from stemdeck.core.errors import AudioFileError, CacheError, ParameterError, StemdeckError
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.keys import separation_key, settings_digest
from stemdeck.core.separation.prep import TOKEN_PREFIX, TrackResult, decode_bytes, prepare_track
from stemdeck.core.separation.presets import SeparationParams
from stemdeck.core.separation.separate import (
    Separation,
    channel_names,
    load_separation,
    store_separation,
)

from .outputs import ChannelFiles, make_folder, write_separated_stem_file
from .prep_index import FileStamp, TrackIndex, file_stamp

__all__ = ["AUDIO_SUFFIXES", "PrepOptions", "find_tracks", "run_prep"]

log = logging.getLogger("stemdeck")

#: File extensions prep looks for (lower case).
AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".w64", ".caf"}
    | {".opus", ".m4a", ".mp4"}
)
#: Environment of every LocalCluster worker, set before the process starts (BLAS
#: libraries read it once, when loaded): one core per worker, no oversubscription.
SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class PrepOptions:
    paths: list[str]
    params: SeparationParams
    mode: str = "stems"
    fmt: str = "cache"  # cache, wav, flac or stem.mp4
    output: str | None = None
    codec: str = "aac"
    workers: int | None = None
    scheduler: str | None = None
    dashboard: bool = False
    report: str | None = None
    cache_root: str | None = None


@dataclass
class Track:
    index: int
    path: Path
    base: Path | None  # output folder (wav, flac) or file stem path (stem.mp4), no suffix
    duration: float | None  # from the header; None when unknown before decoding
    stamp: FileStamp | None = None  # taken before the file was read, for the index


@dataclass
class Record:
    """One line of the report: what happened to one track."""

    source: str
    hash: str = ""
    duration: float = 0.0
    seconds: float = 0.0
    worker: str = ""
    outcome: str = ""  # separated, cached, up-to-date, stem-file, failed, cancelled
    error: str | None = None
    index: int = -1  # the track's place in the job, for the report's order
    finished: float = 0.0  # seconds from the start of the job to this record

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "hash": self.hash,
            "duration": round(self.duration, 3),
            "seconds": round(self.seconds, 3),
            "worker": self.worker,
            "outcome": self.outcome,
            "finished": round(self.finished, 3),
        }
        if self.error is not None:
            out["error"] = self.error
        return out


# -- finding the tracks ----------------------------------------------------------------
def find_tracks(
    paths: Sequence[str], *, exclude: Sequence[Path] = ()
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Audio files under ``paths``, recursively, in a stable order.

    Returns ``(found, problems)``: ``found`` holds ``(file, relative path)`` pairs
    (relative to the folder given, or the file's own name); ``problems`` one
    line per path or folder that could not be read. Hidden files and folders
    (temporary files of an interrupted write among them) and the folders in
    ``exclude`` (the output and cache folders) are skipped; symbolic links to
    folders are not followed, so a link loop cannot recurse forever.
    """
    skip = {p.resolve() for p in exclude}
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    problems: list[str] = []

    def add(file: Path, rel: Path) -> None:
        try:
            real = file.resolve(strict=True)
        except (OSError, RuntimeError):
            problems.append(f"{str(file)!r}: broken link")
            return
        if real not in seen:
            seen.add(real)
            found.append((file, rel))

    for given in paths:
        root = Path(given).expanduser()
        if root.is_file():
            add(root, Path(root.name))
            continue
        if not root.is_dir():
            problems.append(f"{given!r}: no such file or folder")
            continue

        here_found: list[tuple[Path, Path]] = []

        def walk_error(exc: OSError) -> None:
            problems.append(f"{exc.filename!r}: cannot be listed ({exc.strerror})")

        for folder, dirs, files in os.walk(root, onerror=walk_error):
            here = Path(folder)
            dirs[:] = sorted(
                d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip
            )
            for name in sorted(files):
                if name.startswith(".") or Path(name).suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                here_found.append((here / name, (here / name).relative_to(root)))
        for file, rel in sorted(here_found, key=lambda item: str(item[1])):
            add(file, rel)
    return found, problems


def _header_duration(path: Path) -> float | None:
    if is_mp4_path(path):
        return None
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # libsndfile raises several types; decoding says what is wrong
        return None
    return info.frames / info.samplerate if info.samplerate else None


# -- the task, as Dask runs it ----------------------------------------------------------
def _task(data: bytes, **kwargs: Any) -> tuple[str, TrackResult]:
    """:func:`prepare_track` on a worker, one thread, single-threaded BLAS."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        result = prepare_track(data, nmf_threads=1, **kwargs)
    try:
        from distributed import get_worker

        worker = str(get_worker().address)
    except ValueError:  # not inside a Dask worker (the in-process loop of bench/prep.py)
        worker = f"pid {os.getpid()}"
    return worker, result


def blas_threads() -> list[int]:
    """Threads of each BLAS/OpenMP pool loaded in this process (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    import stemdeck.core.separation.nmf  # noqa: F401  (loads numpy's BLAS)

    return [int(p["num_threads"]) for p in threadpool_info()]


# -- progress ----------------------------------------------------------------------------
class Progress:
    """One line for the whole job: tracks, audio hours, rate, ETA, failures.

    Redrawn in place on a terminal (at most 5 times a second); elsewhere a line
    every 15 s, so a log of a long run shows it moving.
    """

    def __init__(self, total: int, audio_total: float, *, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total = total
        self.audio_total = audio_total
        self.done = 0
        self.failed = 0
        self.audio_done = 0.0
        self.audio_separated = 0.0  # audio that went through a worker: the rate
        self.t0 = time.monotonic()
        self._last = 0.0
        self._width = 0

    def update(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else 15.0):
            return
        self._last = now
        line = self.line(now)
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write(f"\r{line}{' ' * pad}")
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.t0, 1e-9)
        rate = self.done / elapsed * 60.0
        left = self.audio_total - self.audio_done
        speed = self.audio_separated / elapsed  # audio seconds per second
        eta = _minutes(left / speed) if speed > 0 and self.audio_separated > 0 else "--"
        return (
            f"prep {self.done}/{self.total} tracks | "
            f"{self.audio_done / 3600:.2f}/{self.audio_total / 3600:.2f} h audio | "
            f"{rate:.1f} tracks/min | ETA {eta} | {self.failed} failed"
        )

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- the job -----------------------------------------------------------------------------
@dataclass
class PrepSummary:
    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0
    interrupted: bool = False

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.records)

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if r.outcome == "failed"]


class _Job:
    def __init__(self, opts: PrepOptions) -> None:
        self.opts = opts
        if opts.fmt not in ("cache", "wav", "flac", "stem.mp4"):
            raise ParameterError(f"unknown --format {opts.fmt!r}; use cache, wav, flac or stem.mp4")
        if opts.fmt == "stem.mp4" and opts.mode != "stems":
            raise ParameterError(
                "--format stem.mp4 holds the four stems; components mode has no stems "
                "(drop --components, or use --format wav or flac)"
            )
        if opts.fmt != "cache" and not opts.output:
            raise ParameterError(f"--format {opts.fmt} writes files: give -o DIR")
        if opts.workers is not None and opts.scheduler:
            raise ParameterError(
                "--workers starts a local cluster; --scheduler uses yours: not both"
            )
        self.out = Path(opts.output).expanduser() if opts.output else None
        self.cache = SeparationCache(opts.cache_root)
        self.index = TrackIndex(self.cache.root, settings_digest(opts.params, mode=opts.mode))
        # The workers of our LocalCluster run this very code and share the cache
        # folder: they take the key and look it up themselves, so the client does not
        # decode and hash a track too (a tenth of a track's CPU, and the first
        # track's start). Another cluster's workers may not see the folder or run
        # another version: the client takes the key first.
        self.client_hashes = opts.scheduler is not None
        self.names = channel_names(opts.mode, opts.params)
        self.token = uuid.uuid4().hex
        self.summary = PrepSummary()
        self.by_base: dict[Path, Path] = {}
        self.progress: Progress | None = None
        self.t_start = time.monotonic()

    # -- before a track is sent ----------------------------------------------------------
    def outputs(self, track: Track) -> list[Path]:
        assert track.base is not None
        if self.opts.fmt == "stem.mp4":
            return [track.base.with_name(track.base.name + ".stem.mp4")]
        return [track.base / f"{n}.{self.opts.fmt}" for n in self.names]

    def up_to_date(self, track: Track) -> bool:
        try:
            source = track.path.stat().st_mtime
            return all(p.stat().st_mtime >= source for p in self.outputs(track))
        except OSError:
            return False

    def record(self, rec: Record, track: Track) -> None:
        rec.index = track.index
        rec.finished = time.monotonic() - self.t_start
        self.summary.records.append(rec)
        if rec.outcome in ("separated", "cached") and track.stamp is not None and rec.hash:
            self.index.remember(track.stamp, rec.hash, rec.duration)
        if self.progress is not None:
            self.progress.done += 1
            self.progress.failed += rec.outcome == "failed"
            self.progress.audio_done += rec.duration or (track.duration or 0.0)
            if rec.outcome == "failed":
                log.debug("failed: %s: %s", rec.source, rec.error)
            self.progress.update(force=rec.outcome == "failed")

    def fail(self, track: Track, error: str, **kwargs: Any) -> None:
        self.record(Record(str(track.path), outcome="failed", error=error, **kwargs), track)

    def before(self, track: Track) -> tuple[bytes, str | None] | None:
        """What to send for ``track`` (its bytes, and its key when the client takes
        it), or None when it is done here (recorded)."""
        t0 = time.perf_counter()
        src = str(track.path)
        try:
            if is_mp4_path(track.path) and probe(track.path) is not None:
                self.record(Record(src, outcome="stem-file", worker="client"), track)
                return None
        except StemdeckError as exc:
            self.fail(track, str(exc), worker="client")
            return None
        if track.base is not None:
            first = self.by_base.setdefault(track.base, track.path)
            if first != track.path:
                self.fail(track, f"same output as {str(first)!r}; rename one", worker="client")
                return None
            if self.up_to_date(track):
                self.record(Record(src, outcome="up-to-date", worker="client"), track)
                return None
        try:
            # Before the read: a file written meanwhile gets a newer stamp than the
            # key recorded for it, and is hashed again by the next run.
            track.stamp = file_stamp(track.path)
        except (OSError, RuntimeError):  # the read below says what is wrong
            track.stamp = None
        known = self.index.lookup(track.stamp) if track.stamp is not None else None
        if known is not None and self.from_cache(track, *known, t0):
            return None  # the file is as it was when its key was taken: not decoded
        try:
            data = track.path.read_bytes()
        except OSError as exc:
            self.fail(track, f"cannot be read: {exc.strerror or exc}", worker="client")
            return None
        if not self.client_hashes:
            return data, None
        try:
            y, sr = decode_bytes(data, suffix=track.path.suffix, name=track.path.name)
            key = separation_key(y, sr, params=self.opts.params, mode=self.opts.mode)
        except StemdeckError as exc:
            self.fail(track, str(exc), worker="client")
            return None
        if self.from_cache(track, key, y.shape[1] / sr, t0):
            return None
        self._cache_problem()
        return data, key

    def from_cache(self, track: Track, key: str, duration: float, t0: float) -> bool:
        """Record ``track`` as cached (writing its files) if ``key`` is in the cache."""
        if track.duration is None and self.progress is not None:
            self.progress.audio_total += duration
        track.duration = duration
        rec = Record(str(track.path), key, duration, worker="client", outcome="cached")
        if self.opts.fmt == "cache":
            # Sizes and format only: ``serve`` checks every block before playing.
            if self.cache.load(key, verify=False) is not None:
                self.record(rec, track)
                return True
        else:
            sep = load_separation(self.cache, key, mode=self.opts.mode, params=self.opts.params)
            if sep is not None:
                self.finish(track, rec, sep, t0)
                return True
        return False

    # -- after ---------------------------------------------------------------------------
    def finish(self, track: Track, rec: Record, sep: Separation, t0: float) -> None:
        """Write the track's files (if any) from its separation, then record it."""
        if self.opts.fmt != "cache":
            try:
                self.write_files(track, sep)
            except StemdeckError as exc:
                rec.outcome, rec.error = "failed", str(exc)
        rec.seconds += time.perf_counter() - t0
        self.record(rec, track)

    def write_files(self, track: Track, sep: Separation) -> None:
        assert track.base is not None
        if self.opts.fmt == "stem.mp4":
            check_encodable(sep.sr, codec=self.opts.codec)
            y, _ = load(track.path)  # the master track of the stem file
            make_folder(track.base.parent)
            write_separated_stem_file(
                self.outputs(track)[0],
                y,
                list(sep.names),
                sep.channels,
                sep.sr,
                codec=self.opts.codec,
                tags=read_tags(track.path),
                show_progress=False,
            )
            return
        with ChannelFiles(track.base, sep.sr, self.opts.fmt) as files:
            for i, name in enumerate(sep.names):
                files(i, name, np.asarray(sep.channels[i]))

    def _cache_problem(self) -> None:
        if self.cache.last_problem:
            log.warning(self.cache.last_problem)
            self.cache.last_problem = None

    def after(self, track: Track, key: str | None, worker: str, result: TrackResult) -> None:
        t0 = time.perf_counter()
        rec = Record(
            str(track.path),
            result.key,
            result.duration,
            result.seconds,
            worker,
            "cached" if result.cached else "separated",
        )
        if track.duration is None and self.progress is not None:
            self.progress.audio_total += result.duration
        if result.error is not None:
            rec.outcome, rec.error = "failed", result.error
            self.record(rec, track)
            return
        if key is None:
            key = result.key
        elif result.key != key:
            rec.outcome = "failed"
            rec.error = (
                f"worker {worker} computed key {result.key[:12]}, this client {key[:12]}: "
                "the workers need the same stemdeck version"
            )
            self.record(rec, track)
            return
        if self.progress is not None and not result.cached:
            self.progress.audio_separated += result.duration
        sep: Separation | None
        if result.separation is not None:
            try:
                sep = store_separation(self.cache, key, result.separation)
            except CacheError as exc:
                log.warning("%s (writing %s without the cache)", exc, track.path.name)
                sep = result.separation
        elif self.opts.fmt == "cache":
            # The worker wrote the entry and nothing else is to be written: its
            # format and sizes are checked here, every block by serve before it plays.
            if self.cache.load(key, verify=False) is None:
                self._entry_unusable(rec, track)
                return
            rec.seconds += time.perf_counter() - t0
            self.record(rec, track)
            return
        else:
            sep = load_separation(self.cache, key, mode=self.opts.mode, params=self.opts.params)
            if sep is None:
                self._entry_unusable(rec, track)
                return
        self.finish(track, rec, sep, t0)

    def _entry_unusable(self, rec: Record, track: Track) -> None:
        rec.outcome = "failed"
        rec.error = f"the cache entry the worker wrote is unusable: {self.cache.last_problem}"
        self.cache.last_problem = None
        self.record(rec, track)


def _connect(opts: PrepOptions) -> tuple[Any, Any]:
    """A Dask client, and the LocalCluster it owns (None with ``--scheduler``)."""
    import dask
    from distributed import Client, LocalCluster

    from .prep_worker import WorkerSetup

    if opts.scheduler:
        try:
            return Client(opts.scheduler, timeout="20s", set_as_default=False), None
        except (OSError, TimeoutError) as exc:
            raise ParameterError(f"cannot reach the scheduler {opts.scheduler!r}: {exc}") from None
    if opts.dashboard:
        import importlib.util

        if importlib.util.find_spec("bokeh") is None:
            raise ParameterError("--dashboard needs bokeh: pip install 'bokeh>=3.1'")
    n = opts.workers or os.cpu_count() or 1
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    # Dask's default MALLOC_TRIM_THRESHOLD_ makes glibc hand memory back at once, so
    # every large numpy temporary is a fresh mmap paid in page faults: a track took
    # 10-20 % longer (bench/prep.py). A worker holds one track at a time; keep glibc's
    # own threshold.
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    environ.update(SINGLE_THREAD_ENV)
    cluster = None
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), _no_ctrl_c():
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                # Without --dashboard the scheduler's HTTP server (health checks only)
                # still listens: on loopback, on a free port.
                dashboard_address="127.0.0.1:8787" if opts.dashboard else "127.0.0.1:0",
                scheduler_kwargs={"dashboard": opts.dashboard},
                silence_logs=logging.ERROR,
                plugins=(WorkerSetup(),),
            )
        client = Client(cluster, set_as_default=False)
    except BaseException as exc:  # a Ctrl-C held back while the cluster started, too
        if cluster is not None:
            cluster.close()
        if isinstance(exc, (OSError, RuntimeError)):  # no free port, a worker that cannot start
            raise StemdeckError(f"cannot start the local Dask cluster: {exc}") from None
        raise
    if opts.dashboard:
        log.info("dashboard: %s", client.dashboard_link)
    return client, cluster


@contextmanager
def _no_ctrl_c() -> Iterator[None]:
    """Hold SIGINT back in this thread while the LocalCluster starts.

    A terminal's Ctrl-C goes to the whole process group: this process and every
    worker. A worker that takes it raises KeyboardInterrupt wherever it is (in its
    imports, starting, closing) and prints a traceback; Ctrl-C is this process's
    to handle, and it closes the cluster. The threads started here (Dask's event
    loop, from which the nannies start their workers, now and when one dies) and
    the worker processes inherit the blocked SIGINT, which fork and exec keep, so
    they never take it. A Ctrl-C while the cluster starts is raised here once it is
    up.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    from multiprocessing import resource_tracker

    # multiprocessing starts its resource tracker with SIGINT blocked, then unblocks
    # SIGINT in the thread that started it: let that be this one, now, not Dask's
    # event loop as its first nanny starts (its workers would take Ctrl-C again).
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _window(client: Any) -> int:
    """Tracks in flight: enough to keep every worker busy, few enough that the
    client holds only a handful of files' bytes."""
    try:
        workers = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
    except (KeyError, TypeError):
        workers = 1
    return max(2, 2 * workers)


def run_prep(opts: PrepOptions, *, on_client: Callable[[Any], None] | None = None) -> PrepSummary:
    """Prepare every track under ``opts.paths``; see the module docstring.

    ``on_client(client)`` is called once the cluster is up (tests check its
    addresses). KeyboardInterrupt cancels what is running, closes the cluster,
    writes the report of what was done, and propagates.
    """
    job = _Job(opts)
    t_start = job.t_start
    exclude = [job.cache.root] + ([job.out] if job.out is not None else [])
    found, problems = find_tracks(opts.paths, exclude=exclude)
    job.summary.problems = problems
    for p in problems:
        log.warning("%s", p)
    tracks = []
    for i, (path, rel) in enumerate(found):
        base = None
        if job.out is not None:
            base = job.out / rel.parent / stem_track_name(path)
        tracks.append(Track(i, path, base, _header_duration(path)))
    audio_total = sum(t.duration or 0.0 for t in tracks)
    _check_cache_room(job, audio_total)
    job.progress = Progress(len(tracks), audio_total)
    if not tracks:
        job.progress = None
        job.summary.seconds = time.monotonic() - t_start
        _write_report(opts.report, job.summary)
        return job.summary
    token_file = job.cache.root / f"{TOKEN_PREFIX}{job.token}"
    try:
        job.cache.root.mkdir(parents=True, exist_ok=True)
        job.cache.clean_stale()
        token_file.write_text(job.token, encoding="utf-8")
    except OSError as exc:
        raise CacheError(f"cannot write the cache in {str(job.cache.root)!r}: {exc}") from None
    dask = _Dask(opts, on_client)
    futures: dict[Any, tuple[Track, str | None]] = {}
    try:
        job.progress.update(force=True)
        import dask as dask_config
        import distributed  # noqa: F401  (its defaults first: config.set would hide them)

        # Each task carries its track's bytes (tens of MB for a long wav), on
        # purpose: the scheduler keeps them, so it can run the task again when a
        # worker dies. Dask's warning about large graphs is not for this case.
        with dask_config.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
            _run(job, dask, iter(tracks), futures)
    except KeyboardInterrupt:
        job.summary.interrupted = True
        for track, _ in futures.values():
            job.summary.records.append(
                Record(str(track.path), outcome="cancelled", index=track.index)
            )
        if dask.client is not None and futures:
            try:
                dask.client.cancel(list(futures), force=True)
            except Exception:  # the cluster may already be going down with us
                pass
        raise
    finally:
        job.progress.close()
        job.summary.workers = dask.workers
        dask.close()
        token_file.unlink(missing_ok=True)
        job.index.save()
        job.summary.seconds = time.monotonic() - t_start
        _write_report(opts.report, job.summary)
    return job.summary


class _Dask:
    """The client and its cluster, started when the first track needs a worker:
    a rerun with nothing left to do starts nothing."""

    def __init__(self, opts: PrepOptions, on_client: Callable[[Any], None] | None) -> None:
        self.opts = opts
        self.on_client = on_client
        self.client: Any = None
        self.cluster: Any = None
        self.workers = 0

    def connect(self) -> Any:
        if self.client is None:
            self.client, self.cluster = _connect(self.opts)
            self.workers = len(self.client.scheduler_info()["workers"])
            if self.on_client is not None:
                self.on_client(self.client)
        return self.client

    def close(self) -> None:
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _run(
    job: _Job,
    dask: _Dask,
    pending: Iterator[Track],
    futures: dict[Any, tuple[Track, str | None]],
) -> None:
    from distributed import as_completed

    opts = job.opts
    window = 0
    waiting: dict[str, list[Track]] = {}  # same audio as a track in flight
    in_flight: dict[str, Any] = {}
    done: Any = None

    def fill() -> None:
        nonlocal window, done
        while done is None or len(futures) < window:
            track = next(pending, None)
            if track is None:
                return
            sent = job.before(track)
            if sent is None:
                continue
            data, key = sent
            if key is not None and key in in_flight:
                waiting.setdefault(key, []).append(track)
                continue
            client = dask.connect()
            if done is None:
                window = _window(client)
                done = as_completed(loop=client.loop)
            future = client.submit(
                _task,
                data,
                suffix=track.path.suffix,
                name=track.path.name,
                params=opts.params,
                mode=opts.mode,
                cache_root=str(job.cache.root),
                cache_token=job.token,
                cache_max_bytes=job.cache.max_bytes,
                key=f"prep-{track.index}-{job.token[:8]}",
                pure=False,
            )
            futures[future] = (track, key)
            if key is not None:
                in_flight[key] = future
            done.add(future)

    fill()
    if done is None:
        return
    for future in done:
        track, key = futures.pop(future)
        if key is not None:
            in_flight.pop(key, None)
        try:
            worker, result = future.result()
        except Exception as exc:  # a bug in the task, or a track that kept killing workers
            job.fail(track, f"{type(exc).__name__}: {exc}", hash=key or "")
        else:
            job.after(track, key, worker, result)
        future.release()
        for again in waiting.pop(key, []) if key is not None else []:
            if job.before(again) is not None:  # not in the cache after all: it failed
                job.fail(again, f"same audio as {str(track.path)!r}, which failed", hash=key)
        fill()


def _check_cache_room(job: _Job, audio_seconds: float) -> None:
    """Warn when the job alone would overflow the cache, whose oldest entries would go."""
    # Float32 stereo at 44.1 kHz per channel of the separation, the usual case.
    need = audio_seconds * 44100 * 2 * 4 * len(job.names)
    if need > job.cache.max_bytes:
        log.warning(
            "these tracks need about %.0f GiB of cache, more than its limit of %.0f GiB: the "
            "oldest entries would be evicted; raise STEMDECK_CACHE_MAX_GB",
            need / 2**30,
            job.cache.max_bytes / 2**30,
        )


def _write_report(path: str | None, summary: PrepSummary) -> None:
    if not path:
        return
    target = Path(path).expanduser()
    doc = {
        "tracks": [r.as_dict() for r in sorted(summary.records, key=lambda r: r.index)],
        "problems": summary.problems,
        "seconds": round(summary.seconds, 3),
        "workers": summary.workers,
        "interrupted": summary.interrupted,
    }
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AudioFileError(
            f"cannot write the report {str(target)!r}: {exc.strerror or exc}"
        ) from None


def summary_lines(summary: PrepSummary) -> list[str]:
    """The closing lines: counts, then one line per failure (a track, or a path that
    could not be searched)."""
    n = len(summary.records)
    audio = sum(r.duration for r in summary.records)
    rate = n / summary.seconds * 60 if summary.seconds > 0 else math.nan
    lines = [
        f"prep: {n} tracks in {summary.seconds:.1f} s ({rate:.1f} tracks/min, "
        f"{audio / 3600:.2f} h audio): {summary.count('separated')} separated, "
        f"{summary.count('cached')} cached, {summary.count('up-to-date')} up to date, "
        f"{summary.count('stem-file')} stem files, {len(summary.failed)} failed"
    ]
    lines += [f"failed: {r.source}: {r.error}" for r in summary.failed]
    lines += [f"failed: {problem}" for problem in summary.problems]
    return lines
