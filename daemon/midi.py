"""MIDI control surface: ports, the map's state machine, LED feedback, MIDI learn.

Ports are opened with mido's rtmidi backend, ALSA or JACK API (``--midi-api`` or
``MIDO_BACKEND``). A controller unplugged mid-set is a warning, the music goes
on, and the port is reopened when it comes back (checked every second).

A controller's ports live on two rtmidi clients made once, at start, and kept for the
session: the check lists ports on them and a returning controller is reopened on them.
python-rtmidi holds the GIL in its calls, and under JACK a new client (what mido's
``get_input_names`` makes, twice, per call) waits for the graph to switch; the graph
waits for rtmidi's process thread, which waits for the GIL to hand our callback a
message: nothing moves until JACK times out (5 or 10 s under the tests' jackd, -t 5000).
Listing ports and opening or closing a port on a client that exists waits for no graph.

Input is never handed to Python on rtmidi's thread. Under JACK that thread is JACK's
process thread: a callback there waits for the GIL, and while it waits (another thread
holds the GIL, or its holder is descheduled on a busy machine) the client misses its
cycles and the messages of those cycles are lost (four in five with the GIL held 50 ms
at a time, in a test). rtmidi queues each message on its own thread (``queue_size_limit``,
1024) and a thread of ours (:class:`_Input`) takes them every :data:`POLL_S`.

A mapped control moves the registry and the engine through one
:class:`~stemdeck.core.control.registry.Transaction`, as OSC does: when the engine's
queue is full the move is dropped, the registry keeps the old value, and the
message counts as an error (the status line's MIDI errors).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import mido

from stemdeck.core.control.bindings import binding_toml, check_learn
from stemdeck.core.control.midimap import MidiMap, MidiMapper, load_midi_map, track_target
from stemdeck.core.errors import ParameterError, PresetError, StemdeckError

from .config import config_dir
from .host import Host
from .osc.cues import CueHandlers
from .osc.dispatch import Group, Plan
from .transport import Led

log = logging.getLogger(__name__)

APIS = {"alsa": "mido.backends.rtmidi/LINUX_ALSA", "jack": "mido.backends.rtmidi/UNIX_JACK"}
#: How often an input's thread takes the messages rtmidi queued (the most a message
#: waits, under a JACK period of 256 frames at 48 kHz).
POLL_S = 0.002


def backend_name(api: str | None) -> str:
    if api is not None:
        if api not in APIS:
            raise ParameterError(f"--midi-api must be alsa or jack, got {api!r}")
        return APIS[api]
    return os.environ.get("MIDO_BACKEND", "mido.backends.rtmidi")


def resolve_map(name_or_path: str) -> MidiMap:
    """The user's copy of a map (saved by MIDI learn) wins over the shipped one."""
    own = config_dir("midi") / f"{name_or_path}.toml"
    if own.is_file():
        return load_midi_map(str(own))
    return load_midi_map(name_or_path)


def _rtapi(api: str | None) -> Any:
    """rtmidi's API constant for mido's API name (``UNIX_JACK``; None: rtmidi's default)."""
    # Here, not at the top: mido's backend has loaded rtmidi by now, or failed with a
    # clear "MIDI backend unavailable" (MidiControl) where an import would not.
    import rtmidi

    return getattr(rtmidi, f"API_{api}") if api else rtmidi.API_UNSPECIFIED


class _Input:
    """An open rtmidi input whose queue a thread of ours takes, message by message, to
    ``on_message`` (never rtmidi's thread: see the module docstring).

    ``owned``: the client is this input's alone (a virtual port), deleted on close.
    """

    def __init__(self, rt: Any, name: str, on_message: Any, *, owned: bool = False) -> None:
        self._rt = rt
        self.name = name
        self._on_message = on_message
        self._owned = owned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemdeck-midi-in", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        get = self._rt.get_message
        while not self._stop.is_set():
            event = get()
            if event is None:
                self._stop.wait(POLL_S)
                continue
            try:
                msg = mido.Message.from_bytes(event[0])
            except (ValueError, IndexError):  # IndexError: no bytes at all
                continue  # as mido: an invalid message is ignored
            self._on_message(msg)

    def close(self) -> None:
        """Stop taking messages, then close the port (never while the thread reads it)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._rt.close_port()
        if self._owned:
            self._rt.delete()
            return
        # The controller's client is kept for its return: what rtmidi queued before the
        # port closed must not act then (a cue pad pressed minutes before).
        while self._rt.get_message() is not None:
            pass


class _Port:
    """One output port opened on a :class:`_Controller` client: what mido's ports offer us."""

    def __init__(self, rt: Any, name: str) -> None:
        self._rt = rt
        self.name = name

    def send(self, msg: Any) -> None:
        self._rt.send_message(msg.bytes())

    def close(self) -> None:
        self._rt.close_port()


def open_virtual_input(api: str | None, name: str, on_message: Any) -> _Input:
    """A virtual input port ``name`` on a client of its own, as mido's backend names it."""
    import rtmidi

    rt = rtmidi.MidiIn(rtapi=_rtapi(api))
    try:
        rt.open_virtual_port(name)
        rt.ignore_types(False, False, True)  # as mido: keep sysex and clock
    except BaseException:
        rt.delete()
        raise
    return _Input(rt, name, on_message, owned=True)


class _Controller:
    """A hardware controller's input and LED output on rtmidi clients kept for the session
    (see the module docstring: a new JACK client per check stalls every thread)."""

    def __init__(self, api: str | None, on_message: Any) -> None:
        import rtmidi

        rtapi = _rtapi(api)
        self._in = rtmidi.MidiIn(rtapi=rtapi)
        self._out = rtmidi.MidiOut(rtapi=rtapi)
        self._in.ignore_types(False, False, True)  # as mido: keep sysex and clock
        self._on_message = on_message

    def input_names(self) -> list[str]:
        return list(self._in.get_ports())

    def output_names(self) -> list[str]:
        return list(self._out.get_ports())

    def open_input(self, name: str) -> _Input:
        self._in.open_port(self.input_names().index(name))
        return _Input(self._in, name, self._on_message)

    def open_output(self, name: str) -> _Port:
        self._out.open_port(self.output_names().index(name))
        return _Port(self._out, name)

    def delete(self) -> None:
        for rt in (self._in, self._out):
            rt.close_port()
            rt.delete()


class MidiControl:
    """Runs a map against a daemon's registry.

    Parameters
    ----------
    host : Host
        The daemon: its registry, engine, transport, post and scenes.
    port : str, optional
        Input port name prefix (a hardware controller); its output twin gets LEDs.
    virtual : str, optional
        Create virtual input and output ports with this name.
    """

    def __init__(
        self,
        host: Host,
        midi_map: MidiMap,
        *,
        port: str | None = None,
        virtual: str | None = None,
        api: str | None = None,
    ) -> None:
        if (port is None) == (virtual is None):
            raise ParameterError("give --midi PORT or --midi-virtual NAME")
        self.host = host
        self.map = midi_map
        self.mapper = MidiMapper(
            midi_map, self._get_norm, lambda: host.engine.rolling, self._get_transport
        )
        self.port_prefix = port
        self.virtual = virtual
        try:
            self.backend = mido.Backend(backend_name(api), load=True)
        except (ImportError, AttributeError, OSError) as exc:
            raise ParameterError(f"MIDI backend unavailable: {exc}") from None
        self.controller: _Controller | None = None
        self.inport: Any = None
        self.outport: Any = None
        self.received = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._leds: dict[tuple[str, int, int], int] = {}
        self._learn_save: str | None = None
        self._threads = [
            threading.Thread(target=self._watch, name="stemdeck-midi", daemon=True),
            threading.Thread(target=self._feedback, name="stemdeck-midi-leds", daemon=True),
        ]

    # -- ports -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.virtual is None:
            try:
                self.controller = _Controller(self.backend.api, self._on_message)
            except Exception as exc:  # rtmidi raises its own types
                raise ParameterError(f"cannot open MIDI port: {exc}") from None
        self._open()
        if self.inport is None:
            log.warning("MIDI input %r not found; waiting for it", self.port_prefix)
        for t in self._threads:
            t.start()

    def _find(self, names: list[str]) -> str | None:
        assert self.port_prefix is not None
        for n in names:
            if n.startswith(self.port_prefix) or self.port_prefix in n:
                return n
        return None

    def _open(self) -> None:
        try:
            if self.virtual is not None:
                self.inport = open_virtual_input(self.backend.api, self.virtual, self._on_message)
                self.outport = self.backend.open_output(self.virtual, virtual=True)
            else:
                assert self.controller is not None
                name = self._find(self.controller.input_names())
                if name is None:
                    return
                self.inport = self.controller.open_input(name)
                out = self._find(self.controller.output_names())
                self.outport = self.controller.open_output(out) if out else None
            log.info(
                "MIDI: %s (map %s)%s",
                self.inport.name,
                self.map.name,
                "" if self.outport else ", no LED output",
            )
            self._leds.clear()  # the controller gets the whole state
        except Exception as exc:  # rtmidi raises its own types
            raise ParameterError(f"cannot open MIDI port: {exc}") from None

    def _close(self) -> None:
        for p in (self.inport, self.outport):
            try:
                if p is not None:
                    p.close()
            except Exception:
                pass
        self.inport = self.outport = None

    def _watch(self) -> None:
        """Notice an unplugged controller and reopen it when it returns."""
        while not self._stop.wait(1.0):
            if self.virtual is not None:
                continue
            try:
                assert self.controller is not None
                present = self._find(self.controller.input_names()) is not None
            except Exception:
                present = False
            if self.inport is not None and not present:
                log.warning(
                    "MIDI controller %r unplugged; still playing, waiting for it", self.port_prefix
                )
                self._close()
            elif self.inport is None and present:
                try:
                    self._open()
                except StemdeckError as exc:
                    log.warning("%s", exc)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2)
        self._close()
        if self.controller is not None:
            self.controller.delete()
            self.controller = None

    # -- input -----------------------------------------------------------------------------
    def _get_norm(self, address: str) -> float:
        keys = self.host.registry.resolve(track_target(address, self.host.registry.names))
        return float(self.host.registry.get_norm(keys[0]))

    def _get_transport(self, name: str) -> float:
        """``rate``, ``pitch`` or ``keylock`` as ``/transport/<name>`` answers it."""
        return float(self.host.transport.value(name)[0])

    def _on_message(self, msg: Any) -> None:
        """The input's thread (:class:`_Input`): decode, map, apply. Never raises."""
        self.received += 1
        try:
            if msg.type == "control_change":
                decoded = ("cc", msg.channel, msg.control, msg.value)
            elif msg.type in ("note_on", "note_off"):
                decoded = (msg.type, msg.channel, msg.note, msg.velocity)
            elif msg.type == "program_change":
                decoded = ("program_change", msg.channel, msg.program, 0)
            else:
                return
            with self._lock:
                actions = self.mapper.handle(*decoded, time.monotonic())
            for verb, address, args in actions:
                self._apply(verb, address, args)
        except StemdeckError as exc:
            self.errors += 1
            log.debug("MIDI %s: %s", msg, exc)
        except Exception as exc:
            self.errors += 1
            log.warning("MIDI message %s failed: %r", msg, exc)

    def _apply(self, verb: str, address: str, args: list[Any]) -> None:
        if verb in ("norm", "set"):
            address = track_target(address, self.host.registry.names)
            with self.host.registry.transaction() as txn:
                if verb == "norm":
                    txn.set_norm(address, args[0])
                else:
                    txn.set(address, args)
                posted = txn.commit(self.host.quantize.poster(txn.written, self.host.post))
            if not posted:
                # A controller sends a stream: counted, logged quietly, never a flood.
                self.errors += 1
                log.debug("MIDI %s: engine queue full; not applied", address)
        elif verb == "learned":
            self._save_learned()
            log.info("MIDI learn: bound %s", address)
        else:
            self._action(address, args)

    def _action(self, address: str, args: list[Any]) -> None:
        if address.startswith("/transport/"):
            # as OSC: a loop or roll in beats on the grid, a beat jump (docs/quantize.md),
            # the rate, the pitch, keylock (the same checks and the same feedback)
            command = self.host.transport.command(address[len("/transport/") :], args)
            if isinstance(command, Led):  # a sync leader's (a Link session's tempo, start)
                command.run()
            elif command is not None and not self.host.post(command):
                raise ParameterError(f"{address}: engine queue full; not applied")
        elif address.startswith("/cue/"):
            self._cue(address)
        elif address == "/scene/recall":
            try:
                self.host.recall_scene(str(args[0]), float(args[1]) if len(args) > 1 else 0.0)
            except StemdeckError as exc:
                log.warning("MIDI scene recall: %s", exc)
        elif address == "/scene/save":
            self.host.save_scene(str(args[0]))
        elif address == "/track/grid/tap":  # no grid yet: counted as a MIDI error
            self.host.beats.tap(self.host.transport.heard())

    def _cue(self, address: str) -> None:
        """A hot cue's pad, through the same handler as OSC's ``/cue/N/...``: set at the
        head (snapped with quantize), clear, or jump on the grid with the cue's scene."""
        with self.host.registry.transaction() as txn:
            group = Group(("midi", 0), txn, Plan(), dry=False)
            CueHandlers(self.host).handle(address, [], group)
        for _, run in group.plan.after:
            run()

    # -- learn -----------------------------------------------------------------------------
    def learn(self, address: str, args: Sequence[Any] = ()) -> None:
        """Bind the next control moved to ``address`` (with ``args``: a loop's or a
        jump's beats, a scene's name) and save it in the user's map. A bad address
        or argument is an error now, not when the control moves."""
        check_learn(address, args, self.host.registry.resolve)
        with self._lock:
            self.mapper.learning = address
            self.mapper.learning_args = tuple(args)
        log.info("MIDI learn: move a control for %s", address)

    def _save_learned(self) -> None:
        folder = config_dir("midi")
        m = self.mapper.map
        lines = [f"# {m.name}: saved by stemdeck MIDI learn", f'name = "{m.name}"', ""]
        if m.programs:
            lines.append("[programs]")
            lines += [f'{k} = "{v}"' for k, v in sorted(m.programs.items())]
            lines.append("")
        text = "\n".join(lines) + "\n" + "\n".join(binding_toml(b) for b in m.bindings)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{m.name}.toml.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, folder / f"{m.name}.toml")
        except OSError as exc:
            log.warning("MIDI learn: cannot save %s: %s", folder, exc.strerror)

    # -- LEDs ------------------------------------------------------------------------------
    def _feedback(self) -> None:
        """Echo switch states (mute, solo) to the controller when they change."""
        while not self._stop.wait(0.05):
            out = self.outport
            if out is None:
                continue
            try:
                for kind, channel, number, value in self.mapper.led_messages():
                    key = (kind, channel, number)
                    if self._leds.get(key) == value:
                        continue
                    self._leds[key] = value
                    if kind == "note":
                        out.send(
                            mido.Message("note_on", channel=channel, note=number, velocity=value)
                        )
                    else:
                        out.send(
                            mido.Message(
                                "control_change", channel=channel, control=number, value=value
                            )
                        )
            except (StemdeckError, PresetError):
                continue
            except Exception as exc:
                log.debug("MIDI LED feedback: %r", exc)
