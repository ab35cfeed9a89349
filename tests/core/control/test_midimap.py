"""MIDI maps and the mapper's modes, without devices."""

from pathlib import Path

import pytest
from registry_helpers import commit, set_value

from stemdeck.core.control.bindings import Binding, binding_toml, learn_binding
from stemdeck.core.control.midimap import (
    LONG_PRESS_S,
    MidiMap,
    MidiMapper,
    load_midi_map,
    parse_midi_map,
    track_target,
)
from stemdeck.core.control.registry import Registry, Transaction
from stemdeck.core.errors import ParameterError, PresetError
from stemdeck.core.separation.presets import list_presets

SHIPPED = {"generic", "nanokontrol2", "midimix", "launchcontrol-xl", "x-touch-mini"}


def test_every_shipped_map_loads_and_resolves() -> None:
    """On a components track (no roles: strips 1-4 are channels 1-4) and on a stem
    track with the four roles (strips 1-4 are its stems, 5-8 its other channels)."""
    assert SHIPPED <= set(list_presets("midi"))
    components = Registry([f"component_{i:02d}" for i in range(1, 9)])
    stems = Registry(["drums", "bass", "other", "vocals", "fx", "pad", "lead", "noise"])
    for name in list_presets("midi"):
        m = load_midi_map(name)
        assert m.bindings, name
        for b in m.bindings:
            if b.target.startswith(("/ch/", "/master/")):
                for reg in (components, stems):
                    assert reg.resolve(track_target(b.target, reg.names)), (name, b)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "[[binding]]\ncc = 1\ntarget = '/ch/1/fader'\nmode = 'wobble'",
            "binding 1: mode 'wobble'",
        ),
        ("[[binding]]\ncc = 200\ntarget = '/ch/1/fader'", "binding 1: cc/note must be 0..127"),
        ("[[binding]]\ncc = 1\nnote = 2\ntarget = '/ch/1/fader'", "exactly one of cc"),
        (
            "[[binding]]\ncc = 1\ntarget = '/ch/1/fader'\n"
            "[[binding]]\ncc = 1\ntarget = '/ch/2/fader'",
            "binding 2: cc 1 on channel 1 is already bound by binding 1",
        ),
        ("[[binding]]\ncc = 1\ntarget = '/ch/1/fader'\nmode = 'absolute14'", "absolute14 needs"),
        ("[[binding]]\nnote = 1\ntarget = '/scene/recall'", "needs args"),
        ("[[binding]]\nnote = 1\ntarget = '/launch/missiles'", "unknown target"),
        ("[[binding]]\ncc = 1\nchannel = 17\ntarget = '/ch/1/fader'", "channel must be 1..16"),
        ("[programs]\n0 = 'x'", "programs.0"),
        ("name = ", "not valid TOML"),
    ],
)
def test_bad_map_names_file_entry_and_reason(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(PresetError, match=reason) as info:
        load_midi_map(str(path))
    assert str(path) in str(info.value)


def mapper(text: str, names: int = 4) -> tuple[MidiMapper, Registry]:
    reg = Registry([f"c{i}" for i in range(names)])

    def get_norm(address: str) -> float:
        return reg.get_norm(reg.resolve(address)[0])

    return MidiMapper(parse_midi_map(text, "test.toml"), get_norm), reg


def apply(reg: Registry, actions: list) -> None:
    for verb, address, args in actions:
        if verb == "norm":

            def stage(txn: Transaction, address: str = address, x: float = args[0]) -> None:
                txn.set_norm(address, x)

            commit(reg, stage)
        elif verb == "set":
            set_value(reg, address, args)


FADER = "[[binding]]\ncc = 7\ntarget = '/ch/1/fader'\n"


def test_absolute_soft_takeover() -> None:
    m, reg = mapper(FADER)  # the channel sits at unity: fader 0.75 (CC ~95)
    assert m.handle("cc", 0, 7, 10, 0.0) == []  # far below: ignored
    assert m.handle("cc", 0, 7, 40, 0.0) == []
    out = m.handle("cc", 0, 7, 96, 0.0)  # reached the value: picked up
    assert out and out[0][2][0] == pytest.approx(96 / 127)
    apply(reg, out)
    apply(reg, m.handle("cc", 0, 7, 20, 0.0))  # fast move after pick-up still follows
    assert reg.get_norm("/ch/1/fader") == pytest.approx(20 / 127)
    set_value(reg, "/ch/1/fader", [0.75])  # changed elsewhere (OSC, scene): pick up again
    assert m.handle("cc", 0, 7, 21, 0.0) == []
    assert m.handle("cc", 0, 7, 120, 0.0)  # jumped across the value: crossing picks up


def test_fourteen_bit_pair() -> None:
    m, reg = mapper("[[binding]]\ncc = 1\nlsb = 33\ntarget = '/ch/2/fader'\nmode = 'absolute14'\n")
    msb, lsb = divmod(round(0.75 * 16383), 128)
    assert m.handle("cc", 0, 1, msb, 0.0) == []  # MSB alone waits for its LSB
    out = m.handle("cc", 0, 33, lsb, 0.0)
    assert out[0][2][0] == pytest.approx(0.75, abs=1e-4)
    apply(reg, out)
    apply(reg, m.handle("cc", 0, 1, 64, 0.0) + m.handle("cc", 0, 33, 5, 0.0))
    assert reg.get_norm("/ch/2/fader") == pytest.approx((64 * 128 + 5) / 16383, abs=1e-6)


@pytest.mark.parametrize(("mode", "up", "down"), [("relative2c", 3, 125), ("relative64", 67, 61)])
def test_relative_encoders(mode: str, up: int, down: int) -> None:
    m, reg = mapper(f"[[binding]]\ncc = 9\ntarget = '/ch/1/pan'\nmode = '{mode}'\n")
    apply(reg, m.handle("cc", 0, 9, up, 0.0))
    assert reg.get("/ch/1/pan") == pytest.approx(2 * (0.5 + 3 / 127) - 1)
    apply(reg, m.handle("cc", 0, 9, down, 0.0))
    apply(reg, m.handle("cc", 0, 9, down, 0.0))
    assert reg.get("/ch/1/pan") == pytest.approx(2 * (0.5 - 3 / 127) - 1)


def test_toggle_momentary_and_press() -> None:
    m, reg = mapper(
        "[[binding]]\nnote = 1\ntarget = '/ch/1/mute'\nmode = 'toggle'\n"
        "[[binding]]\nnote = 2\ntarget = '/ch/2/mute'\nmode = 'momentary'\n"
        "[[binding]]\nnote = 3\ntarget = '/ch/3/solo'\nmode = 'press'\n"
    )
    apply(reg, m.handle("note_on", 0, 1, 127, 0.0))
    apply(reg, m.handle("note_off", 0, 1, 0, 0.1))
    assert reg.get("/ch/1/mute") == 1
    apply(reg, m.handle("note_on", 0, 1, 127, 0.2))
    assert reg.get("/ch/1/mute") == 0
    apply(reg, m.handle("note_on", 0, 2, 127, 0.0))
    assert reg.get("/ch/2/mute") == 1
    apply(reg, m.handle("note_off", 0, 2, 0, 0.05))
    assert reg.get("/ch/2/mute") == 0
    # press: short = toggle (stays on)
    apply(reg, m.handle("note_on", 0, 3, 127, 1.0))
    apply(reg, m.handle("note_off", 0, 3, 0, 1.0 + LONG_PRESS_S / 3))
    assert reg.get("/ch/3/solo") == 1
    # press: held long = momentary (back off on release)
    apply(reg, m.handle("note_on", 0, 3, 127, 2.0))
    assert reg.get("/ch/3/solo") == 0
    apply(reg, m.handle("note_on", 0, 3, 0, 2.0 + 2 * LONG_PRESS_S))  # velocity 0 = off
    assert reg.get("/ch/3/solo") == 1


def test_program_change_and_triggers() -> None:
    m, _ = mapper(
        "[programs]\n1 = 'verse'\n"
        "[[binding]]\nnote = 9\ntarget = '/transport/toggle'\n"
        "[[binding]]\nnote = 10\ntarget = '/scene/recall'\nargs = ['drop']\n"
    )
    assert m.handle("program_change", 0, 0, 0, 0.0) == [("action", "/scene/recall", ["verse"])]
    assert m.handle("program_change", 0, 4, 0, 0.0) == [("action", "/scene/recall", ["program-5"])]
    assert m.handle("note_on", 0, 9, 100, 0.0) == [("action", "/transport/toggle", [])]
    assert m.handle("note_off", 0, 9, 0, 0.0) == []
    assert m.handle("note_on", 0, 10, 1, 0.0) == [("action", "/scene/recall", ["drop"])]


def test_learn_binds_the_next_control() -> None:
    m, _ = mapper(FADER)
    m.learning = "/ch/3/fader"
    assert m.handle("cc", 2, 44, 10, 0.0) == [("learned", "/ch/3/fader", [])]
    assert m.learned is not None and (m.learned.channel, m.learned.number) == (2, 44)
    assert m.handle("cc", 2, 44, 95, 0.0)  # now bound (and picked up near unity)


def _learned(target: str, args: tuple = (), *moves: tuple[str, int, int]) -> list[object]:
    """What MIDI learn answers to each of ``moves`` (kind, channel, number) while it
    learns ``target``; the binding made last is ``m.learned``."""
    m, _ = mapper(FADER)
    m.learning, m.learning_args = target, args
    out: list[object] = [m.handle(kind, ch, n, 100, 0.0) for kind, ch, n in moves]
    return [*out, m.learned, m.learning]


@pytest.mark.parametrize(
    ("target", "args", "kind", "toml"),
    [
        # a rate fader: a pad does not bind it, the next fader does (the default range)
        (
            "/transport/rate",
            (),
            "cc",
            'cc = 20\nchannel = 3\ntarget = "/transport/rate"\n'
            'mode = "absolute"\nled = false\nrange = 0.08',
        ),
        (
            "/transport/pitch",
            (),
            "cc",
            'cc = 20\nchannel = 3\ntarget = "/transport/pitch"\nmode = "absolute"\nled = false',
        ),
        (
            "/transport/keylock",
            (),
            "note",
            'note = 20\nchannel = 3\ntarget = "/transport/keylock"\nmode = "toggle"\nled = true',
        ),
        (
            "/transport/play",
            (),
            "note",
            'note = 20\nchannel = 3\ntarget = "/transport/play"\nmode = "trigger"\nled = false',
        ),
        (
            "/transport/loop/beats",
            (4,),
            "note",
            "note = 20\nchannel = 3\ntarget = "
            '"/transport/loop/beats"\nmode = "trigger"\nargs = [4]\nled = false',
        ),
        (
            "/transport/roll",
            (0.25,),
            "note",
            "note = 20\nchannel = 3\ntarget = "
            '"/transport/roll"\nmode = "momentary"\nargs = [0.25]\nled = false',
        ),
        (
            "/cue/3/jump",
            (),
            "cc",
            'cc = 20\nchannel = 3\ntarget = "/cue/3/jump"\nmode = "trigger"\nled = false',
        ),
        (
            "/scene/recall",
            ("drop",),
            "note",
            "note = 20\nchannel = 3\ntarget = "
            '"/scene/recall"\nmode = "trigger"\nargs = ["drop"]\nled = false',
        ),
        (
            "/ch/2/mute",
            (),
            "note",
            'note = 20\nchannel = 3\ntarget = "/ch/2/mute"\nmode = "toggle"\nled = true',
        ),
    ],
)
def test_learn_binds_a_transport_value_an_action_or_a_scene_as_a_map_would(
    target: str, args: tuple, kind: str, toml: str
) -> None:
    """The binding learned is the one a map file with the saved entry loads, and a
    control that cannot drive the target (a pad for a fader) binds nothing."""
    if kind == "cc":
        moves = (
            [("note_on", 2, 9), ("cc", 2, 20)]
            if target.startswith("/transport/")
            else [("cc", 2, 20)]
        )
    else:
        moves = [("note_on", 2, 20)]
    *answers, learned, learning = _learned(target, args, *moves)
    assert answers[-1] == [("learned", target, [])]
    assert answers[:-1] == [[]] * (len(moves) - 1)
    assert learning is None
    assert isinstance(learned, Binding)
    saved = binding_toml(learned)
    assert saved == f"[[binding]]\n{toml}\n"
    (loaded,) = parse_midi_map(saved, "saved.toml").bindings
    assert loaded == learned


def test_a_pad_works_while_a_fader_is_learned() -> None:
    """Learning the rate waits for a fader; a pad pressed meanwhile does what it is
    bound to (a pads-only controller is not silenced by a learn it cannot finish)."""
    m, _ = mapper("[[binding]]\nnote = 9\ntarget = '/transport/toggle'\n")
    m.learning = "/transport/rate"
    assert m.handle("note_on", 0, 9, 100, 0.0) == [("action", "/transport/toggle", [])]
    assert m.learning == "/transport/rate"
    assert m.handle("cc", 0, 20, 64, 0.0) == [("learned", "/transport/rate", [])]


@pytest.mark.parametrize(
    ("target", "args", "error"),
    [
        (
            "/transport/beatjump",
            (),
            "/transport/beatjump needs args = [non-zero beats] within -1024..1024, got []",
        ),
        ("/transport/nope", (), "unknown action '/transport/nope'"),
        ("/scene/recall", (), '/scene/recall needs args = ["scene name", fade s]'),
        ("/scene/recall", ("drop", 1e300), "/scene/recall: fade must be 0..600 s, got 1e+300"),
        (
            "/scene/save",
            ("../x",),
            "/scene/save: scene name '../x': use letters, digits, space, _ . -",
        ),
        (
            "/scene/recall",
            ("🎵",),
            "/scene/recall: scene name '🎵': use letters, digits, space, _ . -",
        ),
        ("/transport/play", (1,), "/transport/play takes no args"),
        ("/cue/3/jump", ("whatever", 5), "/cue/3/jump takes no args"),
        ("/ch/*/fader", (), "/ch/*/fader: MIDI learn binds one control, not a pattern"),
        (
            '/ch/{drums,"}/fader',
            (),
            '/ch/{drums,"}/fader: MIDI learn binds one control, not a pattern',
        ),
        ("/transport/rate", (1,), "/transport/rate takes no args"),
        (
            "/transport/loop/beats",
            (b"4",),
            "/transport/loop/beats: an argument must be a number or a name, got b'4'",
        ),
        (
            "/transport/loop/beats",
            (float("nan"),),
            "/transport/loop/beats: an argument must be a number or a name, got nan",
        ),
    ],
)
def test_learn_refuses_what_no_map_may_hold(target: str, args: tuple, error: str) -> None:
    with pytest.raises(ParameterError) as caught:
        learn_binding(target, args, "cc", 0, 0)
    assert str(caught.value) == error


def test_led_state() -> None:
    m, reg = mapper(
        "[[binding]]\nnote = 1\ntarget = '/ch/1/mute'\n"
        "[[binding]]\nnote = 2\ntarget = '/ch/9/mute'\n"
    )  # no channel 9: skipped
    assert m.led_messages() == [("note", 0, 1, 0)]
    set_value(reg, "/ch/1/mute", [True])
    assert m.led_messages() == [("note", 0, 1, 127)]


def test_map_type() -> None:
    """The generic map is what its header says, binding for binding."""
    m = load_midi_map("generic")
    assert type(m) is MidiMap
    assert (m.name, m.source, m.program_channel) == ("generic", "midi/generic.toml", None)
    assert m.programs == {1: "unity", 2: "acapella", 3: "instrumental"}
    strip = ["drums", "bass", "other", "vocals", "5", "6", "7", "8"]  # stems by role
    expected = [
        *(("cc", 20 + i, f"/ch/{strip[i]}/fader", "absolute", False) for i in range(8)),
        *(("cc", 28 + i, f"/ch/{strip[i]}/pan", "absolute", False) for i in range(8)),
        ("cc", 36, "/master/fader", "absolute", False),
        *(("note", 36 + i, f"/ch/{strip[i]}/mute", "toggle", True) for i in range(8)),
        *(("note", 44 + i, f"/ch/{strip[i]}/solo", "press", True) for i in range(8)),
        ("note", 52, "/transport/toggle", "trigger", True),
        ("note", 53, "/track/grid/tap", "trigger", False),
        ("note", 54, "/transport/loop/beats", "trigger", False),
        ("note", 55, "/transport/loop/off", "trigger", False),
        ("note", 56, "/transport/loop/halve", "trigger", False),
        ("note", 57, "/transport/loop/double", "trigger", False),
        ("note", 58, "/transport/beatjump", "trigger", False),
        ("note", 59, "/transport/beatjump", "trigger", False),
        ("note", 60, "/transport/roll", "momentary", False),
        *(("note", 61 + i, f"/cue/{i + 1}/jump", "trigger", False) for i in range(4)),
        ("cc", 37, "/transport/rate", "absolute", False),
        ("cc", 38, "/transport/pitch", "absolute", False),
        ("note", 65, "/transport/keylock", "toggle", True),
    ]
    assert [(b.kind, b.number, b.target, b.mode, b.led) for b in m.bindings] == expected
    # the rate fader: +/-8 %, + at the top; the pitch knob in whole semitones
    assert [
        (b.range, b.invert, b.fine) for b in m.bindings if b.kind == "cc" and b.number in (37, 38)
    ] == [
        (0.08, False, False),
        (None, False, False),
    ]
    # all on MIDI channel 1, plain 7-bit values; the beats of the actions in beats
    assert {(b.channel, b.lsb) for b in m.bindings} == {(0, None)}
    assert {b.number: b.args for b in m.bindings if b.args} == {
        54: (4,),
        58: (-4,),
        59: (4,),
        60: (0.5,),
    }


def test_transport_leds_follow_the_transport() -> None:
    playing = [True]
    m = MidiMapper(
        parse_midi_map(
            "[[binding]]\ncc = 41\ntarget = '/transport/play'\nled = true\n"
            "[[binding]]\ncc = 42\ntarget = '/transport/stop'\nled = true\n",
            "t.toml",
        ),
        lambda a: 0.0,
        lambda: playing[0],
    )
    assert m.led_messages() == [("cc", 0, 41, 127), ("cc", 0, 42, 0)]
    playing[0] = False
    assert m.led_messages() == [("cc", 0, 41, 0), ("cc", 0, 42, 127)]


def test_shipped_maps_put_the_filter_on_the_knobs() -> None:
    """Launch Control XL: Send A knobs filter, Send B knobs echo send; X-Touch Mini:
    layer B encoders; nanoKONTROL2: its knobs. Each the channel of its strip."""
    strip = ["drums", "bass", "other", "vocals", "5", "6", "7", "8"]  # stems by role
    expected = {
        "launchcontrol-xl": {
            **{(9, 13 + i): f"/ch/{strip[i]}/filter" for i in range(8)},
            **{(9, 29 + i): f"/ch/{strip[i]}/echo" for i in range(8)},
        },
        "x-touch-mini": {(11, 11 + i): f"/ch/{strip[i]}/filter" for i in range(8)},
        "nanokontrol2": {(1, 16 + i): f"/ch/{strip[i]}/filter" for i in range(8)},
    }
    for name, want in expected.items():
        fx = {
            (b.channel + 1, b.number): b.target
            for b in load_midi_map(name).bindings
            if b.target.endswith(("/filter", "/echo"))
        }
        assert fx == want, name


def test_the_midimix_middle_knob_row_is_the_reverb_send() -> None:
    """The MIDImix's spare middle knob row (CC 17 21 25 29 47 51 55 59, factory
    settings) sends each strip's channel to the reverb, 0..127 as 0..1 once the
    knob has picked the send up; no other
    shipped map binds the reverb (their knob rows are taken)."""
    strip = ["drums", "bass", "other", "vocals", "5", "6", "7", "8"]
    ccs = [17, 21, 25, 29, 47, 51, 55, 59]
    for name in SHIPPED:
        sends = {
            (b.channel + 1, b.number): b.target
            for b in load_midi_map(name).bindings
            if b.target.endswith("/reverb")
        }
        want = {(1, c): f"/ch/{s}/reverb" for c, s in zip(ccs, strip, strict=True)}
        assert sends == (want if name == "midimix" else {}), name
    m, reg = mapper("[[binding]]\ncc = 17\ntarget = '/ch/1/reverb'\nmode = 'absolute'\n")
    apply(reg, m.handle("cc", 0, 17, 0, 0.0))  # picked up where the send stands
    apply(reg, m.handle("cc", 0, 17, 127, 0.0))
    assert reg.get("/ch/1/reverb") == 1.0
    apply(reg, m.handle("cc", 0, 17, 64, 0.0))
    assert reg.get("/ch/1/reverb") == 64 / 127


def test_a_filter_knob_at_its_centre_is_off() -> None:
    """A knob picks the filter up at its centre (64 of 0..127, where the value 0 sits)
    and leaves it exactly at 0 there: a true bypass; the ends are -1 and 1."""
    m, reg = mapper("[[binding]]\ncc = 16\ntarget = '/ch/1/filter'\nmode = 'absolute'\n")
    apply(reg, m.handle("cc", 0, 16, 64, 0.0))
    assert reg.get("/ch/1/filter") == 0.0
    apply(reg, m.handle("cc", 0, 16, 127, 0.0))
    assert reg.get("/ch/1/filter") == 1.0
    apply(reg, m.handle("cc", 0, 16, 0, 0.0))
    assert reg.get("/ch/1/filter") == -1.0
