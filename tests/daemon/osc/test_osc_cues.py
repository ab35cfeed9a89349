"""Hot cues over OSC (issue 23): ``/cue/N``, ``/cue/N/set``, ``/cue/N/jump``,
``/cue/N/clear``, ``/cue/N/scene``; exact replies and errors, snapped and quantized,
a cue's scene landing with its jump, /state, and cues kept with the track's grid in
the beat store across a restart.

In-process on the real registry and mixer (``tests/osc_host.py``, 8 kHz, blocks of
64); strip 1 reads its own frame index, so the output says where the head read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osc_host import BLOCK, NAMES, PROBE_GRID, SENDER, SR, probe_host, render

from stemdeck.core.beats.store import BeatStore, HotCue
from stemdeck.core.mixer.kernel import COMPILED
from stemdeck.core.mixer.keylock import latency_at
from stemdeck.daemon.osc import OscControl
from stemdeck.daemon.scenes import SceneStore

GRID = PROBE_GRID  # a beat every 0.5 s (4000 frames) from 0.3 s, bars of 2 s


def ask(control: OscControl, address: str, *args: object) -> list[tuple[str, list]]:
    return [(a, list(v)) for a, v in control.handle([(address, list(args))], SENDER)]


def test_set_query_clear_and_state() -> None:
    host = probe_host()
    control = OscControl(host)
    render(host, 100)  # head at 0.8 s
    assert ask(control, "/cue/3") == [("/cue/3", [-1.0])]  # not set
    assert ask(control, "/cue/3/set") == [("/cue/3", [0.8])]
    assert ask(control, "/cue/3") == [("/cue/3", [0.8])]
    assert ask(control, "/cue/3/position") == [("/cue/3/position", [0.8])]
    assert ("/cue/3", [0.8]) in control.state() and ("/cue/3/scene", [""]) in control.state()
    assert ("/cue/4", [-1.0]) in control.state()
    assert ask(control, "/cue/3/set", 0) == []  # a pad's release: nothing
    assert ask(control, "/cue/3/clear", 1) == [("/cue/3", [-1.0])]
    assert ask(control, "/cue/3") == [("/cue/3", [-1.0])]


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_set_with_keylock_on_is_at_what_is_heard() -> None:
    """Keylock on, the shifter heard: a cue set by ear lands where the music heard
    is, the play head less the shifter's latency (it landed at the play head: 144
    samples, 18 ms, late at this 8 kHz host, 24 ms at 48 kHz)."""
    host = probe_host()
    control = OscControl(host)
    assert ask(control, "/transport/keylock", 1) == []
    render(host, 100)  # head at 0.8 s, the shifter filled and heard
    assert host.engine.output_delay == latency_at(SR) == 144
    head = host.engine.position / SR
    assert ask(control, "/cue/3/set") == [("/cue/3", [head - 144 / SR])]


def test_set_snaps_to_the_grid_with_quantize_on() -> None:
    host = probe_host()
    control = OscControl(host)
    render(host, 110)  # head at 0.88 s: the nearest beat is 0.8 s, the nearest bar 0.3 s
    ask(control, "/quantize", "beat")
    assert ask(control, "/cue/1/set") == [("/cue/1", [0.8])]
    ask(control, "/quantize", "bar")
    assert ask(control, "/cue/2/set") == [("/cue/2", [0.3])]


def test_a_jump_lands_on_the_next_bar_line_at_the_cue() -> None:
    host = probe_host()
    control = OscControl(host)
    render(host, 100)
    ask(control, "/cue/1/set")  # 0.8 s: frame 6400
    render(host, 25)  # head at 1.0 s
    ask(control, "/quantize", "bar")
    assert ask(control, "/cue/1/jump") == []
    out = render(host, 200)[:, 0]  # to 2.6 s: past the bar line at 2.3 s (frame 18400)
    at = int(np.flatnonzero(np.diff(out) < 0)[0]) + 1  # the jump's first sample
    # It starts where the head would read the bar line, crossfading to the cue.
    assert out[at - 1] == 18399 and out[at + 40] == 6400 + 40
    assert host.engine.position == 6400 + (200 * BLOCK - at)


def test_a_jump_with_quantize_off_goes_at_once() -> None:
    host = probe_host()
    control = OscControl(host)
    render(host, 100)
    ask(control, "/cue/1/set")
    render(host, 100)
    ask(control, "/cue/1/jump")
    render(host, 1)
    assert host.engine.position == 6400 + BLOCK


def test_a_cue_scene_lands_with_the_jump(tmp_path: Path) -> None:
    host = probe_host()
    host.scenes = SceneStore(host.registry, host.post, tmp_path, quantized=host.quantize.post)
    control = OscControl(host)
    ask(control, "/ch/vocals/mute", 1)
    host.scenes.save("acapella")  # one of FakeHost.scene_names()
    ask(control, "/ch/vocals/mute", 0)
    render(host, 100)
    ask(control, "/cue/2/set")
    assert ask(control, "/cue/2/scene", "acapella") == [("/cue/2/scene", ["acapella"])]
    assert ask(control, "/cue/2/scene") == [("/cue/2/scene", ["acapella"])]
    ask(control, "/quantize", "bar")
    assert ask(control, "/cue/2/jump", 1) == []
    out = render(host, 200)
    at = int(np.flatnonzero(np.diff(out[:, 0]) < 0)[0]) + 1  # the jump's first sample
    assert out[at - 1, 0] == 18399  # on the bar line
    vocals = out[:, 2 * NAMES.index("vocals")]
    assert np.all(vocals[:at] == 0.5) and vocals[at] < 0.5  # the mute's ramp starts there too
    assert host.engine.strip_state(NAMES.index("vocals")).mute
    assert ask(control, "/cue/2/scene", "") == [("/cue/2/scene", [""])]
    assert host.beats.cue(2) == HotCue(0.8, None)


@pytest.mark.parametrize(
    ("address", "args", "error"),
    [
        ("/cue/9/set", [], "/cue/9/set: hot cues are numbered 1 to 8, got '9'"),
        ("/cue/0/jump", [], "/cue/0/jump: hot cues are numbered 1 to 8, got '0'"),
        ("/cue/x", [], "/cue/x: hot cues are numbered 1 to 8, got 'x'"),
        ("/cue/1/bogus", [], "/cue/1/bogus: unknown address"),
        ("/cue/1/set/more", [], "/cue/1/set/more: unknown address"),
        ("/cue/1/jump", [], "/cue/1/jump: cue 1 is not set"),
        ("/cue/1/scene", ["acapella"], "/cue/1/scene: cue 1 is not set"),
        ("/cue/1/scene", [3], '/cue/1/scene takes one scene name ("" for none), got [3]'),
        ("/cue/1", [1.0], "/cue/1 takes no arguments, got 1"),
        (
            "/cue/1/set",
            ["x"],
            "/cue/1/set takes no arguments or one button value (1 press, 0 release), got ['x']",
        ),
    ],
)
def test_bad_input_is_one_exact_error(address: str, args: list, error: str) -> None:
    host = probe_host()
    control = OscControl(host)
    assert ask(control, address, *args) == [("/error", [error])]
    assert all(host.beats.cue(n) is None for n in range(1, 9))


def test_an_unknown_scene_is_refused() -> None:
    host = probe_host()
    control = OscControl(host)
    ask(control, "/cue/1/set")
    assert ask(control, "/cue/1/scene", "nope") == [
        ("/error", ["/cue/1/scene: no scene named 'nope'"])
    ]
    assert host.beats.cue(1) is not None and host.beats.cue(1).scene is None  # type: ignore[union-attr]


def test_no_grid_no_cues() -> None:
    control = OscControl(probe_host(grid=False))
    assert ask(control, "/cue/1/set") == [
        ("/error", ["/cue/1/set: no beat grid yet for the track"])
    ]
    assert ask(control, "/cue/1") == [("/cue/1", [-1.0])]


def test_cues_are_kept_with_the_track_across_a_restart(tmp_path: Path) -> None:
    store = BeatStore(tmp_path)
    host = probe_host(store=store)
    control = OscControl(host)
    render(host, 100)
    ask(control, "/cue/5/set")
    ask(control, "/track/grid/halve")  # a grid edit keeps the cues
    key = host.beats.require().key
    assert store.load(key).cues[4] == HotCue(0.8, None)  # type: ignore[union-attr]
    again = probe_host(store=store)  # a new daemon: the sidecar's record
    assert ask(OscControl(again), "/cue/5") == [("/cue/5", [0.8])]
    assert again.beats.require().record.edit == GRID.halved()


def test_a_morph_starts_on_the_grid_point_with_quantize_on(tmp_path: Path) -> None:
    """``/scene/recall NAME SECONDS`` with quantize on: the glide starts on the next bar
    line (its steps follow the clock from there), as a recall without fade lands there."""
    from daemon_helpers import poll

    from stemdeck.core.mixer.commands import Rate
    from stemdeck.core.mixer.params import fader_to_gain, gain_to_fader

    host = probe_host()
    render(host, 100)  # head at 0.8 s; bars at 0.3, 2.3, 4.3 s
    now = [100.0]
    host.scenes = SceneStore(
        host.registry,
        host.post,
        tmp_path,
        clock=lambda: now[0],
        quantized=host.quantize.post,
        until_grid=host.quantize.seconds_to_target,
    )
    control = OscControl(host)
    assert host.quantize.seconds_to_target() is None  # quantize off: at once
    ask(control, "/quantize", "bar")
    assert host.quantize.seconds_to_target() == 1.5  # to frame 18400 from 6400, at 8 kHz
    host.post(Rate(1.25))
    render(host, 1)  # the rate glides there: the head moved 66 frames
    assert host.engine.position == 6466
    assert host.quantize.seconds_to_target() == (18400 - 6466) / 8000 / 1.25
    host.post(Rate(1.0))
    render(host, 2)
    wait = (18400 - host.engine.position) / 8000
    assert host.quantize.seconds_to_target() == wait
    (tmp_path / "half.toml").write_text("[master]\ngain = 0.5\n")
    assert ask(control, "/scene/recall", "half", 1.0) == [("/scene/recall", ["half", 1.0])]
    halfway = fader_to_gain(gain_to_fader(1.0) + (gain_to_fader(0.5) - gain_to_fader(1.0)) / 2)
    now[0] = 100.0 + wait + 0.5  # half the glide after the bar line
    poll(lambda: host.registry.get("/master/gain"), lambda g: g == halfway, "halfway")
    now[0] = 100.0 + wait + 1.0
    poll(lambda: host.registry.get("/master/gain"), lambda g: g == 0.5, "the scene's gain")
    host.scenes.stop()
