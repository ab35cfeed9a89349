"""A map's rate fader, pitch knob or encoder and keylock button (issue 23, item 8), without
devices: CC values to exact rates and semitones, the centre's detent, 14 bits, soft
takeover, an engine that applies a value a block later, and the maps refused at load."""

from __future__ import annotations

from typing import Any

import pytest

from stemdeck.core.control.bindings import Binding, binding_toml
from stemdeck.core.control.midimap import (
    PENDING_S,
    MidiMapper,
    load_midi_map,
    parse_midi_map,
)
from stemdeck.core.errors import PresetError
from stemdeck.core.separation.presets import list_presets


class Transport:
    """The engine's rate, pitch and keylock; ``lag`` holds the actions back until
    :meth:`catch_up`, as the engine applies a command at its next block."""

    def __init__(self, *, lag: bool = False) -> None:
        self.values = {"rate": 1.0, "pitch": 0.0, "keylock": 0.0}
        self.lag = lag
        self.pending: list[tuple[str, float]] = []

    def get(self, name: str) -> float:
        return self.values[name]

    def apply(self, actions: list[tuple[str, str, list[Any]]]) -> list[float]:
        out = []
        for verb, address, args in actions:
            assert verb == "action" and address.startswith("/transport/") and len(args) == 1
            self.pending.append((address[len("/transport/") :], args[0]))
            out.append(args[0])
        if not self.lag:
            self.catch_up()
        return out

    def catch_up(self) -> None:
        for name, value in self.pending:
            self.values[name] = float(value)
        self.pending.clear()


def rig(binding: str, *, lag: bool = False) -> tuple[MidiMapper, Transport]:
    transport = Transport(lag=lag)
    m = MidiMapper(
        parse_midi_map(f"[[binding]]\n{binding}\n", "t.toml"),
        lambda key: 0.0,
        get_transport=transport.get,
    )
    return m, transport


def move(m: MidiMapper, t: Transport, values: list[int], cc: int = 37, now: float = 0.0) -> list:
    """A fader moved through ``values``: what it sent."""
    sent: list[float] = []
    for v in values:
        sent += t.apply(m.handle("cc", 0, cc, v, now))
    return sent


RATE = 'cc = 37\ntarget = "/transport/rate"'


@pytest.mark.parametrize("invert", [False, True])
def test_rate_fader_cc_to_exact_rates(invert: bool) -> None:
    m, t = rig(RATE + ("\ninvert = true" if invert else ""))
    down = move(m, t, list(range(64, -1, -1)))  # picked up at the centre, 1.0
    assert len(down) == 65
    assert down[0] == 1.0
    assert down[-1] == (1.08 if invert else 0.92)
    assert t.values["rate"] == (1.08 if invert else 0.92)
    up = move(m, t, list(range(1, 128)))
    assert up[63 - 1] == 1.0  # CC 64
    assert up[-1] == (0.92 if invert else 1.08)
    assert t.values["rate"] == (0.92 if invert else 1.08)


def test_the_centre_detent_gives_exactly_one() -> None:
    m, t = rig(RATE)
    sent = move(m, t, [64, 63, 62, 63, 64, 65, 66, 65])
    assert sent == [1.0, 1.0, 1.0 - 0.08 * 2 / 64, 1.0, 1.0, 1.0, 1.0 + 0.08 * 2 / 63, 1.0]
    assert t.values["rate"] == 1.0


@pytest.mark.parametrize(("width", "low", "high"), [(0.16, 0.84, 1.16), (0.5, 0.5, 1.5)])
def test_a_wider_range(width: float, low: float, high: float) -> None:
    m, t = rig(RATE + f"\nrange = {width}")
    assert move(m, t, list(range(64, -1, -1)))[-1] == low
    assert move(m, t, list(range(1, 128)))[-1] == high


def test_fourteen_bit_rate_fader() -> None:
    m, t = rig('cc = 37\nlsb = 69\nmode = "absolute14"\ntarget = "/transport/rate"')

    def fader(value: int) -> list[float]:
        sent = t.apply(m.handle("cc", 0, 37, value >> 7, 0.0))  # the MSB waits for its LSB
        assert sent == []
        return t.apply(m.handle("cc", 0, 69, value & 127, 0.0))

    assert fader(8192) == [1.0]  # the centre
    assert fader(8193) == [1.0]  # the detent: a step either side
    assert fader(8191) == [1.0]
    assert fader(8194) == [1.0 + 0.08 * 2 / 8191]
    assert fader(8190) == [1.0 - 0.08 * 2 / 8192]
    for v in range(8190, -1, -256):  # down to the bottom, picked up all the way
        fader(v)
    assert fader(0) == [0.92]
    for v in range(1, 16384, 256):
        fader(v)
    assert fader(16383) == [1.08]


def test_rate_fader_soft_takeover() -> None:
    m, t = rig(RATE)
    t.values["rate"] = 1.04  # set elsewhere (OSC): the fader's 95.5
    assert move(m, t, [0, 40, 80]) == []  # far from it: nothing
    assert move(m, t, [100]) == [1.0 + 0.08 * 36 / 63]  # passed it: picked up
    assert move(m, t, [101]) == [1.0 + 0.08 * 37 / 63]
    t.values["rate"] = 1.0  # OSC again: the fader lets go
    assert move(m, t, [102, 80]) == []
    assert move(m, t, [60]) == [1.0 - 0.08 * 4 / 64]  # crossed the centre: picked up
    t.values["rate"] = 0.9  # below the fader's +/-8 %: picked up at its bottom end
    assert move(m, t, [30, 10]) == []
    assert move(m, t, [1]) == [1.0 - 0.08 * 63 / 64]


def test_rate_fader_keeps_the_rate_while_the_engine_catches_up() -> None:
    """A fast move sends values before the engine applied the last: they are its own,
    not a change from elsewhere, so the fader keeps the rate."""
    m, t = rig(RATE, lag=True)
    assert move(m, t, [64, 60, 50, 40]) == [1.0 + 0.08 * d / 64 for d in (0, -4, -14, -24)]
    t.catch_up()
    assert move(m, t, [30, 20]) == [1.0 - 0.08 * 34 / 64, 1.0 - 0.08 * 44 / 64]
    t.catch_up()
    assert t.values["rate"] == 1.0 - 0.08 * 44 / 64


@pytest.mark.parametrize(("later", "sent"), [(0.1, [1.0 - 0.08 * 54 / 64]), (PENDING_S + 0.01, [])])
def test_a_value_it_sent_long_ago_set_again_elsewhere_is_not_its_own(
    later: float, sent: list[float]
) -> None:
    m, t = rig(RATE)
    move(m, t, [64, 60, 40, 20])
    t.values["rate"] = 1.0 - 0.08 * 24 / 64  # CC 40's rate, from elsewhere
    assert move(m, t, [10], now=later) == sent


@pytest.mark.parametrize(("mode", "up", "down"), [("relative2c", 1, 127), ("relative64", 65, 63)])
def test_pitch_encoder_steps_a_semitone_a_tick(mode: str, up: int, down: int) -> None:
    m, t = rig(f'cc = 38\nmode = "{mode}"\ntarget = "/transport/pitch"', lag=True)
    assert move(m, t, [up, up], cc=38) == [1.0, 2.0]  # the engine has applied neither yet
    t.catch_up()
    assert move(m, t, [down], cc=38) == [1.0]
    t.catch_up()
    assert move(m, t, [up + 2], cc=38) == [4.0]  # three ticks at once
    t.catch_up()
    t.values["pitch"] = 11.5  # from OSC
    assert move(m, t, [up, up], cc=38) == [12.0]  # the end: nothing past it
    t.catch_up()
    assert t.values["pitch"] == 12.0
    t.values["pitch"] = -12.0
    assert move(m, t, [down], cc=38) == []


@pytest.mark.parametrize(
    ("fine", "expected"),
    [
        (False, [0.0, 0.0, 1.0, 12.0, 0.0, -12.0]),
        (True, [0.0, 12 * 2 / 63, 12 * 6 / 63, 12.0, 0.0, -12.0]),
    ],
)
def test_pitch_knob_snaps_to_semitones_unless_fine(fine: bool, expected: list[float]) -> None:
    m, t = rig(
        'cc = 38\ntarget = "/transport/pitch"' + ("\nfine = true" if fine else ""), lag=False
    )
    sent = []
    for v in (64, 66, 70):
        sent += move(m, t, [v], cc=38)
    move(m, t, list(range(71, 127)), cc=38)
    sent += move(m, t, [127], cc=38)
    move(m, t, list(range(126, 64, -1)), cc=38)
    sent += move(m, t, [64], cc=38)
    move(m, t, list(range(63, 0, -1)), cc=38)
    sent += move(m, t, [0], cc=38)
    assert sent == expected


def test_keylock_button_toggles_and_lights() -> None:
    m, t = rig('note = 65\ntarget = "/transport/keylock"\nmode = "toggle"')
    assert m.led_messages() == [("note", 0, 65, 0)]
    assert m.handle("note_on", 0, 65, 127, 0.0) == [("action", "/transport/keylock", [1])]
    t.apply(m.handle("note_on", 0, 65, 127, 0.0))
    assert m.handle("note_off", 0, 65, 0, 0.1) == []
    assert m.led_messages() == [("note", 0, 65, 127)]
    assert m.handle("note_on", 0, 65, 127, 0.2) == [("action", "/transport/keylock", [0])]


def test_keylock_press_mode_is_momentary_when_held() -> None:
    m, t = rig('note = 65\ntarget = "/transport/keylock"\nmode = "press"')
    assert t.apply(m.handle("note_on", 0, 65, 127, 0.0)) == [1]
    assert t.apply(m.handle("note_off", 0, 65, 0, 1.0)) == [0]  # held: back off


def test_a_transport_binding_without_a_transport_is_an_error() -> None:
    m = MidiMapper(parse_midi_map(f"[[binding]]\n{RATE}\n", "t.toml"), lambda key: 0.0)
    with pytest.raises(Exception) as info:
        m.handle("cc", 0, 37, 64, 0.0)
    assert str(info.value) == "/transport/rate: no transport to drive"


@pytest.mark.parametrize(
    ("binding", "error"),
    [
        (
            RATE + "\nrange = 0.6",
            "/transport/rate range must be a number above 0 and at most 0.5 (+/-50 %), got 0.6",
        ),
        (
            RATE + "\nrange = 0",
            "/transport/rate range must be a number above 0 and at most 0.5 (+/-50 %), got 0",
        ),
        (
            RATE + "\nrange = -0.08",
            "/transport/rate range must be a number above 0 and at most 0.5 (+/-50 %), got -0.08",
        ),
        (
            RATE + '\nrange = "8%"',
            "/transport/rate range must be a number above 0 and at most 0.5 (+/-50 %), got '8%'",
        ),
        (
            RATE + "\nrange = nan",
            "/transport/rate range must be a number above 0 and at most 0.5 (+/-50 %), got nan",
        ),
        (
            RATE + "\nrange = true",
            "/transport/rate range must be a number above 0 and at most 0.5 (+/-50 %), got True",
        ),
        (
            'cc = 37\ntarget = "/transport/pitch"\nrange = 0.08',
            "range applies to /transport/rate only",
        ),
        (
            'cc = 37\ntarget = "/ch/1/fader"\ninvert = true',
            "invert applies to /transport/rate and /transport/pitch only",
        ),
        (RATE + "\ninvert = 1", "invert must be true or false, got 1"),
        (
            RATE + "\nfine = true",
            "fine applies to /transport/pitch from a knob or fader (absolute, absolute14) only",
        ),
        (
            'cc = 37\ntarget = "/transport/pitch"\nmode = "relative2c"\nfine = true',
            "fine applies to /transport/pitch from a knob or fader (absolute, absolute14) only",
        ),
        (
            'cc = 37\ntarget = "/transport/tempo"',
            "unknown transport value '/transport/tempo': a continuous control drives "
            "/transport/rate or /transport/pitch",
        ),
        (
            'cc = 37\ntarget = "/transport/bpm"\nmode = "relative64"',
            "unknown transport value '/transport/bpm': a continuous control drives "
            "/transport/rate or /transport/pitch",
        ),
        (
            'cc = 37\ntarget = "/transport/rate"\nmode = "relative2c"',
            "mode 'relative2c' cannot drive /transport/rate: use absolute, absolute14",
        ),
        (
            'note = 37\ntarget = "/transport/rate"',
            "mode 'toggle' cannot drive /transport/rate: use absolute, absolute14",
        ),
        (
            'cc = 37\ntarget = "/transport/pitch"\nmode = "press"',
            "mode 'press' cannot drive /transport/pitch: use absolute, absolute14, "
            "relative2c, relative64",
        ),
        (
            'cc = 37\ntarget = "/transport/keylock"',
            "mode 'absolute' cannot drive /transport/keylock: use toggle, momentary, press",
        ),
        (
            'note = 37\ntarget = "/transport/keylock"\nmode = "trigger"',
            "mode 'trigger' cannot drive /transport/keylock: use toggle, momentary, press",
        ),
        (RATE + "\nargs = [1.0]", "/transport/rate takes no args"),
    ],
)
def test_a_bad_transport_binding_is_one_exact_error(binding: str, error: str) -> None:
    with pytest.raises(PresetError) as info:
        parse_midi_map(f"[[binding]]\n{binding}\n", "t.toml")
    assert str(info.value) == f"t.toml: binding 1: {error}"


def test_a_saved_map_loads_as_it_was() -> None:
    """MIDI learn saves every binding of the map: a loop's beats stay a number, a rate
    fader keeps its range and direction."""
    for name in list_presets("midi"):
        m = load_midi_map(name)
        text = "\n".join(binding_toml(b) for b in m.bindings)
        assert parse_midi_map(text, "saved.toml").bindings == m.bindings, name
    custom = parse_midi_map(
        f"[[binding]]\n{RATE}\nrange = 0.16\ninvert = true\n[[binding]]\ncc = 38\n"
        'target = "/transport/pitch"\nfine = true\n[[binding]]\nnote = 1\n'
        'target = "/scene/recall"\nargs = ["drop 2", 4.5]\n',
        "t.toml",
    )
    text = "\n".join(binding_toml(b) for b in custom.bindings)
    assert parse_midi_map(text, "saved.toml").bindings == custom.bindings


def test_a_bindings_toml_is_valid_toml_for_any_text() -> None:
    """Outside the Basic Multilingual Plane JSON's escapes are surrogate pairs, which
    TOML refuses: the writer keeps such characters as they are."""
    import tomllib

    b = Binding(kind="note", channel=0, number=1, target="/ch/é/mute", args=('🎵 "q"\n',))
    table = tomllib.loads(binding_toml(b))["binding"][0]
    assert (table["target"], table["args"]) == ("/ch/é/mute", ['🎵 "q"\n'])


@pytest.mark.parametrize(
    ("name", "rate", "pitch", "keylock"),
    [
        ("generic", (0, 37), (0, 38), ("note", 0, 65, True)),
        ("x-touch-mini", (10, 10), None, ("note", 10, 1, False)),
        ("midimix", (0, 58), (0, 54), ("note", 0, 25, True)),
        ("nanokontrol2", None, None, ("cc", 0, 64, True)),
        ("launchcontrol-xl", None, None, ("note", 8, 105, True)),
    ],
)
def test_shipped_maps_rate_pitch_and_keylock(
    name: str,
    rate: tuple[int, int] | None,
    pitch: tuple[int, int] | None,
    keylock: tuple[str, int, int, bool],
) -> None:
    """The rate fader (+/-8 %, + at the top, 7 bits), the pitch knob (whole semitones)
    and keylock (lit where the map lights buttons) where the controller has them."""
    m = load_midi_map(name)
    got = {b.target: b for b in m.bindings if b.target in ("/transport/rate", "/transport/pitch")}
    if rate is None:
        assert "/transport/rate" not in got
    else:
        b = got["/transport/rate"]
        assert (b.kind, b.channel, b.number, b.mode, b.range, b.invert) == (
            "cc",
            *rate,
            "absolute",
            0.08,
            False,
        )
    if pitch is None:
        assert "/transport/pitch" not in got
    else:
        b = got["/transport/pitch"]
        assert (b.kind, b.channel, b.number, b.mode, b.fine) == ("cc", *pitch, "absolute", False)
    [b] = [b for b in m.bindings if b.target == "/transport/keylock"]
    assert (b.kind, b.channel, b.number, b.led, b.mode) == (*keylock, "toggle")
