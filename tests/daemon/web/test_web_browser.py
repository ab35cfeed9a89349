"""The browser mixer in a real headless Chromium (Selenium) against a running daemon.

The track is a stem file of four pure tones, one per stem, so the recording says
which stems play. Skipped only when Chromium, its driver or Selenium is missing;
``scripts/setup --test`` (and so ``.ci/run``) installs them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Client, Daemon, wait_played

from conftest import tone_mix
from stemdeck.core.audiofile.manifest import NI_NAMES
from stemdeck.core.audiofile.stemfile_write import write_stem_file
from stemdeck.core.mixer.params import fader_to_db

if TYPE_CHECKING:  # selenium is optional: the module is skipped without it
    from selenium.webdriver import Chrome
    from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER and HAVE_SELENIUM),
        reason="needs Debian's chromium and chromium-driver and the selenium package "
        "(scripts/setup --test installs them)",
    ),
]

SR = 48000
# NI order: drums, bass, other, vocals; one tone each (Hz), far apart.
TONES = {"drums": 3000.0, "bass": 200.0, "other": 700.0, "vocals": 1300.0}
WAIT = 60  # seconds: generous, for a busy machine; every wait ends at its event
PHONE = {"width": 390, "height": 844}  # CSS pixels


@dataclass(frozen=True)
class Screen:
    """A viewport in CSS pixels, its device pixel ratio, and whether it is touched."""

    width: int
    height: int
    ratio: float
    touch: bool


# The four screens the page is checked on (docs/web.md): a phone held both ways, a
# tablet, a laptop.
SCREENS = {
    "phone": Screen(390, 844, 3.0, touch=True),
    "phone-landscape": Screen(844, 390, 3.0, touch=True),
    "tablet": Screen(1024, 768, 2.0, touch=True),
    "laptop": Screen(1280, 800, 1.0, touch=False),
}
HIT = 44  # CSS px: the smallest touch target (Apple's and Google's guidelines agree near it)
DUO_NAMES = ("Keys", "Voice")
DUO_COLOURS = ("#112233", "#AABBCC")


def tone_stems(seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    stems = [0.2 * np.sin(2 * np.pi * f * t) for f in TONES.values()]
    return np.stack([np.stack([s, s]) for s in stems]).astype(np.float32)


def amplitude(y: np.ndarray, freq: float) -> float:
    """Amplitude of a sine at ``freq`` in ``y`` (mono), by projection on a Hann window."""
    n = len(y)
    w = np.hanning(n)
    t = np.arange(n) / SR
    c = np.sum(y * w * np.cos(2 * np.pi * freq * t))
    s = np.sum(y * w * np.sin(2 * np.pi * freq * t))
    return float(2 * np.hypot(c, s) / np.sum(w))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    root = tmp_path_factory.mktemp("browser")
    library = root / "library"
    library.mkdir()
    stems = tone_stems()
    write_stem_file(library / "tones.stem.mp4", stems.sum(axis=0), stems, SR, codec="alac")
    # For the track picker: a plain file to separate, and a stem file of other channels.
    # 20 s: two chunks, so its separation is under way for a moment the page can show
    sf.write(library / "second.wav", tone_mix(20.0, sr=SR, seed=5).T, SR, subtype="FLOAT")
    duo = tone_stems(1.0)[:2]
    write_stem_file(
        library / "duo.stem.mp4",
        duo.sum(axis=0),
        duo,
        SR,
        names=DUO_NAMES,
        colours=DUO_COLOURS,
        codec="alac",
    )
    env = {"STEMDECK_CACHE": str(root / "cache"), "STEMDECK_CONFIG": str(root / "config")}
    daemon = Daemon(
        [
            str(library / "tones.stem.mp4"),
            "--no-audio",
            "--record",
            str(root / "rec.wav"),
            "--library",
            str(library),
        ],
        env,
        root,
    )
    daemon.wait_ready()
    yield daemon, root
    daemon.stop()


def browser(phone: bool = False, screen: Screen | None = None) -> Chrome:
    """Chromium at 1200×800, or with ``phone`` a 390×844 touch screen, or ``screen``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,800"):
        options.add_argument(arg)
    if phone:
        screen = Screen(PHONE["width"], PHONE["height"], 3.0, touch=True)
    if screen is not None:  # a window cannot be that small: the screen's viewport, emulated
        metrics = {
            "width": screen.width,
            "height": screen.height,
            "pixelRatio": screen.ratio,
            "touch": screen.touch,
        }
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    return webdriver.Chrome(service=Service(DRIVER or ""), options=options)


def strip(driver: Chrome, address: str) -> WebElement:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'.strip[data-address="{address}"]')


def attribute(element: WebElement, name: str) -> str:
    """An attribute the page sets on ``element`` (an AssertionError if it has not)."""
    value = element.get_attribute(name)
    assert value is not None, f"no {name} attribute"
    return value


def wait_for(driver: Chrome, check: Callable[[Chrome], Any], message: str) -> None:
    """Until ``check(driver)`` holds. An element the page replaced while it was read
    (a list refilled, strips rebuilt) is no answer: the check is made again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(
        driver, WAIT, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: check(d), message)


def osc_value(client: Client, address: str) -> float:
    return float(client.query(address))


def wait_osc(client: Client, address: str, check, message: str) -> float:
    import time

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = osc_value(client, address)
        if check(value):
            return value
        time.sleep(0.05)
    raise AssertionError(f"{message}: {address} is {value}")


def open_page(driver: Chrome, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(driver, lambda d: d.find_element(By.ID, "conn").text == "live", "page not live")
    wait_for(
        driver,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, ".strip")) == 5
            and strip(d, "/ch/4").get_attribute("data-fader") is not None
        ),
        "strips not shown with their values",
    )


def test_two_fingers_move_two_faders_and_double_tap_resets(served: tuple[Daemon, Path]) -> None:
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.mouse_button import MouseButton
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()
    try:
        open_page(d, daemon.http_url())
        drums = strip(d, "/ch/1").find_element(By.CSS_SELECTOR, ".fader")
        other = strip(d, "/ch/3").find_element(By.CSS_SELECTOR, ".fader")
        actions = ActionBuilder(d)
        one = actions.add_pointer_input(interaction.POINTER_TOUCH, "one")
        two = actions.add_pointer_input(interaction.POINTER_TOUCH, "two")
        # Both fingers down, both move up, both lift: tick by tick, together.
        for finger, fader in ((one, drums), (two, other)):
            finger.create_pointer_move(origin=fader)
            finger.create_pointer_down(button=MouseButton.LEFT)
            for _ in range(3):
                finger.create_pointer_move(duration=50, x=0, y=-15, origin="pointer")
            finger.create_pointer_up(MouseButton.LEFT)
        actions.perform()
        for address, name in (("/ch/1", "drums"), ("/ch/3", "other")):

            def moved(d: Chrome, a: str = address) -> bool:
                return float(strip(d, a).get_attribute("data-fader") or 0) > 0.8

            wait_for(d, moved, f"{name} fader did not move under its finger")
            shown = float(attribute(strip(d, address), "data-fader"))
            got = wait_osc(client, f"/ch/{name}/fader", lambda v: v > 0.8, f"{name} not sent")
            assert got == pytest.approx(shown, abs=1e-3)
        # A double tap puts a fader back at unity.
        for address, name in (("/ch/1", "drums"), ("/ch/3", "other")):
            fader = strip(d, address).find_element(By.CSS_SELECTOR, ".fader")
            taps = ActionBuilder(d)
            finger = taps.add_pointer_input(interaction.POINTER_TOUCH, "tap")
            finger.create_pointer_move(origin=fader)
            finger.create_pointer_down(button=MouseButton.LEFT)
            finger.create_pointer_up(MouseButton.LEFT)
            finger.create_pause(0.05)
            finger.create_pointer_down(button=MouseButton.LEFT)
            finger.create_pointer_up(MouseButton.LEFT)
            taps.perform()
            wait_osc(client, f"/ch/{name}/fader", lambda v: v == 0.75, f"{name} not back at unity")

            def at_unity(d: Chrome, a: str = address) -> bool:
                return strip(d, a).get_attribute("data-fader") == "0.7500"

            wait_for(d, at_unity, f"{name} fader not shown at unity")
    finally:
        d.quit()
        client.close()


def test_two_touch_points_move_two_faders_at_once_to_the_exact_values(
    served: tuple[Daemon, Path],
) -> None:
    """Two fingers on one touch screen, as Chromium gets them from a tablet: every touch
    event carries both touch points (``Input.dispatchTouchEvent``), one fader goes up and
    the other down in the same events, and the daemon gets each fader's value exactly (a
    relative drag: unity plus the travel over the fader's height, as an OSC float32)."""
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    reset_mix(client)
    d = browser(screen=SCREENS["tablet"])
    try:
        open_page(d, daemon.http_url())
        for address in ("/ch/1", "/ch/3"):

            def at_unity(d: Chrome, a: str = address) -> bool:
                return strip(d, a).get_attribute("data-fader") == "0.7500"

            wait_for(d, at_unity, f"{address} not at unity")
        d.execute_cdp_cmd(
            "Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5}
        )
        faders = {
            a: strip(d, a).find_element(By.CSS_SELECTOR, ".fader") for a in ("/ch/1", "/ch/3")
        }
        centre = {}
        height = {}
        for a, f in faders.items():
            left, top, right, bottom = d.execute_script(RECT_JS, f)
            centre[a] = (round((left + right) / 2), round((top + bottom) / 2))
            height[a] = d.execute_script("return arguments[0].clientHeight", f)
        travel = {"/ch/1": -36, "/ch/3": 30}  # drums up 36 px, other down 30 px: at once

        def touch(kind: str, steps: float) -> None:
            points = [
                {"x": x, "y": y + round(travel[a] * steps), "id": n}
                for n, (a, (x, y)) in enumerate(centre.items())
            ]
            d.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

        touch("touchStart", 0)
        for step in (1 / 3, 2 / 3, 1):
            touch("touchMove", step)
        d.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        for a, name in (("/ch/1", "drums"), ("/ch/3", "other")):
            want = float(np.float32(0.75 + (-travel[a] / height[a])))
            wait_osc(client, f"/ch/{name}/fader", lambda v, w=want: v == w, f"{name} not {want}")
            assert osc_value(client, f"/ch/{name}/fader") == want
        assert osc_value(client, "/ch/bass/fader") == 0.75
        assert osc_value(client, "/ch/vocals/fader") == 0.75
    finally:
        d.quit()
        reset_mix(client)
        client.close()


def test_the_overview_shows_the_play_head_and_the_loop(served: tuple[Daemon, Path]) -> None:
    """The played part of the overview ends at the play head, the loop's region spans the
    loop, to the pixel, and goes when the loop is off."""
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()
    try:
        open_page(d, daemon.http_url())
        client.send("/transport/pause")
        wait_osc(client, "/transport/playing", lambda v: v == 0, "still playing")
        client.send("/transport/seek", 1.0)
        wait_osc(client, "/transport/position", lambda v: v == 1.0, "the seek to 1 s")
        length = osc_value(client, "/transport/length")
        bar = d.find_element(By.ID, "posbar")
        inner = (
            "const e = arguments[0];"
            "return [e.getBoundingClientRect().left + e.clientLeft, e.clientWidth]"
        )
        left, width = d.execute_script(inner, bar)

        def edges(element_id: str) -> list[float]:
            r = d.execute_script(RECT_JS, d.find_element(By.ID, element_id))
            return [r[0] - left, r[2] - left]

        head = 1.0 / length * width
        wait_for(d, lambda d: abs(edges("posfill")[1] - head) <= 1, "the play head is not at 1 s")
        assert edges("posfill")[0] == 0
        assert not d.find_element(By.ID, "loopzone").is_displayed()
        client.send("/transport/loop", 2.0, 3.0)
        wait_for(d, lambda d: d.find_element(By.ID, "loopzone").is_displayed(), "no loop shown")
        start, end = edges("loopzone")
        assert abs(start - 2.0 / length * width) <= 1 and abs(end - 3.0 / length * width) <= 1
        client.send("/transport/loop/off")
        wait_for(d, lambda d: not d.find_element(By.ID, "loopzone").is_displayed(), "loop shown")
    finally:
        d.quit()
        client.send("/transport/loop/off")
        client.send("/transport/play")
        client.close()


def test_keyboard_seek_and_loop(served: tuple[Daemon, Path]) -> None:
    """Space pauses and plays, a digit mutes its channel, a click on the bar seeks,
    loop in/out set the loop and loop off clears it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()
    try:
        open_page(d, daemon.http_url())
        body = d.find_element(By.TAG_NAME, "body")
        body.send_keys("2")
        wait_osc(client, "/ch/bass/mute", lambda v: v == 1, "key 2 did not mute the bass")
        body.send_keys("2")
        wait_osc(client, "/ch/bass/mute", lambda v: v == 0, "key 2 did not unmute the bass")
        body.send_keys(" ")
        wait_osc(client, "/transport/playing", lambda v: v == 0, "space did not pause")
        wait_for(
            d,
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-playing") == "0",
            "pause not shown",
        )

        bar = d.find_element(By.ID, "posbar")
        width = bar.size["width"]

        def page_position(d: Chrome) -> float:
            """The play head as the page shows it ("m:ss.s / length")."""
            minutes, seconds = d.find_element(By.ID, "time").text.split(" / ")[0].split(":")
            return 60 * int(minutes) + float(seconds)

        def seek(fraction: float) -> float:
            ActionChains(d).move_to_element_with_offset(
                bar, int((fraction - 0.5) * width), 0
            ).click().perform()
            want = fraction * 4.0  # the track is 4 s long
            got = wait_osc(
                client,
                "/transport/position",
                lambda v: abs(v - want) < 0.05,
                f"a click at {fraction:.0%} of the bar did not seek",
            )
            # loop in and out take the position the page has: it must have this one
            wait_for(
                d,
                lambda d: abs(page_position(d) - got) <= 0.051,
                f"the page did not show the seek to {got:.3f}",
            )
            return got

        # Paused at 2 s, away from both seeks: a position near one is the seek's.
        client.send("/transport/seek", 2.0)
        wait_osc(client, "/transport/position", lambda v: v == 2.0, "the seek to 2 s")
        start = seek(0.25)
        d.find_element(By.ID, "loop-in").click()
        end = seek(0.75)
        d.find_element(By.ID, "loop-out").click()
        for _ in range(200):
            replies = client.ask("/transport/loop")
            if replies and replies[0][1][1] > 0:
                break
        assert replies[0][0] == "/transport/loop"
        assert replies[0][1] == [pytest.approx(start, abs=1e-3), pytest.approx(end, abs=1e-3)]
        d.find_element(By.ID, "loop-off").click()
        for _ in range(200):
            replies = client.ask("/transport/loop")
            if replies and replies[0][1] == [0.0, 0.0]:
                break
        assert replies == [("/transport/loop", [0.0, 0.0])]
        body.send_keys(" ")
        wait_osc(client, "/transport/playing", lambda v: v == 1, "space did not play")
    finally:
        d.quit()
        client.close()


def wait_osc_reply(client: Client, address: str, check, message: str, wait: float = WAIT) -> list:
    """The arguments of the reply to ``address`` once ``check`` holds for them (lists and
    other multi-argument replies; rate-limited ones are asked at most 2 times a second)."""
    deadline = time.monotonic() + wait
    args: list | None = None
    while time.monotonic() < deadline:
        for addr, got in client.ask(address, timeout=1.0):
            if addr == address:
                args = got
        if args is not None and check(args):
            return args
        time.sleep(0.5)
    raise AssertionError(f"{message}: {address} is {args}")


CONTROLS = [
    *(f"/ch/{i}/{p}" for i in range(1, 5) for p in ("fader", "mute", "solo", "pan")),
    "/master/fader",
    "/master/mute",
]


def controls(client: Client) -> dict[str, float]:
    return {a: osc_value(client, a) for a in CONTROLS}


def reset_mix(client: Client) -> None:
    """Back to the start: every fader at unity, nothing muted, soloed or panned."""
    for i in range(1, 5):
        client.send(f"/ch/{i}/fader", 0.75)
        client.send(f"/ch/{i}/mute", 0)
        client.send(f"/ch/{i}/solo", 0)
        client.send(f"/ch/{i}/pan", 0.0)
    client.send("/master/fader", 0.75)
    client.send("/master/mute", 0)
    want = {a: 0.75 if a.endswith("fader") else 0.0 for a in CONTROLS}
    deadline = time.monotonic() + WAIT
    while controls(client) != want:
        assert time.monotonic() < deadline, "the mix did not go back to its start"
        time.sleep(0.05)


def test_scene_saved_and_recalled_with_a_morph_from_the_page(served: tuple[Daemon, Path]) -> None:
    """A name typed in the page and *save* make a scene of the daemon's values; after
    the mix changed, *recall* with the page's morph time brings them back exactly, as
    a glide that takes at least that time (and at once with a morph of 0)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    daemon, root = served
    client = Client(daemon.port)
    d = browser()
    name = "take 2"  # typed in the page: neither space (play) nor 2 (mute) may act
    try:
        open_page(d, daemon.http_url())
        client.send("/ch/drums/fader", 0.5)
        client.send("/ch/other/pan", -0.5)
        client.send("/ch/vocals/solo", 1)
        client.send("/master/fader", 0.625)
        strip(d, "/ch/2").find_element(By.CSS_SELECTOR, ".mute").click()
        wait_osc(client, "/ch/bass/mute", lambda v: v == 1, "the page did not mute the bass")
        saved = controls(client)
        assert saved["/ch/1/fader"] == 0.5 and saved["/ch/3/pan"] == -0.5
        assert saved["/ch/4/solo"] == 1 and saved["/master/fader"] == 0.625

        playing = osc_value(client, "/transport/playing")
        d.find_element(By.ID, "scene-name").send_keys(name)
        d.find_element(By.ID, "scene-save").click()
        wait_osc_reply(client, "/scene/list", lambda names: name in names, "scene not saved")
        assert controls(client) == saved
        assert osc_value(client, "/transport/playing") == playing
        assert (root / "config" / "scenes" / f"{name}.toml").is_file()
        # The page lists it (it asks for the list again when the save is answered).
        wait_for(
            d,
            lambda d: (
                name
                in [
                    o.get_attribute("value")
                    for o in Select(d.find_element(By.ID, "scene-list")).options
                ]
            ),
            "the page did not list the saved scene",
        )

        def change_the_mix() -> dict[str, float]:
            client.send("/ch/drums/fader", 1.0)
            client.send("/ch/bass/mute", 0)
            client.send("/ch/other/pan", 0.5)
            client.send("/ch/vocals/solo", 0)
            client.send("/master/fader", 0.25)
            wait_osc(client, "/master/fader", lambda v: v == 0.25, "mix not changed")
            changed = controls(client)
            assert changed["/ch/1/fader"] == 1.0 and changed["/ch/2/mute"] == 0
            return changed

        def recall(morph: str) -> float:
            Select(d.find_element(By.ID, "scene-list")).select_by_value(name)
            box = d.find_element(By.ID, "morph")
            box.clear()
            box.send_keys(morph)
            assert box.get_attribute("value") == morph
            start = time.monotonic()
            d.find_element(By.ID, "scene-recall").click()
            return start

        # With a morph of 3 s: the drums fader glides from 1.0 down to 0.5 along the
        # fader (daemon/scenes.py), so values in between show; the switches flip at
        # the end, which the daemon reaches no sooner than 3 s after the click.
        change_the_mix()
        start = recall("3")
        seen = []
        while True:
            v = osc_value(client, "/ch/drums/fader")
            seen.append(v)
            if v == saved["/ch/1/fader"]:
                break
            assert time.monotonic() - start < WAIT, f"no morph to the scene: {seen}"
        assert any(0.52 < v < 0.98 for v in seen), f"no value mid-morph: {seen}"
        deadline = time.monotonic() + WAIT
        while (got := controls(client)) != saved:
            assert time.monotonic() < deadline, f"the scene did not come back: {got} != {saved}"
            time.sleep(0.05)
        assert time.monotonic() - start >= 3.0
        wait_for(
            d,
            lambda d: (
                strip(d, "/ch/1").get_attribute("data-fader") == "0.5000"
                and strip(d, "/ch/2").get_attribute("data-mute") == "1"
                and strip(d, "/ch/4").get_attribute("data-solo") == "1"
            ),
            "the page did not show the recalled scene",
        )

        # With a morph of 0: at once, the same end.
        change_the_mix()
        recall("0")
        deadline = time.monotonic() + WAIT
        while (got := controls(client)) != saved:
            assert time.monotonic() < deadline, f"the scene did not come back: {got} != {saved}"
            time.sleep(0.05)
    finally:
        d.quit()
        reset_mix(client)
        client.close()


def test_fine_adjust_moves_a_tenth_as_far(served: tuple[Daemon, Path]) -> None:
    """The same drag moves a fader a tenth as far with the *fine* switch on, or with
    Shift held (mixer.js: the drag's travel times 0.1)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()
    start, drag = 0.3, 60  # px: away from the unity detent either way
    try:
        open_page(d, daemon.http_url())
        for name in ("drums", "bass", "other"):
            client.send(f"/ch/{name}/fader", start)
        wait_for(
            d,
            lambda d: all(
                strip(d, f"/ch/{i}").get_attribute("data-fader") == "0.3000" for i in (1, 2, 3)
            ),
            "faders not shown at 0.3",
        )
        before = osc_value(client, "/ch/drums/fader")  # 0.3 as the page has it (float32)

        def moved(address: str, name: str, shift: bool = False) -> float:
            fader = strip(d, address).find_element(By.CSS_SELECTOR, ".fader")
            # No duration: one pointermove, so the daemon gets one value, the last.
            chain = ActionChains(d, duration=0)
            if shift:
                chain.key_down(Keys.SHIFT)
            chain.click_and_hold(fader).move_by_offset(0, -drag).release()
            if shift:
                chain.key_up(Keys.SHIFT)
            chain.perform()
            return wait_osc(client, f"/ch/{name}/fader", lambda v: v != before, f"{name} unmoved")

        height = d.execute_script("return document.querySelector('.strip .fader').clientHeight")
        coarse = moved("/ch/1", "drums") - before
        assert coarse == pytest.approx(drag / height, abs=1.01 / height)
        d.find_element(By.ID, "fine").click()
        assert d.find_element(By.ID, "fine").is_selected()
        fine = moved("/ch/2", "bass") - before
        d.find_element(By.ID, "fine").click()
        assert not d.find_element(By.ID, "fine").is_selected()
        shifted = moved("/ch/3", "other", shift=True) - before
        # The same pixels: only the factor differs (1 px either way is 1/60 of it).
        assert fine / coarse == pytest.approx(0.1, abs=0.004)
        assert shifted / coarse == pytest.approx(0.1, abs=0.004)

        # Shift pressed in the middle of a drag: the fader goes on from where it is,
        # at a tenth of the rate; it does not jump back towards where the drag began.
        client.send("/ch/vocals/fader", start)
        wait_osc(client, "/ch/vocals/fader", lambda v: v == before, "vocals not at 0.3")
        # and the page has it: a drag goes on from the value the page shows
        wait_for(
            d,
            lambda d: strip(d, "/ch/4").get_attribute("data-fader") == "0.3000",
            "vocals not shown at 0.3",
        )
        fader = strip(d, "/ch/4").find_element(By.CSS_SELECTOR, ".fader")
        ActionChains(d, duration=0).click_and_hold(fader).move_by_offset(0, -drag).key_down(
            Keys.SHIFT
        ).move_by_offset(0, -drag).release().key_up(Keys.SHIFT).perform()
        want = before + 1.1 * drag / height
        wait_osc(
            client,
            "/ch/vocals/fader",
            lambda v: abs(v - want) <= 1.01 / height,
            f"Shift mid-drag: the fader did not go on from {before + drag / height:.3f}",
        )
    finally:
        d.quit()
        reset_mix(client)
        client.close()


def test_two_quick_drags_are_no_double_click(served: tuple[Daemon, Path]) -> None:
    """Two quick nudges of one fader (or pan) with the mouse each move it; only a
    double-click that did not drag puts it back at unity (centre); the browser counts
    both as double-clicks."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()
    try:
        open_page(d, daemon.http_url())
        client.send("/ch/drums/fader", 0.3)
        wait_for(
            d,
            lambda d: strip(d, "/ch/1").get_attribute("data-fader") == "0.3000",
            "drums not shown at 0.3",
        )
        before = osc_value(client, "/ch/drums/fader")
        fader = strip(d, "/ch/1").find_element(By.CSS_SELECTOR, ".fader")
        height = d.execute_script("return arguments[0].clientHeight", fader)
        ActionChains(d, duration=0).click_and_hold(fader).move_by_offset(
            0, -24
        ).release().click_and_hold(fader).move_by_offset(0, -24).release().perform()
        # perform() returns once the page handled the events, a double-click included.
        shown = float(attribute(fader, "aria-valuenow"))
        assert shown == pytest.approx(before + 48 / height, abs=1.01 / height)
        wait_osc(client, "/ch/drums/fader", lambda v: abs(v - shown) < 6e-4, "the nudges not sent")
        ActionChains(d).double_click(fader).perform()
        wait_osc(client, "/ch/drums/fader", lambda v: v == 0.75, "a double-click did not reset")

        # The pan likewise: two quick nudges right, then a double-click centres it.
        pan = strip(d, "/ch/1").find_element(By.CSS_SELECTOR, ".pan")
        width = d.execute_script("return arguments[0].clientWidth", pan)
        ActionChains(d, duration=0).click_and_hold(pan).move_by_offset(
            10, 0
        ).release().click_and_hold(pan).move_by_offset(10, 0).release().perform()
        shown = float(attribute(pan, "aria-valuenow"))
        assert shown == pytest.approx(2 * 2 * 10 / width, abs=2.02 / width + 0.005)
        wait_osc(client, "/ch/drums/pan", lambda v: abs(v - shown) < 6e-3, "pan nudges not sent")
        ActionChains(d).double_click(pan).perform()
        wait_osc(client, "/ch/drums/pan", lambda v: v == 0.0, "a double-click did not centre")
    finally:
        d.quit()
        reset_mix(client)
        client.close()


# Delivers every message the page's WebSocket receives 250 ms late (a slow network),
# and records every value the drums fader shows once __watch() is called.
_SLOW_SOCKET = """
const Native = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
  let handler = null;
  Object.defineProperty(ws, "onmessage", { set(f) { handler = f; }, get() { return handler; } });
  ws.addEventListener("message", (ev) => {
    const data = ev.data;
    setTimeout(() => { if (handler) handler({ data }); }, 250);
  });
  return ws;
};
window.WebSocket.prototype = Native.prototype;
for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) window.WebSocket[k] = Native[k];
window.__shown = [];
window.__watch = (el) => new MutationObserver(() => {
  window.__shown.push(el.getAttribute("aria-valuenow"));
}).observe(el, { attributes: true, attributeFilter: ["aria-valuenow"] });
"""


def test_filter_and_echo_send_per_strip_and_the_master_filter(
    served: tuple[Daemon, Path],
) -> None:
    """Every strip has a filter slider (left low-pass, right high-pass) and an echo
    send; the master a filter. A drag sends what the page shows, a double-click turns
    the filter off exactly (0, the bypass), and values set over OSC show on the page."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()
    try:
        open_page(d, daemon.http_url())
        knob = strip(d, "/ch/2").find_element(By.CSS_SELECTOR, ".filter")
        width = d.execute_script("return arguments[0].clientWidth", knob)
        ActionChains(d, duration=0).click_and_hold(knob).move_by_offset(-20, 0).release().perform()
        shown = float(attribute(knob, "aria-valuenow"))
        assert shown == pytest.approx(-2 * 20 / width, abs=2.02 / width + 0.005)
        wait_osc(client, "/ch/bass/filter", lambda v: abs(v - shown) < 6e-3, "filter not sent")
        ActionChains(d).double_click(knob).perform()
        wait_osc(
            client, "/ch/bass/filter", lambda v: v == 0.0, "a double-click did not turn it off"
        )
        client.send("/ch/vocals/echo", 0.5)
        echo = strip(d, "/ch/4").find_element(By.CSS_SELECTOR, ".echo")  # NI order
        wait_for(d, lambda d: attribute(echo, "aria-valuenow") == "0.50", "echo send not shown")
        client.send("/ch/vocals/reverb", 0.25)
        reverb = strip(d, "/ch/4").find_element(By.CSS_SELECTOR, ".reverb")
        wait_for(d, lambda d: attribute(reverb, "aria-valuenow") == "0.25", "reverb not shown")
        client.send("/master/filter", -0.25)
        master = strip(d, "/master").find_element(By.CSS_SELECTOR, ".filter")
        wait_for(d, lambda d: attribute(master, "aria-valuenow") == "-0.25", "master filter")
        hidden = "return getComputedStyle(arguments[0]).visibility"
        assert (
            d.execute_script(hidden, strip(d, "/master").find_element(By.CSS_SELECTOR, ".echo"))
            == "hidden"
        )
        assert (
            d.execute_script(hidden, strip(d, "/master").find_element(By.CSS_SELECTOR, ".reverb"))
            == "hidden"
        )
    finally:
        d.quit()
        client.send("/ch/vocals/echo", 0.0)
        client.send("/ch/vocals/reverb", 0.0)
        client.send("/master/filter", 0.0)
        client.send("/ch/bass/filter", 0.0)
        wait_osc(client, "/master/filter", lambda v: v == 0.0, "master filter not reset")
        reset_mix(client)


def test_a_late_echo_never_throws_the_fader_back(served: tuple[Daemon, Path]) -> None:
    """Two nudges a moment apart on a slow connection: the echo of the first arrives
    after the second is done. The fader must not jump back to it (and then forward
    again): once the second nudge shows, only its value does."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()
    try:
        d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _SLOW_SOCKET})
        open_page(d, daemon.http_url())
        client.send("/ch/drums/fader", 0.3)
        wait_for(
            d,
            lambda d: strip(d, "/ch/1").get_attribute("data-fader") == "0.3000",
            "drums not shown at 0.3",
        )
        fader = strip(d, "/ch/1").find_element(By.CSS_SELECTOR, ".fader")
        height = d.execute_script("return arguments[0].clientHeight", fader)
        d.execute_script("window.__watch(arguments[0])", fader)
        nudge = ActionChains(d, duration=0).click_and_hold(fader).move_by_offset(0, -24).release()
        nudge.perform()
        first, second = f"{0.3 + 24 / height:.3f}", f"{0.3 + 48 / height:.3f}"
        # the first value goes out in its own frame
        wait_osc(client, "/ch/drums/fader", lambda v: f"{v:.3f}" == first, "first nudge not sent")
        ActionChains(d, duration=0).click_and_hold(fader).move_by_offset(0, -24).release().perform()
        value = wait_osc(
            client, "/ch/drums/fader", lambda v: f"{v:.3f}" == second, "nudges not sent"
        )
        # Every echo is in once the page shows the daemon's last value: the echoes
        # arrive in order, 250 ms late, and are held back until the fader is left alone.
        wait_for(
            d,
            lambda d: strip(d, "/ch/1").get_attribute("data-fader") == f"{value:.4f}",
            "the daemon's last value not shown",
        )
        shown = d.execute_script("return window.__shown")
        assert shown[0] == first and second in shown, shown
        after = shown[shown.index(second) :]
        assert after == [second] * len(after), shown
        assert fader.get_attribute("aria-valuenow") == second
        value = osc_value(client, "/ch/drums/fader")
        assert strip(d, "/ch/1").get_attribute("data-fader") == f"{value:.4f}"
    finally:
        d.quit()
        reset_mix(client)
        client.close()


def test_phone_width_no_page_scroll_every_fader_reachable(served: tuple[Daemon, Path]) -> None:
    """At 390×844 the page does not scroll sideways (the strips do, in their row), and
    every strip's fader can be brought into view, is on top there, and moves under a
    finger."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.mouse_button import MouseButton
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser(phone=True)
    try:
        open_page(d, daemon.http_url())
        width = d.execute_script("return window.innerWidth")
        assert width == PHONE["width"]
        assert d.execute_script("return document.scrollingElement.scrollWidth") <= width
        box = d.find_element(By.ID, "strips")
        assert d.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", box)
        for address in ("/ch/1", "/ch/2", "/ch/3", "/ch/4", "/master"):
            fader = strip(d, address).find_element(By.CSS_SELECTOR, ".fader")
            on_top = d.execute_script(
                """const f = arguments[0];
                f.scrollIntoView({block: "center", inline: "center"});
                const r = f.getBoundingClientRect();
                const x = r.left + r.width / 2, y = r.top + r.height / 2;
                const inside = r.left >= 0 && r.right <= innerWidth
                    && r.top >= 0 && r.bottom <= innerHeight;
                const hit = document.elementFromPoint(x, y);
                return inside && (hit === f || f.contains(hit));""",
                fader,
            )
            assert on_top, f"the {address} fader is not reachable at phone width"
            assert d.execute_script("return document.scrollingElement.scrollWidth") <= width
            actions = ActionBuilder(d)
            finger = actions.add_pointer_input(interaction.POINTER_TOUCH, "finger")
            finger.create_pointer_move(origin=fader)
            finger.create_pointer_down(button=MouseButton.LEFT)
            finger.create_pointer_move(duration=0, x=0, y=40, origin="pointer")
            finger.create_pointer_up(MouseButton.LEFT)
            actions.perform()
            wait_osc(client, f"{address}/fader", lambda v: v < 0.7, f"{address} fader unmoved")
    finally:
        d.quit()
        reset_mix(client)
        client.close()


# Every control the page has, as the finger meets it; the fine checkbox is inside its label.
TOUCHABLE = "button, select, input:not([type=checkbox]), label.fine, .fader, .knob, #posbar"
BEATS_TOUCHABLE = ", ".join(f"#beats {c}" for c in TOUCHABLE.split(", "))
CONTROLS_JS = """
const out = [];
for (const e of document.querySelectorAll(
    'button, select, input:not([type=checkbox]), label.fine, .fader, .knob, #posbar')) {
  const r = e.getBoundingClientRect();
  if (!e.getClientRects().length || getComputedStyle(e).visibility === 'hidden') continue;
  if (r.width < arguments[0] || r.height < arguments[0]) {
    out.push(`${e.id || e.className} ${Math.round(r.width)}x${Math.round(r.height)}`);
  }
}
return out;"""

# Pixels of the overview canvas in each colour (within 24 of each component), by name.
WAVE_COLOURS_JS = """
const c = document.getElementById('wave');
if (!c.width || !c.height) return {};
const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
const want = arguments[0], out = {};
for (const name of Object.keys(want)) out[name] = 0;
for (let i = 0; i < px.length; i += 4) {
  if (px[i + 3] < 200) continue;
  for (const [name, [r, g, b]] of Object.entries(want)) {
    const near = Math.abs(px[i] - r) <= 24 && Math.abs(px[i + 1] - g) <= 24
      && Math.abs(px[i + 2] - b) <= 24;
    if (near) out[name] += 1;
  }
}
return out;"""

# The beats row's controls: the rate slider, its button, keylock, pitch down, pitch,
# pitch up; quantize; six loop buttons; eight cue pads.
BEATS_CONTROLS = 6 + 1 + 6 + 8
# All of them: fine; play, stop, the overview, loop in, out and off, tap, halve, double;
# the beats row; track, load, scene, morph, recall, scene name, save; four strips of a
# fader, four knobs, mute and solo; the master's fader, filter and mute.
PAGE_CONTROLS = 1 + 9 + BEATS_CONTROLS + 7 + 4 * 7 + 3

# Each shown control matching arguments[0] (and not arguments[1]) brought on screen the way
# a user would (the page scrolled up or down when arguments[2], a strip by scrolling the
# strips' row) and then checked: wholly inside the screen and inside every box that clips
# it (a row that scrolls sideways hides what is past its edge), and on top at its centre.
# Returns the count checked and what failed.
REACH_JS = """
const [selector, except, scroll] = arguments;
const strips = document.getElementById('strips');
const bad = [];
let count = 0;
for (const e of document.querySelectorAll(selector)) {
  if (except && e.matches(except)) continue;
  if (!e.getClientRects().length || getComputedStyle(e).visibility === 'hidden') continue;
  count += 1;
  if (strips.contains(e)) e.scrollIntoView({block: 'nearest', inline: 'center'});
  else if (scroll) {
    const r = e.getBoundingClientRect();
    if (r.top < 0 || r.bottom > innerHeight) window.scrollBy(0, r.top - innerHeight / 2);
  }
  const r = e.getBoundingClientRect();
  const name = `${e.id || e.className || e.tagName} ${e.textContent.trim()}`.trim();
  const out = [];
  if (r.left < 0 || r.top < 0 || r.right > innerWidth + 0.5 || r.bottom > innerHeight + 0.5) {
    out.push('off screen');
  }
  for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
    const style = getComputedStyle(a);
    if (style.overflowX === 'visible' && style.overflowY === 'visible') continue;
    const c = a.getBoundingClientRect();
    const left = c.left + a.clientLeft, top = c.top + a.clientTop;
    if (r.left < left - 0.5 || r.top < top - 0.5 || r.right > left + a.clientWidth + 0.5
        || r.bottom > top + a.clientHeight + 0.5) {
      out.push(`cut by ${a.id || a.className}`);
    }
  }
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  if (!(hit === e || e.contains(hit))) out.push(`under ${hit && (hit.id || hit.className)}`);
  if (out.length) bad.push(`${name}: ${out.join(', ')}`);
}
return {bad, count};"""

NI_RGB = {  # the NI Stems colours the page gives these stems (mixer.js NI_COLOURS)
    "drums": (0, 158, 115),
    "bass": (213, 94, 0),
    "other": (204, 121, 167),
    "vocals": (86, 180, 233),
}
RECT_JS = "const r = arguments[0].getBoundingClientRect(); return [r.left,r.top,r.right,r.bottom]"


def wave_colours(d: Chrome) -> dict[str, int]:
    return dict(d.execute_script(WAVE_COLOURS_JS, NI_RGB))


@pytest.mark.parametrize("name", list(SCREENS))
def test_the_page_fits_the_screen_with_touch_targets_and_the_overview(
    served: tuple[Daemon, Path], name: str
) -> None:
    """At 390×844, 844×390, 1024×768 and 1280×800: no control under 44 px either way; the
    page does not scroll sideways; the strips fill the height below the transport, the
    master whole on screen (pinned at the right when the strips scroll), every mute and
    solo in view without scrolling the page (a phone held sideways included); on a tablet
    and a laptop the strips share the whole width. The overview shows every stem in its
    colour. Every control is whole on screen and on top where a user brings it (no
    scrolling on a tablet or a laptop; on a phone the page scrolled, a strip by scrolling
    the strips' row): none scrolls out of a row or is cut (the beats row's rate, keylock,
    pitch, quantize, loops and eight cue pads included; a phone in portrait shows them
    with its toggle). With ``STEMDECK_SCREENSHOTS=DIR`` the screens are saved there
    (docs/ has them, and the portrait phone with the beats row open)."""
    from selenium.webdriver.common.by import By

    daemon, _ = served
    screen = SCREENS[name]
    d = browser(screen=screen)
    try:
        open_page(d, daemon.http_url())
        assert d.execute_script("return [innerWidth, innerHeight]") == [screen.width, screen.height]
        wait_for(d, lambda d: min(wave_colours(d).values()) > 0, "the overview lacks a stem")
        assert d.execute_script(CONTROLS_JS, HIT) == []
        assert d.execute_script("return document.scrollingElement.scrollWidth") == screen.width
        assert d.execute_script("return scrollY") == 0
        rect = RECT_JS
        left, top, right, bottom = d.execute_script(rect, strip(d, "/master"))
        assert left >= 0 and top >= 0 and right <= screen.width and bottom <= screen.height
        box = d.find_element(By.ID, "strips")
        row_bottom = d.execute_script(rect, box)[3]
        assert screen.height - 24 <= row_bottom <= screen.height, "strips short of the height"
        for address in ("/ch/1", "/ch/2", "/ch/3", "/ch/4", "/master"):
            for button in strip(d, address).find_elements(By.CSS_SELECTOR, ".mute, .solo"):
                _, b_top, _, b_bottom = d.execute_script(rect, button)
                assert b_top >= 0 and b_bottom <= screen.height, f"{address}'s buttons off screen"
        if screen.width >= 1024:
            assert d.execute_script("return arguments[0].scrollWidth", box) == d.execute_script(
                "return arguments[0].clientWidth", box
            )
            last_right = d.execute_script(rect, strip(d, "/master"))[2]
            assert last_right >= d.execute_script(rect, box)[2] - 16, "width left unused"
        folder = os.environ.get("STEMDECK_SCREENSHOTS")
        if folder:
            d.save_screenshot(str(Path(folder) / f"mixer-{screen.width}x{screen.height}.png"))
        # Every control whole on screen and on top, none scrolled out of a row or cut:
        # on a tablet and a laptop all at once; on a phone by scrolling the page (and
        # the strips' row, which scrolls sideways by design), the beats row behind its
        # toggle in portrait.
        scroll = screen.width < 1024
        toggles = d.find_elements(By.ID, "beats-toggle")
        assert [t.is_displayed() for t in toggles] == [name == "phone"]
        toggle = toggles[0]
        if toggle.is_displayed():
            assert toggle.text == "rate · loops · cues ▸"
            assert attribute(toggle, "aria-expanded") == "false"
            assert not d.find_element(By.ID, "beats").is_displayed()
            checked = d.execute_script(REACH_JS, TOUCHABLE, "#beats *", scroll)
            assert checked == {"bad": [], "count": PAGE_CONTROLS - BEATS_CONTROLS + 1}
            d.execute_script("window.scrollTo(0, 0)")
            toggle.click()
            wait_for(d, lambda d: d.find_element(By.ID, "beats").is_displayed(), "no beats row")
            assert toggle.text == "rate · loops · cues ▾"
            assert attribute(toggle, "aria-expanded") == "true"
            assert attribute(toggle, "class").split() == ["btn", "small", "beats-toggle", "on"]
            checked = d.execute_script(REACH_JS, BEATS_TOUCHABLE, "", scroll)
            assert checked == {"bad": [], "count": BEATS_CONTROLS}
            assert d.execute_script(CONTROLS_JS, HIT) == []
            if folder:
                d.execute_script("window.scrollTo(0, 0)")
                path = Path(folder) / f"mixer-{screen.width}x{screen.height}-beats.png"
                d.save_screenshot(str(path))
            toggle.click()
            wait_for(d, lambda d: not d.find_element(By.ID, "beats").is_displayed(), "still open")
            assert (toggle.text, attribute(toggle, "aria-expanded")) == (
                "rate · loops · cues ▸",
                "false",
            )
            assert attribute(toggle, "class").split() == ["btn", "small", "beats-toggle"]
        else:
            checked = d.execute_script(REACH_JS, TOUCHABLE, "", scroll)
            fine = d.find_element(By.CSS_SELECTOR, "label.fine").is_displayed()
            assert fine == (name != "phone-landscape")  # a short screen has no room for it
            assert checked == {"bad": [], "count": PAGE_CONTROLS - (not fine)}
            cues = d.execute_script(REACH_JS, BEATS_TOUCHABLE, "", scroll)
            assert cues == {"bad": [], "count": BEATS_CONTROLS}
        if not scroll:
            assert d.execute_script("return [scrollY, document.scrollingElement.scrollHeight]") == [
                0,
                screen.height,
            ]
    finally:
        d.quit()


def test_the_overview_follows_the_gains_and_a_tap_seeks(served: tuple[Daemon, Path]) -> None:
    """A stem muted (from anywhere) leaves the overview and comes back when unmuted; on
    a phone a tap on the overview seeks to that point of the track, to the pixel."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.mouse_button import MouseButton
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser(phone=True)
    try:
        open_page(d, daemon.http_url())
        wait_for(d, lambda d: min(wave_colours(d).values()) > 0, "the overview lacks a stem")
        client.send("/ch/vocals/mute", 1)
        wait_for(
            d,
            lambda d: wave_colours(d)["vocals"] == 0 and min(wave_colours(d).values()) == 0,
            "the muted vocals still show",
        )
        assert [v > 0 for k, v in sorted(wave_colours(d).items()) if k != "vocals"] == [True] * 3
        client.send("/ch/vocals/mute", 0)
        wait_for(d, lambda d: wave_colours(d)["vocals"] > 0, "the vocals did not come back")

        client.send("/transport/pause")
        wait_osc(client, "/transport/playing", lambda v: v == 0, "still playing")
        length = osc_value(client, "/transport/length")
        bar = d.find_element(By.ID, "posbar")
        left, width = d.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.left, r.width];", bar
        )
        actions = ActionBuilder(d)
        finger = actions.add_pointer_input(interaction.POINTER_TOUCH, "finger")
        finger.create_pointer_move(origin=bar, x=-int(width / 4), y=0)  # from its centre
        finger.create_pointer_down(button=MouseButton.LEFT)
        finger.create_pointer_up(MouseButton.LEFT)
        actions.perform()
        x = round(left + width / 2) - int(width / 4)  # where the finger landed, to the pixel
        want = (x - left) / width * length
        got = wait_osc(
            client, "/transport/position", lambda v: abs(v - want) <= length / width, "no seek"
        )
        assert abs(got - want) <= length / width
    finally:
        d.quit()
        client.send("/transport/play")
        client.send("/ch/vocals/mute", 0)
        client.close()


def test_the_page_shows_the_tempo_and_the_bar_and_edits_the_grid(
    served: tuple[Daemon, Path],
) -> None:
    """``128.0 BPM  bar N . B`` from /track/grid and the streamed /transport/beat; the
    page's halve and double are the daemon's grid edits."""
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()

    def tempo(d: Chrome) -> str:
        return str(d.find_element(By.ID, "tempo").text)

    def shows(bpm: str) -> Callable[[Chrome], bool]:
        return lambda d: re.fullmatch(rf"{bpm} BPM  bar -?\d+ \. [1-4]", tempo(d)) is not None

    try:
        wait_osc_reply(client, "/track/name", lambda a: a == ["tones"], "tones not playing")
        wait_osc_reply(client, "/track/bpm", lambda a: len(a) == 1, "no beat grid", 3 * WAIT)
        replies = client.ask("/track/bpm", 128.0)  # the downbeat: the play head's bar's
        assert [(a, v[0], v[2]) for a, v in replies] == [("/track/grid", 128.0, 4)]
        open_page(d, daemon.http_url())
        wait_for(d, shows("128.0"), "the page does not show 128.0 BPM and the bar")
        # No leader (sync off): the sync readout beside the tempo is hidden and empty.
        sync = d.find_element(By.ID, "sync")
        assert (sync.is_displayed(), sync.get_attribute("textContent")) == (False, "")
        d.find_element(By.ID, "grid-halve").click()
        wait_for(d, shows("64.0"), "halved: the page does not show 64.0 BPM")
        assert osc_value(client, "/track/bpm") == 64.0
        d.find_element(By.ID, "grid-double").click()
        wait_for(d, shows("128.0"), "doubled: the page does not show 128.0 BPM")
        assert osc_value(client, "/track/bpm") == 128.0
    finally:
        d.quit()
        client.send("/track/grid/reset")
        client.close()


def test_the_page_sets_the_rate_keylock_and_pitch(served: tuple[Daemon, Path]) -> None:
    """The rate slider sends the rate it shows (to four decimals), and its button shows
    the change in % and the tempo on the grid, and resets it to exactly 1; the keylock
    button toggles ``/transport/keylock``; the pitch buttons step a semitone (a tenth
    fine) and reset to 0; all three follow the daemon."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()

    def text(d: Chrome, element_id: str) -> str:
        return str(d.find_element(By.ID, element_id).text)

    def lit(d: Chrome) -> bool:
        return "on" in str(d.find_element(By.ID, "keylock").get_attribute("class")).split()

    try:
        wait_osc_reply(client, "/track/name", lambda a: a == ["tones"], "tones not playing")
        wait_osc_reply(client, "/track/bpm", lambda a: len(a) == 1, "no beat grid", 3 * WAIT)
        client.ask("/track/bpm", 128.0)
        open_page(d, daemon.http_url())
        wait_for(d, lambda d: text(d, "rate-reset") == "±0.0 %  128.0 BPM", "rate 1 not shown")
        assert text(d, "pitch-reset") == "0 st"
        assert not lit(d)
        knob = d.find_element(By.ID, "rate")
        assert attribute(knob, "aria-valuenow") == "1.0000"
        width = d.execute_script("return arguments[0].clientWidth", knob)
        ActionChains(d, duration=0).click_and_hold(knob).move_by_offset(20, 0).release().perform()
        shown = float(attribute(knob, "data-rate"))
        assert shown == pytest.approx(2 ** (2 * 20 / width), abs=0.02)
        assert shown == round(shown, 4) and shown > 1.0
        # The daemon's rate is exactly the page's (an OSC float32 each way).
        wait_osc(client, "/transport/rate", lambda v: v == float(np.float32(shown)), "rate")
        assert text(d, "rate-reset") == f"{(shown - 1) * 100:+.1f} %  {128 * shown:.1f} BPM"
        d.find_element(By.ID, "rate-reset").click()
        wait_osc(client, "/transport/rate", lambda v: v == 1.0, "the reset did not send 1")
        wait_for(d, lambda d: text(d, "rate-reset") == "±0.0 %  128.0 BPM", "reset not shown")
        client.send("/transport/rate", 0.75)  # and the page follows the daemon
        wait_for(d, lambda d: text(d, "rate-reset") == "-25.0 %  96.0 BPM", "0.75 not shown")
        assert attribute(knob, "aria-valuenow") == "0.7500"

        d.find_element(By.ID, "keylock").click()
        wait_osc(client, "/transport/keylock", lambda v: v == 1, "keylock not switched on")
        wait_for(d, lit, "keylock on not shown")
        client.send("/transport/keylock", 0)
        wait_for(d, lambda d: not lit(d), "keylock off from OSC not shown")
        d.find_element(By.ID, "keylock").click()
        wait_osc(client, "/transport/keylock", lambda v: v == 1, "keylock not on again")

        d.find_element(By.ID, "pitch-up").click()
        wait_for(d, lambda d: text(d, "pitch-reset") == "+1 st", "pitch +1 not shown")
        d.find_element(By.ID, "pitch-up").click()
        wait_osc(client, "/transport/pitch", lambda v: v == 2.0, "pitch not +2")
        wait_for(d, lambda d: text(d, "pitch-reset") == "+2 st", "pitch +2 not shown")
        d.find_element(By.ID, "fine").click()
        d.find_element(By.ID, "pitch-down").click()
        wait_osc(client, "/transport/pitch", lambda v: v == float(np.float32(1.9)), "pitch 1.9")
        wait_for(d, lambda d: text(d, "pitch-reset") == "+1.9 st", "pitch 1.9 not shown")
        client.send("/transport/pitch", -3.5)
        wait_for(d, lambda d: text(d, "pitch-reset") == "-3.5 st", "pitch -3.5 not shown")
        d.find_element(By.ID, "pitch-reset").click()
        wait_osc(client, "/transport/pitch", lambda v: v == 0.0, "the reset did not send 0")
        wait_for(d, lambda d: text(d, "pitch-reset") == "0 st", "pitch 0 not shown")
        assert osc_value(client, "/transport/rate") == 0.75
        assert osc_value(client, "/transport/keylock") == 1
    finally:
        d.quit()
        client.send("/transport/rate", 1.0)
        client.send("/transport/keylock", 0)
        client.send("/transport/pitch", 0.0)
        client.send("/track/grid/reset")
        wait_osc(client, "/transport/rate", lambda v: v == 1.0, "rate not reset")
        wait_osc(client, "/transport/keylock", lambda v: v == 0, "keylock not reset")
        wait_osc(client, "/transport/pitch", lambda v: v == 0.0, "pitch not reset")
        client.close()


def test_the_page_sets_quantize_loops_in_beats_and_hot_cues(
    served: tuple[Daemon, Path],
) -> None:
    """The quantize selector is ``/quantize``; a loop-in-beats button loops that many
    beats of the grid; an empty cue pad sets its cue, a set one jumps, a right-click
    clears it, and the pads follow the daemon's cues."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    daemon, _ = served
    client = Client(daemon.port)
    d = browser()

    def pad(d: Chrome, n: int) -> WebElement:
        return d.find_elements(By.CSS_SELECTOR, "#cues .cue")[n - 1]

    try:
        wait_osc_reply(client, "/track/name", lambda a: a == ["tones"], "tones not playing")
        wait_osc_reply(client, "/track/bpm", lambda a: len(a) == 1, "no beat grid", 3 * WAIT)
        client.ask("/track/bpm", 120.0)  # a beat of 0.5 s
        client.send("/transport/play")
        open_page(d, daemon.http_url())
        assert len(d.find_elements(By.CSS_SELECTOR, "#cues .cue")) == 8
        Select(d.find_element(By.ID, "quantize")).select_by_value("beat")
        wait_osc_reply(client, "/quantize", lambda a: a == ["beat"], "quantize not set")
        client.send("/quantize", "bar")  # and the page follows the daemon
        wait_for(
            d,
            lambda d: Select(d.find_element(By.ID, "quantize")).first_selected_option.text == "bar",
            "the page does not show quantize bar",
        )
        # From the start of the 4 s track: a beat from the head's in its last beat would
        # end past the track (an /error, no loop): a head left there by the play so far
        # failed one CI run in a few.
        client.send("/transport/seek", 0.0)
        wait_osc(client, "/transport/position", lambda v: v < 1.0, "the seek to 0")
        d.find_element(By.CSS_SELECTOR, '#loop-beats [data-beats="1"]').click()
        region = wait_osc_reply(
            client, "/transport/loop", lambda a: a[1] > a[0], "no loop from the 1-beat button"
        )
        assert region[1] - region[0] == pytest.approx(0.5, abs=1e-4)
        client.send("/transport/loop/off")

        pad(d, 3).click()  # empty: set
        position = wait_osc(client, "/cue/3", lambda v: v >= 0, "the pad did not set cue 3")
        wait_for(d, lambda d: "set" in str(pad(d, 3).get_attribute("class")), "pad 3 not lit")
        assert float(attribute(pad(d, 3), "data-position")) == pytest.approx(position, abs=1e-3)
        client.send("/quantize", "off")
        # Paused, so the position says where the jump went (the daemon is shared).
        client.send("/transport/pause")
        wait_osc(client, "/transport/playing", lambda v: v == 0, "the pause")
        client.send("/transport/seek", 3.0)
        wait_osc(client, "/transport/position", lambda v: v == 3.0, "the seek to 3 s")
        pad(d, 3).click()  # set: jump there
        wait_osc(
            client,
            "/transport/position",
            lambda v: abs(v - position) < 1e-3,
            "the pad did not jump to cue 3",
        )
        client.send("/transport/play")
        ActionChains(d).context_click(pad(d, 3)).perform()  # clear
        wait_osc(client, "/cue/3", lambda v: v == -1.0, "a right-click did not clear cue 3")
        wait_for(d, lambda d: "set" not in str(pad(d, 3).get_attribute("class")), "pad 3 lit")
    finally:
        d.quit()
        client.send("/quantize", "off")
        client.send("/transport/loop/off")
        client.send("/cue/3/clear")
        client.send("/track/grid/reset")
        client.close()


def test_track_picked_separates_then_its_strips_show(served: tuple[Daemon, Path]) -> None:
    """Picked in the page's track list and loaded: a plain file shows its separation
    progress (the strips dimmed meanwhile), then plays its channels; a stem file with
    other channels brings its own strips; the first track comes back the same way."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    daemon, root = served
    library = root / "library"
    client = Client(daemon.port)
    d = browser()

    def load(name: str) -> None:
        path = str(library / name)
        wait_for(
            d,
            lambda d: (
                path
                in [
                    o.get_attribute("value")
                    for o in Select(d.find_element(By.ID, "track-list")).options
                ]
            ),
            f"{name} not in the page's track list",
        )
        Select(d.find_element(By.ID, "track-list")).select_by_value(path)
        d.find_element(By.ID, "track-load").click()

    def names(d: Chrome) -> list[str]:
        return [e.text for e in d.find_elements(By.CSS_SELECTOR, ".strip .name")]

    def ready(track: str, channels: list[str], labels: list[str] | None = None) -> None:
        """``track`` plays ``channels``; its strips show ``labels`` (default: the
        channels' names; a stem file's own names otherwise)."""
        wait_osc_reply(client, "/track/name", lambda a: a == [track], f"{track} not loaded")
        # A separation in a niced process: on a busy machine it gets what is left.
        wait_osc_reply(
            client, "/track/progress", lambda a: a == ["ready", 1.0], "not ready", 3 * WAIT
        )
        assert wait_osc_reply(client, "/channels", lambda a: True, "no channels") == channels
        wait_for(
            d,
            lambda d: (
                d.find_element(By.ID, "track-name").text == track
                and d.execute_script("return document.getElementById('progress').hidden")
                and "separating" not in attribute(d.find_element(By.ID, "strips"), "class")
                and names(d) == [*(channels if labels is None else labels), "master"]
            ),
            f"the page did not show {track} ready with its strips",
        )

    try:
        open_page(d, daemon.http_url())
        wait_for(d, lambda d: d.find_element(By.ID, "track-list").is_displayed(), "no picker")
        options = Select(d.find_element(By.ID, "track-list")).options
        assert [o.text for o in options] == ["duo.stem.mp4", "second.wav", "tones.stem.mp4"]

        # Every state the page shows from here on (a separation can be over between two
        # polls of a busy test): the track's name, the progress shown, its text, the
        # strips dimmed.
        d.execute_script(
            """
            const $ = (id) => document.getElementById(id);
            window.shown = [];
            const keep = () => window.shown.push([
                $("track-name").textContent, !$("progress").hidden,
                $("progress-text").textContent, $("strips").classList.contains("separating"),
            ]);
            new MutationObserver(keep).observe(document.body, {
                subtree: true, childList: true, characterData: true, attributes: true,
                attributeFilter: ["class", "hidden"],
            });
            """
        )
        load("second.wav")
        ready("second", ["drums", "bass", "other", "vocals"])  # the order of every source

        # The page showed the separation under way: the share of the whole separation
        # done and the stage's own (never "separating 100%" with only the STFT done),
        # strips dimmed; or, once the stems play as their chunks come, the share of
        # chunks ready, the strips live.
        def under_way(name: str, shown: bool, text: str, dimmed: bool) -> bool:
            separating = re.fullmatch(
                r"separating \d+% \((starting|(stft|nmf|activations|reconstruct) \d+%)\)", text
            )
            stems = re.fullmatch(r"stems \d+% ready", text)
            return (
                name == "second"
                and shown
                and ((separating is not None and dimmed) or (stems is not None and not dimmed))
            )

        states = d.execute_script("return window.shown")
        assert any(under_way(*state) for state in states), states

        load("duo.stem.mp4")
        ready("duo", ["other", "vocals"], list(DUO_NAMES))  # roles, labelled Keys, Voice
        colours = wait_osc_reply(client, "/channels/colors", lambda a: len(a) == 2, "colours")
        assert [c.upper() for c in colours] == list(DUO_COLOURS)
        shown = [
            d.execute_script(
                "return arguments[0].style.getPropertyValue('--colour')", strip(d, f"/ch/{i}")
            )
            for i in (1, 2)
        ]
        assert shown == colours

        load("tones.stem.mp4")
        ready("tones", list(TONES), list(NI_NAMES))
        # The strips that came back follow the daemon again.
        client.send("/ch/vocals/fader", 0.6)
        wait_for(
            d,
            lambda d: strip(d, "/ch/4").get_attribute("data-fader") == "0.6000",
            "a strip that came back does not follow the daemon",
        )
    finally:
        d.quit()
        reset_mix(client)
        client.close()


def test_two_browsers_osc_and_the_recording(served: tuple[Daemon, Path]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    daemon, root = served
    url = daemon.http_url()
    client = Client(daemon.port)
    a = browser()
    b = browser()
    try:
        for d in (a, b):
            d.get(url)
            wait_for(d, lambda d: d.find_element(By.ID, "conn").text == "live", "page not live")
            wait_for(
                d,
                lambda d: (
                    len(d.find_elements(By.CSS_SELECTOR, ".strip")) == 5
                    and strip(d, "/ch/2").get_attribute("data-fader") == "0.7500"
                ),
                "strips not shown with their values",
            )
        names = [e.text for e in a.find_elements(By.CSS_SELECTOR, ".strip .name")]
        # The stem file's own names label the strips (stemdeck writes NI's: "Drums"...).
        assert names == ["Drums", "Bass", "Other", "Vocals", "master"]

        # Browser A moves the bass fader down: the daemon has the page's value.
        fader = strip(a, "/ch/2").find_element(By.CSS_SELECTOR, ".fader")
        ActionChains(a).click_and_hold(fader).move_by_offset(0, 30).move_by_offset(
            0, 30
        ).release().perform()
        wait_for(
            a,
            lambda d: float(strip(d, "/ch/2").get_attribute("data-fader") or 1) < 0.7,
            "bass fader did not move in the page",
        )
        shown = float(attribute(strip(a, "/ch/2"), "data-fader"))
        bass = wait_osc(client, "/ch/bass/fader", lambda v: v < 0.7, "bass fader not sent")
        assert bass == pytest.approx(shown, abs=1e-3)

        # Browser A mutes the drums.
        strip(a, "/ch/1").find_element(By.CSS_SELECTOR, ".mute").click()
        wait_osc(client, "/ch/drums/mute", lambda v: v == 1, "drums not muted")
        assert osc_value(client, "/ch/bass/mute") == 0

        # Browser B shows both changes.
        wait_for(
            b,
            lambda d: (
                strip(d, "/ch/1").get_attribute("data-mute") == "1"
                and "on"
                in attribute(strip(d, "/ch/1").find_element(By.CSS_SELECTOR, ".mute"), "class")
            ),
            "the second browser did not show the mute",
        )
        wait_for(
            b,
            lambda d: (
                float(strip(d, "/ch/2").get_attribute("data-fader") or 1)
                == pytest.approx(bass, abs=1e-3)
            ),
            "the second browser did not show the fader",
        )

        # A change over OSC moves the fader in both pages.
        client.send("/ch/vocals/fader", 0.5)
        for d in (a, b):
            wait_for(
                d,
                lambda d: strip(d, "/ch/4").get_attribute("data-fader") == "0.5000",
                "an OSC change did not move the page's fader",
            )
        wait_for(
            a,
            lambda d: strip(d, "/ch/4").find_element(By.CSS_SELECTOR, ".db").text == "-10.0 dB",
            "the dB readout did not follow",
        )
        position = client.query("/transport/position")
    finally:
        a.quit()
        b.quit()
        client.close()

    # Let half a second more play with the drums muted, then read the recording.
    wait_played(daemon.client, 0.6)
    code, err = daemon.stop()
    assert code == 0, err
    rec, sr = sf.read(root / "rec.wav", dtype="float32")
    assert sr == SR
    mono = rec.mean(axis=1)
    after = mono[-int(0.5 * SR) :]  # the end: drums muted, bass down, vocals at -10 dB
    assert amplitude(after, TONES["drums"]) < 0.2 * 10 ** (-60 / 20)  # gone
    assert amplitude(after, TONES["other"]) == pytest.approx(0.2, rel=0.05)  # back at unity
    assert amplitude(after, TONES["vocals"]) == pytest.approx(0.2 * 10 ** (-10 / 20), rel=0.05)
    bass_db = fader_to_db(bass)  # the console taper, every segment (60 px can pass 0.25)
    assert amplitude(after, TONES["bass"]) == pytest.approx(0.2 * 10 ** (bass_db / 20), rel=0.05)
    assert position > 0


def test_page_reconnects_and_shows_the_new_state(tmp_path: Path) -> None:
    """The daemon goes away: the page says so; one comes back on the same port with
    other values: the page reconnects by itself and shows them."""
    import socket

    from selenium.webdriver.common.by import By

    stems = tone_stems(2.0)
    track = tmp_path / "tones.stem.mp4"
    write_stem_file(track, stems.sum(axis=0), stems, SR, codec="alac")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "cfg")}
    args = [str(track), "--no-audio", "--http", str(port)]
    first = Daemon(args, env, tmp_path)
    d = browser()
    second = None
    try:
        first.wait_ready()
        open_page(d, first.http_url())
        assert strip(d, "/ch/2").get_attribute("data-mute") == "0"
        code, err = first.stop()
        assert code == 0, err
        wait_for(d, lambda d: d.find_element(By.ID, "conn").text != "live", "loss not shown")
        assert d.find_element(By.ID, "conn").text.startswith("reconnecting")
        second = Daemon(args, env, tmp_path)
        second.wait_ready()
        second.client.send("/ch/bass/mute", 1)
        second.client.send("/ch/other/fader", 0.25)
        wait_for(d, lambda d: d.find_element(By.ID, "conn").text == "live", "no reconnection")
        wait_for(
            d,
            lambda d: (
                strip(d, "/ch/2").get_attribute("data-mute") == "1"
                and strip(d, "/ch/3").get_attribute("data-fader") == "0.2500"
            ),
            "the page did not show the new daemon's state",
        )
    finally:
        d.quit()
        first.stop()
        if second is not None:
            code, err = second.stop()
            assert code == 0, err


def test_the_demo_has_no_track_picker(tmp_path: Path) -> None:
    """The demo has no library: no track picker (it said "no tracks (--library)"),
    the scene picker as ever (issue 26)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "cfg")}
    daemon = Daemon(["--no-audio"], env, tmp_path, command="demo")
    d = browser()
    try:
        daemon.wait_ready(separated=False)
        open_page(d, daemon.http_url())
        # The page asks /state, /track/list, /scene/list in that order: answered in order.
        wait_for(
            d,
            lambda d: (
                [o.text for o in Select(d.find_element(By.ID, "scene-list")).options]
                == ["acapella", "instrumental", "unity"]
            ),
            "the scene list not filled",
        )
        assert not d.find_element(By.ID, "track-list").is_displayed()
        assert not d.find_element(By.ID, "track-load").is_displayed()
        assert d.find_element(By.ID, "scene-list").is_displayed()
        assert Select(d.find_element(By.ID, "track-list")).options == []
    finally:
        d.quit()
        code, err = daemon.stop()
        assert code == 0, err


def test_a_rate_the_leader_refuses_puts_the_slider_back(tmp_path: Path) -> None:
    """Under the JACK transport the rate is the leader's: a rate the slider sends is
    refused (the page says why) and the slider goes back to the daemon's rate, not
    left where the hand put it."""
    from jack_helpers import env_for, start_jack
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    name = f"stemdeck-web-{os.getpid()}"
    jackd = start_jack(name)
    if jackd is None:
        pytest.skip("needs jackd (apt-get install jackd2)")
    track = tmp_path / "tones.wav"
    sf.write(track, tone_mix(6.0, sr=SR, seed=3).T, SR, subtype="FLOAT")
    env = {
        **env_for(name),
        "STEMDECK_CACHE": str(tmp_path / "cache"),
        "STEMDECK_CONFIG": str(tmp_path / "config"),
    }
    daemon = Daemon([str(track), "--audio", "jack", "--sync", "jack"], env, tmp_path)
    d = None
    try:
        daemon.wait_ready(separated=False)
        d = browser()
        open_page(d, daemon.http_url())
        knob = d.find_element(By.ID, "rate")
        wait_for(d, lambda d: attribute(knob, "aria-valuenow") == "1.0000", "rate 1 not shown")
        ActionChains(d, duration=0).click_and_hold(knob).move_by_offset(20, 0).release().perform()
        said = "/transport/rate: the tempo follows the JACK transport"
        wait_for(d, lambda d: said in d.find_element(By.ID, "toast").text, "no refusal shown")
        wait_for(
            d, lambda d: attribute(knob, "aria-valuenow") == "1.0000", "the slider stayed moved"
        )
        assert daemon.client.ask("/transport/rate") == [("/transport/rate", [1.0])]
    finally:
        if d is not None:
            d.quit()
        daemon.stop()
        jackd.terminate()
        jackd.wait(timeout=10)
