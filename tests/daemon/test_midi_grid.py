"""Loops, beat jumps, rolls and hot cues from a MIDI controller (issue 23): the shipped
maps' pads act exactly as the same OSC messages do (tests/daemon/osc/test_osc_beat_loops.py,
test_osc_cues.py), and a map's bad action is one exact error when it loads.

In-process on the real registry and mixer (``tests/osc_host.py``, 8 kHz, blocks of 64);
the X-Touch Mini's layer B (MIDI channel 11): encoder pushes 24-31 set cues 1-8, top
buttons 32-39 jump to them, bottom buttons 40-47 loop 1, 2, 4, 8 beats, loop off, halve,
double, and roll 1/4 beat while held.
"""

from __future__ import annotations

import mido
import pytest
from osc_host import BLOCK, PROBE_GRID, FakeHost, probe_host, render

from stemdeck.core.control.bindings import Binding
from stemdeck.core.control.midimap import MidiMapper, load_midi_map, parse_midi_map
from stemdeck.core.errors import PresetError
from stemdeck.daemon.midi import MidiControl

GRID = PROBE_GRID  # a beat every 0.5 s (4000 frames) from 0.3 s
BEAT = 4000
XTOUCH = 10  # MIDI channel 11, as mido counts


def pad(midi: MidiControl, note: int, *, held: bool = False) -> None:
    midi._on_message(mido.Message("note_on", channel=XTOUCH, note=note, velocity=127))
    if not held:
        midi._on_message(mido.Message("note_off", channel=XTOUCH, note=note))


@pytest.fixture
def rig() -> tuple[FakeHost, MidiControl]:
    host = probe_host()
    render(host, 100)  # head at 6400 frames (0.8 s): on the beat from 0.8 s
    midi = MidiControl(host, load_midi_map("x-touch-mini"), virtual="stemdeck-test")
    return host, midi


def test_loop_pads_loop_halve_double_and_end(rig: tuple[FakeHost, MidiControl]) -> None:
    host, midi = rig
    head = host.engine.position
    pad(midi, 42)  # 4 beats, quantize off: from the head
    render(host, 1)
    assert host.engine.loop == (head, head + 4 * BEAT)
    pad(midi, 45)  # halve
    render(host, 1)
    assert host.engine.loop == (head, head + 2 * BEAT)
    for _ in range(2):  # double, twice
        pad(midi, 46)
        render(host, 1)
    assert host.engine.loop == (head, head + 8 * BEAT)
    pad(midi, 44)  # loop off
    render(host, 1)
    assert host.engine.loop is None
    assert (midi.received, midi.errors) == (10, 0)


def test_a_roll_pad_rolls_while_held_and_returns(rig: tuple[FakeHost, MidiControl]) -> None:
    host, midi = rig
    plain = probe_host()
    render(plain, 100)
    pad(midi, 47, held=True)  # a 1/4-beat roll on the grid point at or before the head
    render(host, 1)
    assert host.engine.loop == (6400, 6400 + BEAT // 4)
    render(host, 50)
    render(plain, 51)
    midi._on_message(mido.Message("note_off", channel=XTOUCH, note=47))  # the release
    render(host, 1)
    render(plain, 1)
    assert host.engine.loop is None
    assert host.engine.position == plain.engine.position  # where it would have been
    assert (midi.received, midi.errors) == (2, 0)


def test_cue_pads_set_and_jump(rig: tuple[FakeHost, MidiControl]) -> None:
    host, midi = rig
    pad(midi, 26)  # push 3: set cue 3 at the head, 0.8 s
    cue = host.beats.cue(3)
    assert cue is not None and cue.position == 0.8 and cue.scene is None
    render(host, 100)
    pad(midi, 34)  # top button 3: jump to cue 3 (quantize off: at once)
    render(host, 1)
    assert host.engine.position == 6400 + BLOCK
    pad(midi, 35)  # cue 4 is not set: one MIDI error, nothing moves
    render(host, 1)
    assert host.engine.position == 6400 + 2 * BLOCK
    assert (midi.received, midi.errors) == (6, 1)


def test_a_beat_jump_from_the_nanokontrol2(rig: tuple[FakeHost, MidiControl]) -> None:
    host, _ = rig
    midi = MidiControl(host, load_midi_map("nanokontrol2"), virtual="stemdeck-test")
    head = host.engine.position
    midi._on_message(mido.Message("control_change", channel=0, control=59, value=127))
    midi._on_message(mido.Message("control_change", channel=0, control=59, value=0))
    render(host, 1)
    assert host.engine.position == head + 4 * BEAT + BLOCK
    assert (midi.received, midi.errors) == (2, 0)


def test_a_roll_is_held_and_ends_with_zero_beats() -> None:
    m = parse_midi_map(
        '[[binding]]\nnote = 60\ntarget = "/transport/roll"\nmode = "trigger"\nargs = [0.5]\n',
        "t.toml",
    )
    assert m.bindings == [
        Binding("note", 0, 60, "/transport/roll", "momentary", (0.5,), None, True)
    ]
    mapper = MidiMapper(m, get_norm=lambda key: 0.0)
    assert mapper.handle("note_on", 0, 60, 100, 0.0) == [("action", "/transport/roll", [0.5])]
    assert mapper.handle("note_off", 0, 60, 0, 0.1) == [("action", "/transport/roll", [0.0])]


@pytest.mark.parametrize(
    ("target", "args", "error"),
    [
        (
            "/transport/loop/beats",
            None,
            "/transport/loop/beats needs args = [beats] within 0.03125..64, got []",
        ),
        (
            "/transport/loop/beats",
            [128],
            "/transport/loop/beats needs args = [beats] within 0.03125..64, got [128]",
        ),
        (
            "/transport/roll",
            ['"1"'],
            "/transport/roll needs args = [beats] within 0.03125..64, got ['1']",
        ),
        (
            "/transport/beatjump",
            [0],
            "/transport/beatjump needs args = [non-zero beats] within -1024..1024, got [0]",
        ),
        (
            "/transport/beatjump",
            ["nan"],
            "/transport/beatjump needs args = [non-zero beats] within -1024..1024, got [nan]",
        ),
        ("/cue/9/jump", None, "unknown action '/cue/9/jump'"),
        ("/cue/1/scene", None, "unknown action '/cue/1/scene'"),
        ("/cue/1", None, "unknown action '/cue/1'"),
    ],
)
def test_a_bad_grid_action_is_one_exact_error(target: str, args: list | None, error: str) -> None:
    text = f'[[binding]]\nnote = 60\ntarget = "{target}"\n'
    if args is not None:
        text += "args = [" + ", ".join(str(a) for a in args) + "]\n"
    with pytest.raises(PresetError) as info:
        parse_midi_map(text, "t.toml")
    assert str(info.value) == f"t.toml: binding 1: {error}"
