"""Track loading: the original at once, separated channels when they are ready.

One :class:`TrackLoader` owns a track change: reading the file, the separation
worker and its pipe, the cache and its background verification, publishing to
the engine. It keeps apart the **requested** track (the last ``/track/load``,
being read) and the **playing** one (its original or channels, its separation).

A load is a transaction: the requested track replaces the playing one only once
it has been read, decoded and checked and the engine took it; until then the
playing track plays and separates on (its worker is not ended, its generation,
:attr:`TrackLoader.generation`, not bumped). One lock guards the request, the
generation and the worker; nothing of an older generation is posted once a newer
one plays. Each request is answered once through the ``done`` callback the
OSC/web layer hands over: ``done(None)`` once it plays; ``done(reason)`` when it
fails (logged once, the status line's problem, ``/track/progress`` says ``load
failed``; the old track plays on); ``done("superseded by NAME")`` when a newer
request comes first: the last request wins.

One load (a background thread per request)::

    request(path)          check (track_source.py): library, regular file, audio
                           header, length and memory -> refused now, or requested
      identity             the file's size, mtime and 16 pieces (file_identity)
      read + decode        once, at the source's rate, block by block into a memory
                           map, until its first FIRST_PIECE_S; a failure (damaged
                           audio, NaN, a file replaced, MemoryError) -> done(reason)
      post SetTrack(mix)   the original at its own rate plays from its start (the
                           mixer's read head converts it to the device's as it
                           reads; old track fades out, its worker ends) -> done(None);
                           the rest decodes meanwhile (a damaged block later: the
                           decoded part plays on, said once, nothing separated)
      indexed entry?       the key the identity indexes in the cache: that entry
                           plays as it is verified (as a cache hit below) while the
                           file decodes, then is confirmed by the key; another key
                           (a file rewritten with its size and mtime kept): its
                           stems go, the original plays, and on as below
      beat grid            once decoded whole, found or analysed in a thread of its
                           own (track_beats.py; a stem file's: of its mix)
      key                  one hash of the decoded audio (SeparationSpec.key), filed
                           under the file's identity (index_source); when
                           no entry in the cache has the track's shape and rate
                           (SeparationCache.may_hold) the worker starts first, on
                           the chunk under the play head, and gets the key after
      cache hit?           verify the blocks of the 15 s under the play head and
                           post the entry as it is verified (Progressive: one
                           ready flag per 15 s, set once its blocks are checked),
                           then the rest in play order; once every block is
                           checked, SetTrack(channels, same_audio=True): the
                           memory map itself, at the source's rate (no resampled
                           copy). A damaged block: the entry is removed, that
                           span plays the original, and a worker separates again
      else                 the decoded audio goes to a worker in shared memory
                           (separation_worker.py) with the key; it separates into
                           the cache under that key and reports ("done", key); the
                           entry is verified and published the same way

The file is never read again once decoded (its identity is read before): a file
rewritten meanwhile changes neither what plays nor what is separated. A track
separated by ``stemdeck separate`` or ``prep`` at 44.1 kHz is a cache hit on a
48 kHz device too.

Every ``SetTrack`` goes to the engine in one command with the registry's whole
state (a :class:`~stemdeck.core.control.registry.Transaction` with the ``SetTrack``
as its extra command): a track never plays with stale strip targets, and the
registry takes its channel names only if the engine took it. A full queue is
retried for :data:`POST_RETRY_S`, then the load fails and says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemdeck.core.audiofile.decode import StemFile
from stemdeck.core.audiofile.files import MappedDecode
from stemdeck.core.audiofile.samples import resample, resample_channels
from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import ParameterError, StemdeckError
from stemdeck.core.mixer.commands import SetTrack, Track
from stemdeck.core.mixer.params import plays_at
from stemdeck.core.separation.cache import SeparationCache, file_identity
from stemdeck.core.separation.checks import CacheLookup
from stemdeck.core.separation.keys import SeparationSpec

from .separation_worker import ProcessContext, SeparationWorker, worker_context
from .track_beats import TrackBeats
from .track_limits import TrackLimits
from .track_source import (
    DEMO,
    LoadDone,
    LoadRequest,
    check_path,
    check_start,
    decode_source,
    read_stem_source,
    source_name,
)

__all__ = ["LOAD_FAILED", "STEMS_STAGE", "Progressive", "TrackLoader"]

log = logging.getLogger(__name__)

# A track refused by a full engine queue is posted again for this long: the audio
# thread empties the queue every block, so only a stalled stream outlasts it.
POST_RETRY_S = 1.0
POST_RETRY_INTERVAL_S = 0.01
#: The stage ``/track/progress`` shows while the last request's failure stands.
LOAD_FAILED = "load failed"
#: The stage ``/track/progress`` shows while the stems play as their chunks come in;
#: its fraction is the share of chunks ready.
STEMS_STAGE = "stems"
#: How often the play head is handed to the separation worker, in seconds.
HEAD_POLL_S = 0.1
#: A cached entry's blocks are verified this many seconds of audio at a time (as
#: long as the worker's chunks), each span's stems playing once it is checked: the
#: one under the play head costs the same whatever the track's length.
VERIFY_CHUNK_S = 15.0
#: The original plays once this many seconds of it are decoded (and checked), the
#: rest decoding meanwhile; a shorter track once decoded whole.
FIRST_PIECE_S = 30.0


def _play_order(first: int, chunks: int) -> list[int]:
    """Chunks in play order from chunk ``first``: it, those after it, then those
    before it, nearest first (as the separation worker's)."""
    first = min(max(0, first), chunks - 1)
    return [*range(first, chunks), *range(first - 1, -1, -1)]


class Progressive:
    """A track's cache entry played as it fills: its channels (a read-only memory
    map of the partial entry), its original, and one ready flag per chunk.

    The flags are written by the loader's watcher thread once a chunk's samples are
    in the entry (the worker wrote them before it reported the chunk), and read by
    the audio thread: one byte each, no lock.
    """

    def __init__(self, channels: np.ndarray, mix: np.ndarray, chunks: int, size: int) -> None:
        self.channels = channels
        self.mix = mix
        self.size = size
        self.ready = np.zeros(chunks, np.uint8)
        self.posted = False  # the engine took it

    def track(self, sr: int, names: Sequence[str]) -> Track:
        return Track(
            self.channels, sr, tuple(names), mix=self.mix, ready=self.ready, chunk=self.size
        )

    def land(self, start: int, stop: int) -> None:
        """Samples ``[start, stop)`` are in: their chunk is ready."""
        self.ready[min(start // self.size, len(self.ready) - 1)] = 1

    @property
    def fraction(self) -> float:
        """The share of chunks ready."""
        return float(np.count_nonzero(self.ready)) / len(self.ready)


@dataclass(eq=False)
class _Load:
    """One track's way to its channels once its original plays: the decode still
    under way, the file's identity, and what is known so far."""

    decode: MappedDecode
    identity: str | None
    gen: int
    name: str
    whole: np.ndarray | None = None  # the source decoded whole
    key: str | None = None  # its audio's cache key, once taken
    indexed: str | None = None  # the key its file's identity indexed
    published: bool = False  # the indexed entry's stems play, not yet confirmed
    confirmed: bool = False  # the indexed key is its audio's
    failed: bool = False  # the decode failed after the original started


class TrackLoader:
    """Loads tracks into an engine: the original at once, then its channels.

    Parameters
    ----------
    engine : the mixer (``sr``, ``max_channels``, ``post``, ``position`` and
        ``frame_rate`` are used)
    registry : Registry
        Its whole state is posted with each ``SetTrack``, in one command, so the
        channels start at the current levels.
    names : sequence of str
        Channel names a separation gives (the engine has exactly this many strips).
    spec : SeparationSpec
        The separation.
    cache : SeparationCache or None
        Opened with ``verify_on_load=False``: the loader verifies every block
        in the background while the original plays.
    library : list of Path
        Folders ``/track/load`` may read from.
    mp_context : multiprocessing context, optional
        How the separation worker is started (default: forked from a fork server
        that imported the separation once, :func:`~.separation_worker.worker_context`;
        a test forks).
    limits : TrackLimits, optional
        The longest track and the memory check (default: :class:`TrackLimits`
        for ``spec``'s mode, chunked with a cache).
    beats : TrackBeats, optional
        Told of every track that starts playing, to find or compute its beat grid.
    """

    def __init__(
        self,
        engine: Any,
        registry: Registry,
        names: Sequence[str],
        *,
        spec: SeparationSpec,
        cache: SeparationCache | None,
        library: Sequence[Path],
        mp_context: ProcessContext | None = None,
        limits: TrackLimits | None = None,
        beats: TrackBeats | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.names = tuple(names)
        self.spec = spec
        self.cache = cache
        self.library = list(library)
        self.mp_context: ProcessContext = mp_context or worker_context()
        self.limits = limits or TrackLimits(mode=spec.mode, chunked=cache is not None)
        self.beats = beats
        self.generation = 0  # of the playing track
        self.track_name = ""  # the playing track
        self.progress: tuple[str, float] | None = None  # the playing track's separation
        self.problem: str | None = None  # the last failure, for the status line
        self.load_failed = False  # the last request failed (until the next one)
        self.separated = False  # the playing track's channels play (not its original)
        self.colours: list[str] = []  # #RRGGBB per channel, when the track names them
        self.labels: list[str] = []  # display name per channel, when the track names them
        self._lock = threading.Lock()
        self._request: LoadRequest | None = None  # the requested track, being read
        self._worker: SeparationWorker | None = None
        self._closed = False

    @property
    def requested(self) -> str | None:
        """The name of the track being read for the last request, if any."""
        request = self._request
        return request.name if request is not None else None

    def track_info(self) -> tuple[str, str, float]:
        """The playing track's name and where its separation is (``/track/progress``):
        ``load failed 0`` while the last request's failure stands."""
        progress = self.progress
        if self.load_failed:
            return self.track_name, LOAD_FAILED, 0.0
        if progress is None:
            return self.track_name, "ready" if self.separated else "original only", 1.0
        return self.track_name, progress[0], float(progress[1])

    # -- requests ---------------------------------------------------------------------
    def check(self, path: str) -> str:
        """The resolved path of a ``/track/load`` request, or ParameterError saying why
        not (:func:`~stemdeck.daemon.track_source.check_path`, within :attr:`limits`)."""
        return check_path(path, self.library, self.limits, self.engine.sr, len(self.names))

    def request(self, path: str, done: LoadDone | None = None) -> None:
        """Check ``path`` (:meth:`check`, raises now), then load it in the background;
        ``done`` is told once how it ended."""
        self.start(self.check(path), done)

    def start(self, source: str, done: LoadDone | None = None) -> None:
        """Load ``source`` (a checked path or :data:`DEMO`) in the background; a request
        still being read is superseded (its ``done`` says so)."""
        request = LoadRequest(source, done)
        with self._lock:
            old, self._request = self._request, request
            self.load_failed = False
        if old is not None:
            self._answer(old, f"superseded by {request.name}")
        threading.Thread(
            target=self._load, args=(request,), name="stemdeck-load", daemon=True
        ).start()

    def open(self, source: str) -> None:
        """Start-up: read ``source`` now (errors raise: StemdeckError, MemoryError),
        play its original, and bring its channels in the background."""
        check_start(source, self.limits, self.engine.sr, len(self.names))
        request = LoadRequest(source, None)
        with self._lock:
            self._request = request
        try:
            self._read_and_play(request, background=True)
        finally:
            with self._lock:
                if self._request is request:
                    self._request = None

    def current(self, gen: int) -> bool:
        return gen == self.generation and not self._closed

    # -- the requested track (background threads) ----------------------------------------
    def _load(self, request: LoadRequest) -> None:
        if not self._wanted(request):
            return  # superseded before it was read: answered so already
        try:
            self._read_and_play(request, background=False)
        except StemdeckError as exc:
            self._fail(request, str(exc))
        except MemoryError:
            self._fail(request, f"{request.name}: not enough memory to load it")
        except Exception as exc:  # one line, never a traceback nor a dead thread
            self._fail(request, f"{request.name}: {exc!r}")

    def _read_and_play(self, request: LoadRequest, *, background: bool) -> None:
        """Read ``request``'s source; once it is decoded and the engine took it, it
        plays. Its channels follow (in this thread, or another with ``background``)."""
        stems = read_stem_source(request.source, self.engine.sr)
        if stems is not None:
            self._publish_stems(stems, request)
            return
        # The file's identity (its size, mtime, a few pieces) before it is decoded: it
        # indexes the key its audio had last time, confirmed once all is decoded.
        identity = self._identity(request.source)
        # Decoded into a memory map of a file in the cache folder (page cache, not
        # the daemon's heap: its RssAnon stays flat in the track's length), block by
        # block: the original plays from its first piece while the rest decodes.
        decode, name = decode_source(
            request.source,
            self.cache.root if self.cache is not None else None,
            FIRST_PIECE_S,
        )
        try:
            sr = decode.sr
            if plays_at(sr):  # the read head converts the rate as it reads
                track = Track(decode.audio[np.newaxis], sr, ("mix",), is_mix=True)
            else:  # a rate the read head does not take: a copy of the whole
                at_engine = resample(decode.result(), sr, self.engine.sr)
                track = Track(at_engine[np.newaxis], self.engine.sr, ("mix",), is_mix=True)
            gen = self._play(
                request, SetTrack(track), self.names, name, colours=[], labels=[], separated=False
            )
        except BaseException:
            decode.cancel()
            raise
        if gen is None:
            decode.cancel()
            return
        load = _Load(decode, identity, gen, name)
        if background:
            threading.Thread(
                target=self._channels, args=(load,), name="stemdeck-load", daemon=True
            ).start()
        else:
            self._channels(load)

    def _identity(self, source: str) -> str | None:
        """``source``'s :func:`~stemdeck.core.separation.cache.file_identity` under the
        spec, or None (no cache, the demo, or unreadable: the audio is hashed first)."""
        if self.cache is None or source == DEMO:
            return None
        try:
            return file_identity(source, self.spec.digest)
        except (OSError, StemdeckError):
            return None

    def _wanted(self, request: LoadRequest) -> bool:
        return self._request is request and not self._closed

    def _play(
        self,
        request: LoadRequest,
        command: SetTrack,
        names: Sequence[str],
        name: str,
        *,
        colours: list[str],
        labels: list[str],
        separated: bool,
    ) -> int | None:
        """Post ``request``'s track (still the last request); once the engine took it,
        it is the playing track under a new generation (returned) and the old one's
        worker ends. None when superseded meanwhile."""
        gen = 0

        def posted() -> None:
            nonlocal gen
            self.generation += 1
            gen = self.generation
            self._end_worker_locked()
            self._request = None
            self.track_name = name
            self.problem = None
            self.separated = separated
            self.progress = None if separated else ("starting", 0.0)
            self.colours = colours
            self.labels = labels

        if not self._post_track(lambda: self._wanted(request), command, names, posted):
            # Nothing, if superseded meanwhile.
            self._fail(request, f"engine queue full: {name} not loaded; load it again")
            return None
        self._answer(request, None)
        return gen

    def _fail(self, request: LoadRequest, reason: str) -> None:
        """``request`` failed: told (and logged) once, if still the last request; the
        playing track plays and separates on."""
        with self._lock:
            latest = self._wanted(request)
            if latest:
                self._request = None
                self.problem = reason
                self.load_failed = True
        if latest:
            log.warning("track not loaded: %s", reason)
            self._answer(request, reason)

    def _answer(self, request: LoadRequest, failure: str | None) -> None:
        with self._lock:
            if request.answered:
                return
            request.answered = True
        if request.done is not None:
            try:
                request.done(failure)
            except Exception as exc:  # a reply that cannot go is not the load's failure
                log.warning("track load reply not sent: %r", exc)

    def _publish_stems(self, stems: StemFile, request: LoadRequest) -> None:
        """A stem file's stems are its channels: no original phase, nothing separated."""
        source = request.source
        if len(stems.names) > self.engine.max_channels:
            raise ParameterError(
                f"{Path(source).name} has {len(stems.names)} stems; this mixer has "
                f"{self.engine.max_channels} channels"
            )
        keys = stems.arrange().keys  # drums, bass, other, vocals, then the rest
        name = source_name(source)
        track = Track(stems.stems, self.engine.sr, keys)
        colours = list(stems.colours)
        labels = list(stems.names)
        gen = self._play(
            request, SetTrack(track), keys, name, colours=colours, labels=labels, separated=True
        )
        if gen is not None:
            if self.beats is not None:
                self.beats.start(stems.mix, stems.sr, gen, name)
            named = ", ".join(f"{n} {c}" for n, c in zip(stems.names, colours, strict=True))
            log.info("%s: %d stems from the file: %s", name, len(stems.names), named)

    # -- the playing track's channels (background threads) -------------------------------
    def _channels(self, load: _Load) -> None:
        """From the cache (verified) or a worker: the channels of ``load``'s generation.

        The whole decoded source (at its own rate) is hashed once for its key; the
        worker separates this very audio under this key. When the file's identity
        indexes a key, that entry plays as it is verified while the file decodes,
        and is confirmed by the key (:meth:`_confirm`)."""
        gen, name, sr = load.gen, load.name, load.decode.sr
        try:
            key = None
            indexed = self._indexed(load)
            if indexed is not None:
                load.indexed = indexed
                outcome = self._cached_by_chunks(indexed, load.decode.audio, sr, gen, name, load)
                if outcome == "played":
                    return
                if load.published and not load.confirmed:
                    self._confirm(load)  # absent or damaged: its stems go unless its audio's
                if load.failed or not self.current(gen):
                    return
                key = load.key  # taken to confirm it (None: not taken yet)
            y = self._whole(load)
            if y is None:
                return
            if key is None and self.cache is not None and not self._maybe_cached(y, sr):
                # Not cached whatever its key: the worker starts on the chunk under
                # the play head while the track is hashed (1.7 s for an hour).
                self._spawn(y, sr, None, gen, name, key_later=True)
                with self._lock:
                    worker = self._worker if self.current(gen) else None
                if worker is not None:
                    try:
                        key = self._key(load)
                    finally:  # the worker waits for it, whatever happened
                        worker.send_key(key)
                return
            if self.cache is not None:
                if key is None:
                    key = self._key(load)
                if key is not None and plays_at(sr):
                    if self._cached_by_chunks(key, y, sr, gen, name) == "played":
                        return
                else:
                    channels = None if key is None else self._verified(key, gen)
                    if channels is not None:
                        if self._publish(channels, sr, gen):
                            log.info("%s: %d channels from the cache", name, len(channels))
                        return
            self._spawn(y, sr, key, gen, name)
        except MemoryError:
            self._give_up(gen, "separation not started: not enough memory")
        finally:
            if not self.current(gen):
                load.decode.cancel()

    def _indexed(self, load: _Load) -> str | None:
        """The key ``load``'s file identity indexes in the cache, when its entry can
        play at the source's rate as it is verified; else None."""
        if self.cache is None or load.identity is None or not plays_at(load.decode.sr):
            return None
        return self.cache.indexed_key(load.identity)

    def _whole(self, load: _Load) -> np.ndarray | None:
        """``load``'s source once decoded whole (its beat grid then found); None when
        the decode failed (generation ``gen`` gives up, saying why: the original's
        decoded part plays on) or the track no longer plays."""
        if load.whole is not None or load.failed:
            return load.whole
        gen, name = load.gen, load.name
        try:
            while True:
                if not self.current(gen):  # a newer track plays: its decode stops
                    load.decode.cancel()
                    return None
                try:
                    y = load.decode.result(timeout=HEAD_POLL_S)
                    break
                except TimeoutError:
                    continue
        except StemdeckError as exc:
            load.failed = True
            self._give_up(gen, f"{name}: {exc}")
            return None
        except OSError as exc:
            load.failed = True
            self._give_up(gen, f"{name}: not decoded whole: {exc.strerror or exc}")
            return None
        if not self.current(gen):
            return None
        if y is not load.decode.audio:  # the file ended before its header's count
            track = Track(y[np.newaxis], load.decode.sr, ("mix",), is_mix=True)
            self._post_track(
                lambda: self.current(gen),
                SetTrack(track, same_audio=True),
                self.names,
                lambda: None,
            )
        load.whole = y
        if self.beats is not None:
            self.beats.start(y, load.decode.sr, gen, name)
        return y

    def _key(self, load: _Load) -> str | None:
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

    def _confirm(self, load: _Load) -> bool:
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
        self, key: str, y: np.ndarray, sr: int, gen: int, name: str, load: _Load | None = None
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

    def _verified(self, key: str, gen: int | None = None) -> np.ndarray | None:
        """The channels of the cache entry ``key``, every block verified; None (the
        reason logged) when absent, damaged or unreadable. With ``gen``, generation
        ``gen``'s progress says ``verifying`` while the blocks are checked."""
        assert self.cache is not None
        found = self.cache.load(key)
        if found.entry is not None:
            if gen is not None:
                with self._lock:
                    if self.current(gen):
                        self.progress = ("verifying", 0.0)
            found = self.cache.verify(found.entry)  # every block, while the original plays
        if found.entry is None:
            if found.problem:
                log.warning(found.problem)
            return None
        return found.entry.channels

    def _maybe_cached(self, y: np.ndarray, sr: int) -> bool:
        """Whether the cache may hold ``y``'s entry (:meth:`SeparationCache.may_hold`);
        a cache folder that cannot be listed: maybe."""
        assert self.cache is not None
        try:
            return self.cache.may_hold(sr, (int(y.shape[0]), int(y.shape[1])))
        except OSError:
            return True

    def _spawn(
        self,
        y: np.ndarray,
        sr: int,
        key: str | None,
        gen: int,
        name: str,
        *,
        key_later: bool = False,
    ) -> None:
        """Start generation ``gen``'s worker on ``y`` (filed under ``key`` when there is
        a cache; with ``key_later``, under the key :meth:`SeparationWorker.send_key`
        hands it).

        Under the lock, so that a newer track or :meth:`close` ends it and releases
        its audio whenever it comes: writing a 10-minute track into shared memory
        takes about 0.1 s, which a track posted meanwhile waits for.
        """
        cache_root = (
            str(self.cache.root)
            if self.cache is not None and (key is not None or key_later)
            else None
        )
        with self._lock:
            if not self.current(gen):
                return
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
                )
            except OSError as exc:  # no process or pipe to be had (too many open files)
                failed = f"separation not started: {exc.strerror or exc}"
            else:
                failed = ""
                self._worker = worker
        if failed:
            self._give_up(gen, failed)
            return
        log.info("%s: playing the original while separating (%s mode)", name, self.spec.mode)
        threading.Thread(
            target=self._watch,
            args=(worker, y, sr, gen, name),
            name="stemdeck-watch",
            daemon=True,
        ).start()

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
                    self._give_up(gen, "separation stopped before it finished")
                    return
                if not self.current(gen):
                    return  # another track plays
                kind = msg[0]
                if kind == "progress":
                    with self._lock:
                        if self.current(gen):
                            self.progress = (msg[1], float(msg[2]))
                elif kind == "entry":
                    progressive = self._progressive(str(msg[1]), int(msg[2]), int(msg[3]), y, sr)
                    if progressive is not None:
                        self._post_progressive(progressive, sr, gen, name)
                elif kind == "chunk":
                    if progressive is not None:
                        progressive.land(int(msg[1]), int(msg[2]))
                        with self._lock:
                            if self.current(gen) and not self.separated:
                                self.progress = (STEMS_STAGE, progressive.fraction)
                elif kind == "done" and progressive is not None and progressive.posted:
                    worker.release()
                    # Every chunk is in: the channels alone (the original goes).
                    if self._publish(progressive.channels, sr, gen):
                        log.info("%s: channels ready", name)
                    return
                elif kind == "done":
                    worker.release()  # the audio is separated: its memory goes now
                    channels = self._verified(str(msg[1]))
                    if channels is None:
                        self._give_up(gen, "separated channels unusable in the cache")
                        return
                    if self._publish(channels, sr, gen):
                        log.info("%s: channels ready", name)
                    return
                elif kind == "data":
                    worker.release()
                    if self._publish(msg[1], sr, gen):
                        log.info("%s: channels ready (not cached)", name)
                    return
                elif kind == "error":
                    self._give_up(gen, str(msg[1]))
                    return
        except MemoryError:
            self._give_up(gen, "channels not published: not enough memory")
        finally:
            worker.finish()

    def _head(self, sr: int) -> int:
        """The engine's play head in samples at the rate ``sr`` (the engine counts
        the frames of the track it plays, at that track's own rate)."""
        engine = self.engine
        rate = engine.frame_rate or sr
        return int(engine.position) * sr // rate

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

    def _post_progressive(self, progressive: Progressive, sr: int, gen: int, name: str) -> None:
        """Play generation ``gen``'s partial entry in place of its original (the
        original plays on where no chunk is ready yet)."""

        def posted() -> None:
            progressive.posted = True
            self.progress = (STEMS_STAGE, progressive.fraction)

        command = SetTrack(progressive.track(sr, self.names), same_audio=True)
        if self._post_track(lambda: self.current(gen), command, self.names, posted):
            # A debug line: the status line and /track/progress say it ("stems N%
            # ready"), and a start prints only what a user needs (tests/daemon/cli).
            log.debug("%s: stems play as their chunks are separated", name)

    def _give_up(self, gen: int, reason: str) -> None:
        """No channels for generation ``gen``: the original goes on playing, and says so."""
        with self._lock:
            if self.current(gen) and not self.separated:
                log.warning("%s; playing the original", reason)
                self.problem = reason
                self.progress = None

    def _post_track(
        self,
        wanted: Callable[[], bool],
        command: SetTrack,
        names: Sequence[str],
        posted: Callable[[], None],
    ) -> bool:
        """Post ``command`` while ``wanted()`` with the registry's whole state for the
        channels ``names``, as one command; on success call ``posted`` under the lock.
        A full engine queue is retried for :data:`POST_RETRY_S` (the lock is let go
        between tries, so a newer request is never held up); then False, as once no
        longer wanted."""
        deadline = time.monotonic() + POST_RETRY_S
        while True:
            with self._lock:
                if not wanted():
                    return False
                with self.registry.transaction() as txn:
                    txn.set_names(names)
                    ok = txn.commit(self.engine.post, [command])
                if ok:
                    posted()
                    return True
                if time.monotonic() >= deadline:
                    return False
            time.sleep(POST_RETRY_INTERVAL_S)

    def _publish(self, channels: np.ndarray, channels_sr: int, gen: int) -> bool:
        """Swap the channels (at the source rate ``channels_sr``) in for the original
        of generation ``gen``, if it still plays."""
        from .prefetch import will_need

        sr = channels_sr
        if not plays_at(sr):  # a rate the read head does not take: a copy at the device's
            if not self.current(gen):
                return False
            sr = self.engine.sr
            channels = resample_channels(channels, channels_sr, sr)
        will_need(channels, 0, 10 * sr)  # the first seconds, before they play

        def posted() -> None:
            self.progress = None
            self.separated = True

        command = SetTrack(Track(channels, sr, self.names), same_audio=True)
        if self._post_track(lambda: self.current(gen), command, self.names, posted):
            return True
        self._give_up(gen, "engine queue full: channels not published")
        return False

    # -- the worker ------------------------------------------------------------------------
    def _end_worker_locked(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            threading.Thread(target=worker.end, daemon=True).start()

    def close(self) -> None:
        """End the worker and release its audio; nothing more is published."""
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
            request, self._request = self._request, None
        if request is not None:
            self._answer(request, "the daemon is shutting down")
        if worker is not None:
            worker.end()
