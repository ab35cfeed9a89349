"""One ``stemdeck prep`` run: what is done already, what goes to a worker, and every
track recorded once.

:func:`run_prep` finds the tracks (``discover.py``), skips what is done (the
cache, the index ``index.py``, output files newer than the track), hands the
rest to the cluster (``cluster.py``) a few at a time, and records each track
exactly once as its task completes: its files written, the index, the progress
line, the report (``report.py``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemdeck.core.audiofile.files import load
from stemdeck.core.audiofile.mp4 import is_mp4_path
from stemdeck.core.audiofile.stemfile import probe, stem_track_name
from stemdeck.core.audiofile.stemfile_write import check_encodable
from stemdeck.core.audiofile.tags import read_tags
from stemdeck.core.beats.store import BeatStore
from stemdeck.core.errors import CacheError, ParameterError, StemdeckError
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.checks import CacheLookup
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.prep import TOKEN_PREFIX, TrackResult, decode_bytes
from stemdeck.core.separation.separate import Separation, store_separation

from ..outputs import (
    ChannelFiles,
    check_format,
    make_folder,
    output_names,
    output_path,
    write_separated_stem_file,
)
from ..progress import ProgressLine
from .cluster import PrepCluster, prep_task
from .discover import find_tracks, header_duration
from .index import FileStamp, TrackIndex, file_stamp
from .report import PrepSummary, Record, Tally, write_report

__all__ = ["PrepOptions", "run_prep"]

log = logging.getLogger(__name__)


@dataclass
class PrepOptions:
    """What ``stemdeck prep`` was asked (its flags), and the cache folder (tests)."""

    paths: list[str]
    spec: SeparationSpec
    fmt: str = "cache"  # cache, wav, flac or stem.mp4
    output: str | None = None
    codec: str = "aac"
    workers: int | None = None
    scheduler: str | None = None
    dashboard: bool = False
    report: str | None = None
    cache_root: str | None = None


@dataclass
class PrepTrack:
    """One track of the job, from the moment it is found."""

    index: int
    path: Path
    base: Path | None  # output folder (wav, flac) or stem file (stem.mp4)
    duration: float | None  # from the header; None when unknown before decoding
    stamp: FileStamp | None = None  # taken before the file was read, for the index


class _Job:
    """The run's bookkeeping: what each track needs before it is sent (:meth:`before`)
    and after its task completes (:meth:`after`), recorded once (:meth:`record`)."""

    def __init__(self, opts: PrepOptions) -> None:
        self.opts = opts
        if opts.fmt not in ("cache", "wav", "flac", "stem.mp4"):
            raise ParameterError(f"unknown --format {opts.fmt!r}; use cache, wav, flac or stem.mp4")
        check_format(opts.fmt, mode=opts.spec.mode)
        if opts.fmt != "cache" and not opts.output:
            raise ParameterError(f"--format {opts.fmt} writes files: give -o DIR")
        if opts.workers is not None and opts.scheduler:
            raise ParameterError(
                "--workers starts a local cluster; --scheduler uses yours: not both"
            )
        self.out = Path(opts.output).expanduser() if opts.output else None
        self.cache = SeparationCache(opts.cache_root)
        self.index = TrackIndex(self.cache.root, opts.spec.digest)
        # The workers of our LocalCluster run this very code and share the cache
        # folder: they take the key and look it up themselves, so the client does not
        # decode and hash a track too (a tenth of a track's CPU, and the first
        # track's start). Another cluster's workers may not see the folder or run
        # another version: the client takes the key first.
        self.client_hashes = opts.scheduler is not None
        self.names = opts.spec.channel_names()
        self.token = uuid.uuid4().hex
        self.summary = PrepSummary()
        self.by_base: dict[Path, Path] = {}
        self.tally: Tally | None = None  # with the progress line, once the tracks are found
        self.progress = ProgressLine(interval=0.2, log_interval=15.0)
        self.t_start = time.monotonic()

    # -- before a track is sent ----------------------------------------------------------
    def outputs(self, track: PrepTrack) -> list[Path]:
        assert track.base is not None
        if self.opts.fmt == "stem.mp4":
            return [track.base]
        return [track.base / n for n in output_names(self.names, suffix=f".{self.opts.fmt}")]

    def up_to_date(self, track: PrepTrack) -> bool:
        try:
            source = track.path.stat().st_mtime
            return all(p.stat().st_mtime >= source for p in self.outputs(track))
        except OSError:
            return False

    def record(self, rec: Record, track: PrepTrack) -> None:
        rec.index = track.index
        rec.finished = time.monotonic() - self.t_start
        self.summary.records.append(rec)
        if rec.outcome in ("separated", "cached") and track.stamp is not None and rec.hash:
            self.index.remember(track.stamp, rec.hash, rec.duration)
        if self.tally is not None:
            self.tally.done += 1
            self.tally.failed += rec.outcome == "failed"
            self.tally.audio_done += rec.duration or (track.duration or 0.0)
            if rec.outcome == "failed":
                log.debug("failed: %s: %s", rec.source, rec.error)
            self.progress.show(self.tally.line(), force=rec.outcome == "failed")

    def fail(self, track: PrepTrack, error: str, **kwargs: Any) -> None:
        self.record(Record(str(track.path), outcome="failed", error=error, **kwargs), track)

    def before(self, track: PrepTrack) -> tuple[bytes, str | None] | None:
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
            # Without regard to case: on a case-insensitive disk (a USB stick, macOS)
            # Song and SONG are one folder, and the second set would replace the first.
            first = self.by_base.setdefault(Path(str(track.base).casefold()), track.path)
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
            key = self.opts.spec.key(y, sr)
        except StemdeckError as exc:
            self.fail(track, str(exc), worker="client")
            return None
        if self.from_cache(track, key, y.shape[1] / sr, t0):
            return None
        return data, key

    def from_cache(self, track: PrepTrack, key: str, duration: float, t0: float) -> bool:
        """Record ``track`` as cached (writing its files) if ``key`` is in the cache."""
        if track.duration is None and self.tally is not None:
            self.tally.audio_total += duration
        track.duration = duration
        rec = Record(str(track.path), key, duration, worker="client", outcome="cached")
        # With --format cache, sizes and format only: ``serve`` checks every block
        # before playing. Files are written from verified entries only.
        found = self.cache.load(key, verify=self.opts.fmt != "cache")
        if found.entry is None:
            if found.problem:
                log.warning(found.problem)
            return False
        if self.opts.fmt == "cache":
            self.record(rec, track)
        else:
            self.finish(track, rec, Separation.from_entry(found.entry, self.opts.spec), t0)
        return True

    # -- after ---------------------------------------------------------------------------
    def finish(self, track: PrepTrack, rec: Record, sep: Separation, t0: float) -> None:
        """Write the track's files (if any) from its separation, then record it."""
        if self.opts.fmt != "cache":
            try:
                self.write_files(track, sep)
            except StemdeckError as exc:
                rec.outcome, rec.error = "failed", str(exc)
        rec.seconds += time.perf_counter() - t0
        self.record(rec, track)

    def write_files(self, track: PrepTrack, sep: Separation) -> None:
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

    def after(self, track: PrepTrack, key: str | None, worker: str, result: TrackResult) -> None:
        t0 = time.perf_counter()
        rec = Record(
            str(track.path),
            result.key,
            result.duration,
            result.seconds,
            worker,
            "cached" if result.cached else "separated",
        )
        if track.duration is None and self.tally is not None:
            self.tally.audio_total += result.duration
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
        if self.tally is not None and not result.cached:
            self.tally.audio_separated += result.duration
        rec.beats = self.keep_beats(track, result)
        sep: Separation | None
        if result.separation is not None:
            try:
                sep = store_separation(self.cache, key, result.separation)
            except CacheError as exc:
                log.warning("%s (writing %s without the cache)", exc, track.path.name)
                sep = result.separation
        else:
            # The worker wrote the entry. With nothing else to write, its format and
            # sizes are checked here, every block by serve before it plays.
            found = self.cache.load(key, verify=self.opts.fmt != "cache")
            if found.entry is None:
                self._entry_unusable(rec, track, found)
                return
            if self.opts.fmt == "cache":
                rec.seconds += time.perf_counter() - t0
                self.record(rec, track)
                return
            sep = Separation.from_entry(found.entry, self.opts.spec)
        self.finish(track, rec, sep, t0)

    def keep_beats(self, track: PrepTrack, result: TrackResult) -> dict[str, Any] | None:
        """Keep the worker's beat analysis in this cache's beat store (unless one is
        stored: it and the user's edit stay); the report's form of the grid in force."""
        analysis = result.beats.analysis if result.beats is not None else None
        if analysis is None or not result.beat_key:
            if result.beats_error:
                log.warning("%s: no beat grid: %s", track.path.name, result.beats_error)
            return None
        record, _ = BeatStore(self.cache.root).load_or_analyze(result.beat_key, lambda: analysis)
        grid = record.grid
        assert grid is not None  # load_or_analyze gives an analysis
        return {
            "bpm": round(grid.bpm, 4),
            "downbeat": round(grid.normalized().downbeat, 4),
            "beats_per_bar": grid.beats_per_bar,
            "key": record.analysis.key if record.analysis is not None else None,
        }

    def _entry_unusable(self, rec: Record, track: PrepTrack, found: CacheLookup) -> None:
        if found.problem:
            log.warning(found.problem)
        why = found.problem or f"cache entry {rec.hash[:12]} is not there"
        rec.outcome = "failed"
        rec.error = f"the cache entry the worker wrote is unusable: {why}"
        self.record(rec, track)


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
            suffix = ".stem.mp4" if opts.fmt == "stem.mp4" else ""
            base = output_path(job.out, [*rel.parent.parts, stem_track_name(path)], suffix=suffix)
        tracks.append(PrepTrack(i, path, base, header_duration(path)))
    audio_total = sum(t.duration or 0.0 for t in tracks)
    _check_cache_room(job, audio_total)
    if not tracks:
        job.summary.seconds = time.monotonic() - t_start
        write_report(opts.report, job.summary)
        return job.summary
    job.tally = Tally(len(tracks), audio_total)
    token_file = job.cache.root / f"{TOKEN_PREFIX}{job.token}"
    try:
        job.cache.root.mkdir(parents=True, exist_ok=True)
        job.cache.clean_stale()
        token_file.write_text(job.token, encoding="utf-8")
    except OSError as exc:
        raise CacheError(f"cannot write the cache in {str(job.cache.root)!r}: {exc}") from None
    cluster = PrepCluster(
        scheduler=opts.scheduler,
        workers=opts.workers,
        dashboard=opts.dashboard,
        on_client=on_client,
    )
    futures: dict[Any, tuple[PrepTrack, str | None]] = {}
    try:
        job.progress.show(job.tally.line(), force=True)
        # Imported here, once the progress line is up: distributed takes about a second.
        import dask
        import distributed  # noqa: F401  (its defaults first: config.set would hide them)

        # Each task carries its track's bytes (tens of MB for a long wav), on
        # purpose: the scheduler keeps them, so it can run the task again when a
        # worker dies. Dask's warning about large graphs is not for this case.
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
            _submit_all(job, cluster, iter(tracks), futures)
    except KeyboardInterrupt:
        job.summary.interrupted = True
        for track, _ in futures.values():
            job.summary.records.append(
                Record(str(track.path), outcome="cancelled", index=track.index)
            )
        if cluster.client is not None and futures:
            try:
                cluster.client.cancel(list(futures), force=True)
            except Exception:  # the cluster may already be going down with us
                pass
        raise
    finally:
        job.progress.close()
        job.summary.workers = cluster.workers
        cluster.close()
        token_file.unlink(missing_ok=True)
        job.index.save()
        job.summary.seconds = time.monotonic() - t_start
        write_report(opts.report, job.summary)
    return job.summary


def _submit_all(
    job: _Job,
    cluster: PrepCluster,
    pending: Iterator[PrepTrack],
    futures: dict[Any, tuple[PrepTrack, str | None]],
) -> None:
    """Keep ``cluster.window()`` tracks in flight, and record each as it completes.

    A track whose key (known when the client hashes) is that of a track in flight
    waits for it, and is then found in the cache.
    """
    from distributed import as_completed  # imported by run_prep already

    opts = job.opts
    window = 0
    waiting: dict[str, list[PrepTrack]] = {}  # same audio as a track in flight
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
            client = cluster.connect()
            if done is None:
                window = cluster.window()
                done = as_completed(loop=client.loop)
            future = client.submit(
                prep_task,
                data,
                suffix=track.path.suffix,
                name=track.path.name,
                spec=opts.spec,
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
