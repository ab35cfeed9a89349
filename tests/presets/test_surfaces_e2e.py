"""The shipped Open Stage Control session in the real Open Stage Control (issue 26).

Open Stage Control serves the session; headless Chromium opens its page, as a phone
would; a recording relay between Open Stage Control and a running ``stemdeck serve
--no-audio`` keeps every message the page sends (with its type tags) and hands the
daemon's replies back. The page must render every widget of the session with no error,
send exactly what ``test_surfaces.py``'s replay expects when its vocals fader, a mute,
the transport and a scene button are used, and follow the daemon's values: its
feedback, and the values asked for when a page opens after the first (a renewed
subscription brings no full state).

Skipped unless ``open-stage-control`` is on PATH (CI does not install it: it is not
on the npm registry, see docs/surfaces.md) and Debian's chromium, chromium-driver and
selenium are there.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from daemon_helpers import Client, Daemon, poll
from pythonosc.osc_message import OscMessage
from test_surfaces import FEEDBACK_PORT, Sent, js_sends, open_stage_control_messages, shipped

from stemdeck.core.audiofile.stemfile_write import write_stem_file
from stemdeck.daemon.osc.wire import encode_message

if TYPE_CHECKING:  # selenium is optional: the module is skipped without it
    from selenium.webdriver import Chrome
    from selenium.webdriver.remote.webelement import WebElement

OPEN_STAGE_CONTROL = shutil.which("open-stage-control")
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
        OPEN_STAGE_CONTROL is None,
        reason="needs open-stage-control on PATH (not installed by scripts/setup or CI; "
        "docs/surfaces.md says how it was checked)",
    ),
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER and HAVE_SELENIUM),
        reason="needs Debian's chromium and chromium-driver and the selenium package "
        "(scripts/setup --test installs them)",
    ),
]

SESSION = "stemdeck-open-stage-control.json"
SR = 48000
WAIT = 60.0  # seconds: generous, for a busy machine; every wait ends at its event


@dataclass(frozen=True)
class Heard:
    """One message the page sent: its address, type tags and arguments."""

    address: str
    tags: str
    args: tuple[Any, ...]


class Relay:
    """Between Open Stage Control (``--send`` here) and the daemon: keeps each message
    Open Stage Control sends and forwards it; the daemon's replies go back to the
    sender, as they would with no relay (feedback goes to the subscribed port)."""

    def __init__(self, daemon_port: int) -> None:
        self.target = ("127.0.0.1", daemon_port)
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down.bind(("127.0.0.1", 0))
        self.down.settimeout(0.05)
        self.port = int(self.down.getsockname()[1])
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind(("127.0.0.1", 0))
        self.up.setblocking(False)
        self.heard: list[Heard] = []
        self._sender: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.down.recvfrom(65536)
            except TimeoutError:
                pass
            else:
                message = OscMessage(data)
                comma = data.index(b",", len(message.address))
                tags = data[comma : data.index(b"\0", comma)].decode()
                with self._lock:
                    self.heard.append(Heard(message.address, tags, tuple(message.params)))
                self._sender = sender
                self.up.sendto(data, self.target)
            try:
                while True:
                    reply, _ = self.up.recvfrom(65536)
                    if self._sender is not None:
                        self.down.sendto(reply, self._sender)
            except BlockingIOError:
                pass

    def take(self) -> list[Heard]:
        """What was heard since the last call."""
        with self._lock:
            out, self.heard = self.heard, []
        return out

    def wait(self, count: int) -> list[Heard]:
        """Until ``count`` messages were heard since the last call; they are returned
        (more than ``count``: the assertion that follows shows them)."""
        got: list[Heard] = []

        def read() -> list[Heard]:
            got.extend(self.take())
            return got

        poll(read, lambda h: len(h) >= count, f"{count} messages from the page", WAIT)
        return got

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.down.close()
        self.up.close()


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Rig:
    daemon: Daemon
    relay: Relay
    osc: subprocess.Popen[str]
    osc_log: list[str]
    url: str
    version: str

    def widget_values(self) -> dict[str, Any]:
        """Every widget's value in the open page (``/STATE/GET``, which the page
        answers)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(2.0)
            me = f"127.0.0.1:{s.getsockname()[1]}"
            s.sendto(encode_message("/STATE/GET", [me]), ("127.0.0.1", FEEDBACK_PORT))
            try:
                data, _ = s.recvfrom(65536)
            except TimeoutError:
                return {}
        message = OscMessage(data)
        assert message.address == "/STATE/GET", message.address
        return dict(json.loads(message.params[0]))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    assert OPEN_STAGE_CONTROL is not None
    if not _udp_port_free(FEEDBACK_PORT):
        raise AssertionError(
            f"UDP port {FEEDBACK_PORT} (the session's feedback port) is taken on this machine"
        )
    root = tmp_path_factory.mktemp("osc")
    t = np.arange(2 * SR) / SR
    stems = np.stack(
        [np.stack([0.2 * np.sin(2 * np.pi * f * t)] * 2) for f in (3000, 200, 700, 1300)]
    ).astype(np.float32)
    write_stem_file(root / "tones.stem.mp4", stems.sum(axis=0), stems, SR, codec="alac")
    env = {"STEMDECK_CACHE": str(root / "cache"), "STEMDECK_CONFIG": str(root / "config")}
    daemon = Daemon([str(root / "tones.stem.mp4"), "--no-audio"], env, root)
    relay = None
    osc = None
    try:
        daemon.wait_ready()
        relay = Relay(daemon.port)
        version = subprocess.run(
            [OPEN_STAGE_CONTROL, "--version"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        http = _free_tcp_port()
        session = root / SESSION
        session.write_bytes(shipped(SESSION))
        osc = subprocess.Popen(
            [
                OPEN_STAGE_CONTROL,
                "--no-gui",
                "--no-qrcode",
                "--port",
                str(http),
                "--osc-port",
                str(FEEDBACK_PORT),
                "--send",
                f"127.0.0.1:{relay.port}",
                "--load",
                str(session),
                "--cache-dir",
                str(root / "osc-cache"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=root,
        )
        log: list[str] = []
        threading.Thread(target=lambda: log.extend(osc.stdout or []), daemon=True).start()
        poll(
            lambda: "".join(log),
            lambda text: "Server started" in text or osc.poll() is not None,
            "Open Stage Control started",
            WAIT,
        )
        assert osc.poll() is None, "".join(log)
        yield Rig(daemon, relay, osc, log, f"http://127.0.0.1:{http}/", version)
    finally:
        if osc is not None:
            osc.terminate()
            try:
                osc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                osc.kill()
                osc.wait()
        if relay is not None:
            relay.close()
        daemon.stop()


def browser(phone: bool = False) -> Chrome:
    """Chromium at 1280×800, or with ``phone`` a 390×844 touch screen."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if phone:  # a window cannot be that small: the phone's viewport, emulated
        metrics = {"width": 390, "height": 844, "pixelRatio": 3.0, "touch": True}
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    return webdriver.Chrome(service=Service(DRIVER or ""), options=options)


def on_load() -> list[Heard]:
    """What the session's ``onCreate`` sends, as the page must send it."""
    _, script = open_stage_control_messages(shipped(SESSION).decode("utf-8"))
    tags = {int: "i", float: "f", str: "s"}
    return [
        Heard(address, "," + "".join(tags[type(a)] for a in args), args)
        for address, args in js_sends(script)
    ]


def expected(control: str) -> list[Sent]:
    """What the replay test expects ``control``'s gestures to send."""
    sent, _ = open_stage_control_messages(shipped(SESSION).decode("utf-8"))
    return [s for s in sent if s.control == control]


def heard(sent: Sent) -> Heard:
    assert sent.args is not None
    tags = {int: "i", float: "f", str: "s"}
    return Heard(sent.address, "," + "".join(tags[type(a)] for a in sent.args), sent.args)


def open_page(rig: Rig, phone: bool = False) -> Chrome:
    """A new client of the session, once it has sent its on-load messages."""
    rig.relay.take()
    d = browser(phone)
    d.get(rig.url)
    want = on_load()
    assert rig.relay.wait(len(want)) == want
    return d


def strip(d: Chrome, name: str) -> WebElement:
    """The panel of the strip whose title is ``name``."""
    element = d.execute_script(
        "for (const t of document.querySelectorAll('.text-container'))"
        "  if (t.innerText.trim() === arguments[0]) return t.parentElement;",
        name,
    )
    assert element is not None, f"no strip {name}"
    return element


def button(d: Chrome, label: str, within: WebElement | None = None) -> WebElement:
    from selenium.webdriver.common.by import By

    found = [
        b
        for b in (within or d).find_elements(By.CSS_SELECTOR, ".button-container")
        if b.text.strip() == label
    ]
    assert len(found) == 1, (label, len(found))
    return found[0]


def wait_values(rig: Rig, want: dict[str, Any], what: str) -> dict[str, Any]:
    """Until the page's widgets hold ``want`` (widget id → value)."""

    def holds(values: dict[str, Any]) -> bool:
        return all(k in values and values[k] == pytest.approx(v, abs=1e-6) for k, v in want.items())

    return poll(rig.widget_values, holds, what, WAIT, every=0.1)


def count_types(widget: dict[str, Any], counts: dict[str, int]) -> dict[str, int]:
    for child in widget.get("widgets", []):
        counts[child["type"]] = counts.get(child["type"], 0) + 1
        count_types(child, counts)
    return counts


def test_every_button_reads_whole_on_a_phone(rig: Rig) -> None:
    """Held upright, a phone shows every control at 44 px or more and every button's
    label whole (six buttons in one row clipped "play/pause" and "instrumental")."""
    from selenium.webdriver.common.by import By

    d = open_page(rig, phone=True)
    try:
        buttons = d.find_elements(By.CSS_SELECTOR, ".widget.button-container")
        assert len(buttons) == 15
        for b in buttons:
            label = b.find_element(By.CSS_SELECTOR, "label")
            fits = d.execute_script(
                "const l = arguments[0]; return l.scrollWidth <= l.clientWidth", label
            )
            assert fits, f"{b.text!r} is clipped"
            assert b.size["width"] >= 44 and b.size["height"] >= 44, (b.text, b.size)
    finally:
        d.quit()


def test_the_session_renders_sends_and_follows_in_open_stage_control(rig: Rig) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    client = Client(rig.daemon.port)
    d = open_page(rig)
    try:
        # Every widget of the session is on the page, and nothing complained.
        session = json.loads(shipped(SESSION))
        types = count_types(session["content"], {})
        for kind, n in types.items():
            shown = len(d.find_elements(By.CSS_SELECTOR, f".widget.{kind}-container"))
            assert shown == n, (kind, shown, n)
        assert len(d.find_elements(By.CSS_SELECTOR, ".widget.root-container")) == 1
        # The first page gets the daemon's values (unity faders, centred pans).
        wait_values(rig, {"vocals_fader": 0.75, "drums_pan": 0.0, "master_mute": 0}, "state")

        # The vocals fader, dragged up: /ch/vocals/fader f, and the daemon follows.
        fader = strip(d, "vocals").find_element(
            By.CSS_SELECTOR, ".fader-container:not(.horizontal)"
        )
        ActionChains(d).move_to_element(fader).click_and_hold().move_by_offset(
            0, -40
        ).release().perform()
        shown = poll(
            rig.widget_values,
            lambda v: v.get("vocals_fader", 0.75) > 0.75,
            "the vocals fader's widget moved",
            WAIT,
            every=0.1,
        )["vocals_fader"]
        moved = rig.relay.wait(1)
        while moved[-1].args[0] != pytest.approx(shown, abs=1e-6):  # the last on its way
            moved += rig.relay.wait(1)
        want = expected("vocals_fader")[0]
        assert {(h.address, h.tags) for h in moved} == {(want.address, ",f")}, moved
        assert 0.75 < shown <= 1.0, moved
        poll(
            lambda: float(client.query("/ch/vocals/fader")),
            lambda v: v == pytest.approx(shown, abs=1e-6),
            "the daemon's vocals fader",
            WAIT,
        )

        # The vocals mute, pressed twice: on, then off, each an int.
        mute = button(d, "mute", strip(d, "vocals"))
        for sent in expected("vocals_mute"):
            mute.click()
            assert rig.relay.wait(1) == [heard(sent)], sent
            assert sent.args is not None
            poll(
                lambda: client.query("/ch/vocals/mute"),
                lambda v, s=sent: v == s.args[0],  # type: ignore[misc]
                "the daemon's vocals mute",
                WAIT,
            )

        # The transport: 1 on press, 0 on release; the press acts.
        playing = int(client.query("/transport/playing"))
        for control, label in (
            ("transport_toggle", "play/pause"),
            ("transport_play", "play"),
            ("transport_stop", "stop"),
        ):
            button(d, label).click()
            assert rig.relay.wait(2) == [heard(s) for s in expected(control)], control
            playing = {"transport_toggle": 1 - playing, "transport_play": 1}.get(control, 0)
            poll(
                lambda: int(client.query("/transport/playing")),
                lambda v, p=playing: v == p,  # type: ignore[misc]
                f"/transport/playing after {label}",
                WAIT,
            )

        # A scene: its name on press, nothing on release.
        button(d, "acapella").click()
        [press, release] = expected("scene_acapella")
        assert release.args is None
        assert rig.relay.wait(1) == [heard(press)]

        # Feedback: what another client sets moves the widgets.
        for address, value in (
            ("/ch/vocals/mute", 1),
            ("/ch/bass/fader", 0.0),
            ("/ch/drums/pan", -1.0),
            ("/master/fader", 1.0),
        ):
            client.send(address, value)
        want_values = {"vocals_mute": 1, "bass_fader": 0.0, "drums_pan": -1.0, "master_fader": 1.0}
        wait_values(rig, want_values, "feedback to the widgets")
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        assert (
            d.execute_script(
                "const c = document.querySelector('osc-console'); return c ? c.innerText : ''"
            ).strip()
            == ""
        )
    finally:
        d.quit()

    # A page opened now renews the subscription (no full state): it asks for its
    # values, and shows the daemon's, not its defaults.
    assert rig.relay.take() == []
    d = open_page(rig)
    try:
        wait_values(rig, want_values, "the values on a second page")
    finally:
        d.quit()
    client.close()
    assert not [line for line in rig.osc_log if "(ERROR)" in line], "".join(rig.osc_log)
    assert rig.osc.poll() is None
    print(f"Open Stage Control {rig.version}")
