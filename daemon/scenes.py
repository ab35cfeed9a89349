"""Scenes: snapshots of every level, saved as TOML, recalled at once or as a morph.

A scene is read only from the user's scene folder (``$STEMDECK_CONFIG/scenes``
or the platform's config folder, :func:`.config.config_dir`) and from the shipped
``presets/scenes/``, and only from regular files: a name never becomes a path
relative to the working directory, and a FIFO or device in the scene folder is
refused without being opened for reading.

A recall, and each step of a morph, goes to the registry and the engine through one
:class:`~stemdeck.core.control.registry.Transaction`: the registry takes a scene's
values only once the engine has accepted them. A morph writes only the values the
scene names, and leaves any of them that another writer moves meanwhile
(:meth:`~stemdeck.core.control.registry.Registry.written_since`).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from stemdeck.core.control.registry import Registry
from stemdeck.core.control.values import SCENE_NAME
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Batch, Command
from stemdeck.core.mixer.params import fader_to_gain, gain_to_fader

from .config import config_dir

__all__ = ["SceneStore", "scene_missing"]

log = logging.getLogger(__name__)

MORPH_STEP_S = 0.02  # a morph's step: 50 a second
_MAX_SCENE_BYTES = 1 << 20


def scene_missing(name: str, missing: list[str]) -> str:
    """The one line saying a scene was recalled without the channels ``missing``."""
    which = ", ".join(repr(m) for m in missing)
    return f"scene {name!r} recalled without {which}: this track has no such channel"


def _check_name(name: str) -> None:
    if not SCENE_NAME.match(name) or ".." in name:
        raise ParameterError(f"scene name {name!r}: use letters, digits, space, _ . -")


def _read_regular(path: Path) -> str | None:
    """Text of ``path`` if it is a regular file; None if absent. Never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ParameterError(f"scene file {str(path)!r} is unreadable: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ParameterError(f"scene file {str(path)!r} is not a regular file")
        if info.st_size > _MAX_SCENE_BYTES:
            raise ParameterError(f"scene file {str(path)!r} is larger than 1 MiB")
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            return f.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ParameterError(f"scene file {str(path)!r} is not UTF-8 text") from None
    finally:
        if fd >= 0:
            os.close(fd)


class SceneStore:
    """Save and recall scenes of a :class:`Registry`, posting commands to the engine.

    Parameters
    ----------
    registry : Registry
        The control side's truth; a recall goes through one of its transactions.
    post : callable
        Hands one engine command to the audio thread (``Mixer.post``); False if
        the engine's queue is full.
    quantized : callable, optional
        Posts a recall without fade so that it acts on the next grid point
        (:meth:`.quantize.Quantizer.post`); default ``post``. A morph's steps
        use ``post``.
    until_grid : callable, optional
        Seconds until the next grid point, None for at once
        (:meth:`.quantize.Quantizer.seconds_to_target`): a morph starts there;
        default at once.
    folder : Path, optional
        Where scenes are saved; default ``config_dir("scenes")`` (read at each call).
    clock : callable, optional
        Seconds, for a morph's course (default ``time.monotonic``; a test's fake clock).
    """

    def __init__(
        self,
        registry: Registry,
        post: Callable[[Command], bool],
        folder: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        quantized: Callable[[Command], bool] | None = None,
        until_grid: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.post = post
        self.quantized = quantized if quantized is not None else post
        self.until_grid = until_grid
        self._folder = folder
        self._clock = clock
        self._morph_stop = threading.Event()
        self._morph_thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        return self._folder if self._folder is not None else config_dir("scenes")

    # -- files -------------------------------------------------------------------------
    def save(self, name: str) -> Path:
        """Write the registry's state as ``<folder>/<name>.toml`` (atomically)."""
        _check_name(name)
        folder = self.folder
        snap = self.registry.snapshot()
        lines = [f"# stemdeck scene {name!r}, saved {time.strftime('%Y-%m-%d %H:%M:%S')}", ""]
        master: dict[str, Any] = snap["master"]
        channels: dict[str, dict[str, Any]] = snap["channels"]
        lines += ["[master]", f"gain = {master['gain']!r}"]
        lines += [f"mute = {str(master['mute']).lower()}"]
        lines += [f"filter = {master['filter']!r}", f"res = {master['res']!r}", ""]
        echo: dict[str, Any] = snap["echo"]
        # beats 0: the delay is ms; else beats on the grid (ms: the delay it gave then).
        keys = ("ms", "beats", "feedback", "filter", "level")
        lines += ["[echo]"] + [f"{k} = {echo[k]!r}" for k in keys]
        lines += [""]
        reverb: dict[str, Any] = snap["reverb"]
        lines += ["[reverb]"] + [f"{k} = {reverb[k]!r}" for k in ("size", "lowcut", "level")]
        lines += [""]
        for ch, values in channels.items():
            lines.append(f'[channels."{ch}"]')
            lines += [
                f"gain = {values['gain']!r}",
                f"mute = {str(values['mute']).lower()}",
                f"solo = {str(values['solo']).lower()}",
                f"pan = {values['pan']!r}",
                f"filter = {values['filter']!r}",
                f"res = {values['res']!r}",
                f"echo = {values['echo']!r}",
                f"echo_pre = {str(values['echo_pre']).lower()}",
                f"reverb = {values['reverb']!r}",
                "",
            ]
        target = folder / f"{name}.toml"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.toml.tmp"
            tmp.write_text("\n".join(lines), encoding="utf-8")
            os.replace(tmp, target)
        except OSError as exc:
            raise ParameterError(
                f"cannot save scene {name!r} in {folder}: {exc.strerror}"
            ) from None
        return target

    def load(self, name: str) -> dict[str, Any]:
        """The scene ``name``: the user's saved one, else the shipped one.

        Raises
        ------
        ParameterError
            Bad name, no such scene, not a regular file, or not valid TOML.
        """
        _check_name(name)
        text = _read_regular(self.folder / f"{name}.toml")
        if text is None:
            shipped = resources.files("stemdeck.presets").joinpath("scenes", f"{name}.toml")
            if not shipped.is_file():
                raise ParameterError(f"no scene {name!r} (saved or shipped)")
            text = shipped.read_text(encoding="utf-8")
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ParameterError(f"scene {name!r} is unreadable: {exc}") from None

    def names(self) -> list[str]:
        """Every scene :meth:`load` can find: the user's saved ones and the shipped ones,
        sorted, each once (the browser mixer's scene list)."""
        found: set[str] = set()
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    stem = entry.name[:-5] if entry.name.endswith(".toml") else ""
                    if stem and SCENE_NAME.match(stem) and entry.is_file(follow_symlinks=False):
                        found.add(stem)
        except OSError:
            pass  # no scene folder yet
        shipped = resources.files("stemdeck.presets").joinpath("scenes")
        for item in shipped.iterdir():
            if item.name.endswith(".toml") and SCENE_NAME.match(item.name[:-5]):
                found.add(item.name[:-5])
        return sorted(found)

    # -- recall ------------------------------------------------------------------------
    def recall(self, name: str, fade: float = 0.0, *, extra: Sequence[Command] = ()) -> list[str]:
        """Recall a scene; with ``fade`` > 0 levels, pans and filters glide there (a morph).

        Recalled at once, it acts on the next grid point when quantize is on
        (``quantized``), with the ``extra`` commands in the same block (a hot
        cue's jump); a morph starts on that grid point too (``until_grid``; its
        ``extra`` posted quantized, so a cue's jump and the morph's start agree).

        Both forms agree on the end state: a channel or value the scene does not
        name keeps its current value, and a morph never writes it. The whole scene
        is validated before anything moves; a recall stops a morph in progress.
        A scene's channel is found by its key or by its role (``vox`` sets
        ``vocals``); channels the track lacks are left out, the rest is recalled.

        Returns
        -------
        list of str
            The scene's channels the track lacks (the caller says so).

        Raises
        ------
        ParameterError
            Bad name, no such scene, a bad value in it; or, recalled at once, the
            engine's queue is full (the scene is not recalled: nothing changed).
        """
        scene = self.load(name)
        with self.registry.transaction() as txn:
            txn.restore(scene)  # raises before anything changes
        with self._lock:
            self.stop()
            with self.registry.transaction() as txn:
                missing = txn.restore(scene)
                if fade <= 0:
                    if not txn.commit(self.quantized, extra):
                        raise ParameterError("engine queue full: scene not recalled; try again")
                    return missing
                if extra and not self.quantized(Batch(tuple(extra))):
                    raise ParameterError("engine queue full: scene not recalled; try again")
                # The morph's course, read with the generation it starts from (never committed).
                course = {key: (self.registry.get(key), txn.get(key)) for key in txn.written}
                since = self.registry.generation
            self._morph_stop = threading.Event()
            wait = self.until_grid()
            start = self._clock() + (0.0 if wait is None else wait)
            self._morph_thread = threading.Thread(
                target=self._morph,
                args=(course, since, start, fade, self._morph_stop),
                name="stemdeck-morph",
                daemon=True,
            )
            self._morph_thread.start()
        return missing

    @property
    def morphing(self) -> bool:
        """True while a morph is under way (until it has reached its end or stopped)."""
        thread = self._morph_thread
        return thread is not None and thread.is_alive()

    def stop(self) -> None:
        """Stop a morph in progress where it is."""
        self._morph_stop.set()
        thread = self._morph_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1)

    def _morph(
        self,
        course: dict[str, tuple[float | int, float | int]],
        since: int,
        t0: float,
        fade: float,
        stop: threading.Event,
    ) -> None:
        """Glide the values of ``course`` (value key: start, end) over ``fade`` seconds
        from the clock's ``t0`` (waiting for it: the next grid point with quantize on).

        Levels move along the fader, pans and filters linearly; switches flip at the end. A
        value another writer writes after generation ``since`` (a hand on OSC, the
        WebSocket or MIDI; a new track's channels) leaves the morph: it is never
        written again, and the others glide on. A step the engine refuses (queue
        full) changes nothing; the next step posts the frame of its own time, and
        the last is retried until it is posted.
        """
        registry = self.registry
        held = set(course)
        while self._clock() < t0:
            if stop.wait(min(MORPH_STEP_S, t0 - self._clock())):
                return
        while not stop.is_set():
            x = min((self._clock() - t0) / fade, 1.0)
            with registry.transaction() as txn:
                if stop.is_set():  # a newer recall may have committed since the check above
                    return
                held -= registry.written_since(since)
                if not held:
                    return
                for key in sorted(held):
                    value = _glide(key, *course[key], x)
                    if value is not None:
                        txn.set(key, [value])
                posted = True  # a step with nothing to write yet (switches only)
                if txn.written:
                    posted = txn.commit(self.post)
                    if posted:
                        since = registry.generation  # this step's own writes
            if not posted:
                log.debug("scene morph: engine queue full; the next step catches up")
            elif x >= 1.0:
                return
            stop.wait(MORPH_STEP_S)


def _glide(key: str, a: float | int, b: float | int, x: float) -> float | int | None:
    """The value of ``key`` a fraction ``x`` of the way from ``a`` to ``b``: a level
    along the fader (as a hand would move it), a pan, a DJ filter, its resonance,
    an echo or reverb send and the buses' values linearly, a switch at the end
    (None before: not written)."""
    param = key.rsplit("/", 1)[1]
    if x >= 1.0:
        return b  # the scene's exact value, not a fader position rounded back
    if param == "gain":
        fa, fb = gain_to_fader(a), gain_to_fader(b)
        return fader_to_gain(min(max(fa + (fb - fa) * x, 0.0), 1.0))
    if param in (
        "pan",
        "filter",
        "res",
        "echo",
        "ms",
        "feedback",
        "return",
        "reverb",
        "size",
        "lowcut",
    ):
        return a + (b - a) * x
    return None
