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

A stem file (``.stem.mp4``) is its own channels: with a cache folder its stems decode
in the background into a scratch file's map (core/audiofile/decode.py,
``open_stem_file``); it plays once its first STEM_FIRST_S are in and checked, each
span of STEM_CHUNK_S once it is in and checked (silence where nothing is yet), then
the whole and its grid (``_publish_stems``, ``_land_stems``); damage in its first
seconds fails the load, later damage keeps what played and is said once.

One load of any other track (a background thread per request)::

    request(path)          check (track_source.py): library, regular file, audio
                           header, length and memory -> refused now, or requested
      identity             the file's size, mtime and 16 pieces (read_identity),
                           hashed with the model's digest once the daemon's audio
                           runs (a model that cannot be loaded: one line, no worker)
      read + decode        once, at the source's rate, block by block into a memory
                           map, until its first FIRST_PIECE_S (START_PIECE_S for the
                           daemon's first track: open()); a failure (damaged audio,
                           NaN, a file replaced, MemoryError) -> done(reason)
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
      still decoding       a track longer than the first piece that no entry can
                           hold starts its worker before the key, on the decode's
                           own file as it fills (_separate_as_decoded): its stems
                           play within 2 s whatever its length

The file is never read again once decoded (its identity is read before): a file
rewritten meanwhile changes neither what plays nor what is separated. A track
separated by ``stemdeck separate`` or ``prep`` at 44.1 kHz is a cache hit on a
48 kHz device too.

Every ``SetTrack`` goes to the engine in one command with the registry's whole
state (a :class:`~stemdeck.core.control.registry.Transaction` with the ``SetTrack``
as its extra command): a track never plays with stale strip targets, and the
registry takes its channel names only if the engine took it. A full queue is
retried for :data:`~.loader_base.POST_RETRY_S`, then the load fails and says why.

The loader is three modules: this one (requests, the original, a stem file's
stems, the way to the channels), ``loader_cache.py`` (the cache) and
``loader_worker.py`` (the separation worker), on ``loader_base.py`` (the state and
publishing to the engine).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from stemdeck.core.audiofile.decode import StemDecode, StemFile, check_audio, read_stem_file
from stemdeck.core.audiofile.samples import resample
from stemdeck.core.errors import ParameterError, PresetError, StemdeckError
from stemdeck.core.mixer.commands import SetTrack, Track
from stemdeck.core.mixer.params import plays_at
from stemdeck.core.separation.cache import FileRead, read_identity

from .loader_base import STEMS_STAGE, Progressive, TrackLoad
from .loader_cache import CachedChannels
from .loader_worker import SOUNDING_WAIT_S, SeparatedChannels
from .separation_worker import WORKER_NICE, SeparationWorker
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

__all__ = ["FIRST_PIECE_S", "LOAD_FAILED", "START_PIECE_S", "TrackLoader"]

log = logging.getLogger(__name__)

#: The stage ``/track/progress`` shows while the last request's failure stands.
LOAD_FAILED = "load failed"
#: A requested track plays once this many seconds of it are decoded and checked (a
#: file damaged in them is refused and the playing track goes on), the rest decoding
#: meanwhile; a shorter track once decoded whole ...
FIRST_PIECE_S = 30.0
#: ... and the daemon's first track once this many are (nothing plays yet that a
#: damaged file could cost; damage later is said once and the decoded part plays):
#: one decode block up to 64 kHz (core/audiofile/files.py), where 30 s of an MP3 or
#: a FLAC took 80 ms before the first sound.
START_PIECE_S = 1.0
#: A stem file decoding in the background plays once this many seconds of every stem
#: are in (tens of milliseconds of decoding), ...
STEM_FIRST_S = 10.0
#: ... each span of this many seconds once it is in and checked ...
STEM_CHUNK_S = 5.0
#: ... looked at this often at most.
STEM_POLL_S = 0.05


class TrackLoader(CachedChannels, SeparatedChannels):
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
        that imported the separation once, :func:`~.forkserver.worker_context`;
        a test forks).
    limits : TrackLimits, optional
        The longest track and the memory check (default: :class:`TrackLimits`
        for ``spec``'s mode, chunked with a cache).
    beats : TrackBeats, optional
        Told of every track that starts playing, to find or compute its beat grid.
    """

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
        play its original once its first :data:`START_PIECE_S` are in, and bring its
        channels in the background."""
        check_start(source, self.limits, self.engine.sr, len(self.names))
        request = LoadRequest(source, None)
        with self._lock:
            self._request = request
        try:
            self._read_and_play(request, background=True, first=START_PIECE_S)
        finally:
            with self._lock:
                if self._request is request:
                    self._request = None

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

    def _read_and_play(
        self, request: LoadRequest, *, background: bool, first: float | None = None
    ) -> None:
        """Read ``request``'s source; once its ``first`` seconds (:data:`FIRST_PIECE_S`)
        are decoded and the engine took it, it plays. Its channels follow (in this
        thread, or another with ``background``)."""
        stems = read_stem_source(
            request.source, self.engine.sr, self.cache.root if self.cache is not None else None
        )
        if stems is not None:
            self._publish_stems(stems, request)
            return
        # What the file's identity is made of (its size, mtime, a few pieces) before it
        # is decoded: it indexes the key its audio had last time, confirmed once all
        # is decoded. Hashed with the model's digest once the daemon's audio runs.
        read = self._read_identity(request.source)
        # Decoded into a memory map of a file in the cache folder (page cache, not
        # the daemon's heap: its RssAnon stays flat in the track's length), block by
        # block: the original plays from its first piece while the rest decodes.
        decode, name = decode_source(
            request.source,
            self.cache.root if self.cache is not None else None,
            FIRST_PIECE_S if first is None else first,  # read now, not at definition
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
        load = TrackLoad(decode, read, gen, name, original=track)
        if background:
            threading.Thread(
                target=self._channels, args=(load,), name="stemdeck-load", daemon=True
            ).start()
        else:
            self._channels(load)

    def _read_identity(self, source: str) -> FileRead | None:
        """What ``source``'s :func:`~stemdeck.core.separation.cache.file_identity` is
        made of, or None (no cache, the demo, or unreadable: the audio is hashed first)."""
        if self.cache is None or source == DEMO:
            return None
        try:
            return read_identity(source)
        except OSError:
            return None

    def _identity(self, load: TrackLoad) -> str | None:
        """``load``'s file identity under the spec, or None (no cache, or its file not
        read).

        With a cache, the spec's digest loads and hashes the stems model (50 ms): here,
        once the daemon's audio runs (:attr:`sounding`), not on the way to its first
        sound nor beside it, and for every track, identity or not, so that a model
        that cannot be loaded is one line (the caller's) and no worker. Without one,
        the worker loads the model (and says once if it cannot).

        Raises
        ------
        PresetError
            The stems model cannot be loaded.
        """
        if self.cache is None:
            return None
        self.sounding.wait(SOUNDING_WAIT_S)
        digest = self.spec.digest
        return None if load.read is None else load.read.under(digest)

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

    def _publish_stems(self, stems: StemFile | StemDecode, request: LoadRequest) -> None:
        """A stem file's stems are its channels: no original phase, nothing separated.
        Decoding in the background (:class:`StemDecode`), they play once the first
        :data:`STEM_FIRST_S` are in, each span of :data:`STEM_CHUNK_S` once it is in
        and checked (silence before: a seek ahead of the decode), and as a whole once
        every one is (:meth:`_land_stems`)."""
        source = request.source
        file = stems.file if isinstance(stems, StemDecode) else stems
        if len(file.names) > self.engine.max_channels:
            if isinstance(stems, StemDecode):
                stems.cancel()
            raise ParameterError(
                f"{Path(source).name} has {len(file.names)} stems; this mixer has "
                f"{self.engine.max_channels} channels"
            )
        if isinstance(stems, StemDecode):
            stems.wait(round(STEM_FIRST_S * file.sr))
            if stems.done:  # short, or failed (raises): checked whole before it plays
                stems = file = self._stems_done(stems)
                for stem, row in zip(file.names, file.stems, strict=True):
                    check_audio(repr(str(source)), f"stem {stem!r}", row)
        keys = file.arrange().keys  # drums, bass, other, vocals, then the rest
        name = source_name(source)
        colours = list(file.colours)
        labels = list(file.names)
        if isinstance(stems, StemDecode):
            size = round(STEM_CHUNK_S * file.sr)
            n = file.stems.shape[2]
            # Where nothing is in yet (a seek ahead of the decode): silence, no memory.
            shape = (1, *file.stems.shape[1:])
            silence = np.broadcast_to(np.zeros((*shape[:2], 1), np.float32), shape)
            progressive = Progressive(file.stems, silence, -(-n // size), size, silent=True)
            try:  # its first seconds checked before it plays: damage there fails the load
                checked = self._check_spans(stems, progressive, 0)
            except BaseException:
                stems.cancel()
                raise
            track = progressive.track(file.sr, keys)
        else:
            track = Track(file.stems, file.sr, keys)  # at its own rate, or resampled
        try:
            gen = self._play(
                request,
                SetTrack(track),
                keys,
                name,
                colours=colours,
                labels=labels,
                separated=not isinstance(stems, StemDecode),
            )
        except BaseException:
            if isinstance(stems, StemDecode):
                stems.cancel()
            raise
        if gen is None:
            if isinstance(stems, StemDecode):
                stems.cancel()
            return
        named = ", ".join(f"{n} {c}" for n, c in zip(file.names, colours, strict=True))
        log.info("%s: %d stems from the file: %s", name, len(file.names), named)
        if isinstance(stems, StemDecode):
            with self._lock:
                if self.current(gen):  # never "separating": a stem file is not separated
                    self.progress = (STEMS_STAGE, progressive.fraction)
            threading.Thread(
                target=self._land_stems,
                args=(stems, progressive, checked, keys, gen, name),
                name="stemdeck-load",
                daemon=True,
            ).start()
        elif self.beats is not None:
            mix = file.mixed(self.cache.root if self.cache is not None else None)
            self.beats.start(mix, file.sr, gen, name)

    def _stems_done(self, stems: StemDecode, gen: int | None = None) -> StemFile:
        """A stem file decoded into its scratch file; where the folder's disk filled up,
        decoded again into the heap at the engine's rate (as with no cache folder),
        unless generation ``gen`` no longer plays.

        Raises
        ------
        AudioFileError
            Damaged.
        OSError
            The disk filled up and ``gen`` no longer plays.
        """
        try:
            return stems.result()
        except OSError as exc:
            if gen is not None and not self.current(gen):
                raise
            folder = self.cache.root if self.cache is not None else "the cache folder"
            log.info("the stems go to memory, not %s: %s", folder, exc.strerror or exc)
        file = read_stem_file(stems.path, sr=self.engine.sr, master=False)
        file.arrange()
        return file

    @staticmethod
    def _check_spans(stems: StemDecode, progressive: Progressive, checked: int) -> int:
        """Check the spans of ``progressive`` from span ``checked`` on that have landed
        (no NaN or deafening sample), and flag each ready; the first left unchecked.

        Raises
        ------
        AudioFileError
            A span holds such samples.
        """
        file, size, flags = stems.file, progressive.size, progressive.ready
        complete = stems.complete
        landed = stems.landed()  # once complete, the length cut to the shortest
        end = landed if complete else file.stems.shape[2]
        where = repr(str(stems.path))
        while checked < len(flags) and min((checked + 1) * size, end) <= landed:
            span = file.stems[:, :, checked * size : min((checked + 1) * size, end)]
            for stem, row in zip(file.names, span, strict=True):
                check_audio(where, f"stem {stem!r}", row)
            flags[checked] = 1
            checked += 1
        return checked

    def _land_stems(
        self,
        stems: StemDecode,
        progressive: Progressive,
        checked: int,
        keys: Sequence[str],
        gen: int,
        name: str,
    ) -> None:
        """Generation ``gen``'s stem file as it decodes: each span ready once all its
        stems are in and checked (no NaN or deafening sample ever plays), the status
        saying how much; then the whole (cut to the shortest stem) and its beat grid.
        A damaged file keeps what played and says why; a newer track cancels it."""
        try:
            while True:
                if not self.current(gen):
                    stems.cancel()
                    return
                done = stems.done
                checked = self._check_spans(stems, progressive, checked)
                with self._lock:
                    if self.current(gen):
                        self.progress = (STEMS_STAGE, progressive.fraction)
                if done:
                    break
                stems.wait(stems.landed() + progressive.size, timeout=STEM_POLL_S)
            final = self._stems_done(stems, gen)
        except Exception as exc:  # MemoryError too: one line, never a dead thread
            stems.cancel()
            reason = (
                f"{name}: {exc}"
                if isinstance(exc, StemdeckError | OSError)
                else (f"{name}: {exc!r}")
            )
            with self._lock:
                if not self.current(gen):
                    return
                self.problem = reason  # the progress stays: the share of stems that play
            log.warning("%s; playing what was decoded before it", reason)
            return

        def posted() -> None:
            self.progress = None
            self.separated = True

        command = SetTrack(Track(final.stems, final.sr, tuple(keys)), same_audio=True)
        if not self._post_track(lambda: self.current(gen), command, keys, posted):
            return
        if self.beats is not None:
            mix = final.mixed(self.cache.root if self.cache is not None else None)
            self.beats.start(mix, final.sr, gen, name)

    # -- the playing track's channels (background threads) -------------------------------
    def _channels(self, load: TrackLoad) -> None:
        """From the cache (verified) or a worker: the channels of ``load``'s generation.

        The whole decoded source (at its own rate) is hashed once for its key; the
        worker separates this very audio under this key. When the file's identity
        indexes a key, that entry plays as it is verified while the file decodes,
        and is confirmed by the key (:meth:`_confirm`)."""
        gen, name, sr = load.gen, load.name, load.decode.sr
        try:
            try:
                load.identity = self._identity(load)
            except PresetError as exc:  # no separation: the original plays on, its grid found
                self._give_up(gen, f"{name}: separation not started: {exc}")
                self._whole(load)
                return
            if not self.current(gen):
                return  # a newer track, or the daemon's end, while the audio was awaited
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
            if key is None and self._separate_as_decoded(load):
                return
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
        except StemdeckError as exc:  # the track plays: said here, or not at all (_fail)
            self._give_up(gen, f"{name}: separation not started: {exc}")
        except Exception as exc:  # one line, never a dead thread without a word
            self._give_up(gen, f"{name}: separation not started: {exc!r}")
        finally:
            if not self.current(gen):
                load.decode.cancel()

    def _separate_as_decoded(self, load: TrackLoad) -> bool:
        """Start the worker on ``load``'s track while it is still decoded, when no cache
        entry can be its (none of its shape and rate): it separates the chunk under the
        play head from the first minute on, into an entry under a provisional name that
        plays as it fills, and gets the key once the whole track is decoded and hashed.
        True once that is under way or over (for better or worse, said); False when the
        track is to go the way of a decoded one (no cache, no longer than the first
        piece, a decode that stopped short, a rate the read head does not take, an
        entry that may be its). A track decoded by now goes this way too (its worker
        maps the decode's file all the same, with every frame in): which way a track
        goes does not hang on the decode's pace."""
        decode, gen, name, sr = load.decode, load.gen, load.name, load.decode.sr
        if (
            self.cache is None
            or decode.audio.shape[1] <= FIRST_PIECE_S * sr  # decoded whole first (ms)
            or decode.stopped_short
            or not plays_at(sr)
            or self._maybe_cached(decode.audio, sr)
        ):
            return False
        # The worker starts in a thread of its own: its start waits for the fork
        # server's imports (0.4 s into a load), while this thread waits for the
        # decode, starts the beat analysis and hashes the track meanwhile.
        spawning: Future[SeparationWorker | None] = Future()

        def spawn() -> None:
            try:
                worker = self._spawn(
                    decode.audio, sr, None, gen, name, key_later=True, decode=decode
                )
                if worker is not None:
                    # The rest of the decode shares the CPU with the worker as an
                    # equal, rather than taking a core from the chunk under the head.
                    decode.lower_priority(WORKER_NICE)
                spawning.set_result(worker)
            except BaseException as exc:  # raised again by result(), in the loader's thread
                spawning.set_exception(exc)

        threading.Thread(target=spawn, name="stemdeck-spawn", daemon=True).start()
        key = None
        try:
            y = self._whole(load)
            if y is decode.audio:
                key = self._key(load)
        except BaseException:
            worker = spawning.result()
            if worker is not None:
                worker.send_key(None)  # the worker waits for it, whatever happened
            raise
        worker = spawning.result()
        if worker is None:
            return True  # said why, or another track plays
        if y is None:  # the decode failed (said) or another track plays
            self._drop_worker(worker, load)
            return True
        if y is not decode.audio:
            # The file ended before its header's count (its original, shorter, plays
            # again): the worker's track is not this one. Another worker separates
            # the frames it held.
            self._drop_worker(worker, None)
            restarted = self._spawn(y, sr, None, gen, name, key_later=True)
            if restarted is None:
                return True
            worker = restarted
            key = None
            try:
                key = self._key(load)
            finally:  # the worker waits for it, whatever happened
                worker.send_key(key)
            return True
        worker.send_key(key)
        return True

    def _drop_worker(self, worker: SeparationWorker, load: TrackLoad | None) -> None:
        """End ``worker``, whose track will not be decoded whole, if it is still the
        playing track's (quietly: the decode's end was said), and remove the entry it
        was writing; with ``load``, its original plays again (not stems of the part
        separated so far, while the status says the original plays)."""
        with self._lock:
            if self._worker is not worker:
                return
            self._worker = None
        worker.end()  # its provisional entry with it
        if load is not None and load.original is not None:
            self._post_track(
                lambda: self.current(load.gen),
                SetTrack(load.original, same_audio=True),
                self.names,
                lambda: None,
            )

    # -- the worker ------------------------------------------------------------------------
    def close(self) -> None:
        """End the worker and release its audio; nothing more is published."""
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
            request, self._request = self._request, None
        self.sounding.set()  # nothing waits for an audio that will not run
        if request is not None:
            self._answer(request, "the daemon is shutting down")
        if worker is not None:
            worker.end()
