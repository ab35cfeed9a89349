"""Audio sinks without a device: the null clock keeps time, the recorder writes the master."""

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Play, SetTrack, StripTarget, Track
from stemdeck.core.mixer.engine import Mixer
from stemdeck.daemon.audio.recorder import Recorder
from stemdeck.daemon.audio.sinks import NullSink

SR = 48000


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_null_clock_runs_in_real_time_and_records_the_master(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    channels = (0.1 * rng.standard_normal((3, 2, SR * 3))).astype(np.float32)
    engine = Mixer(max_channels=3)
    engine.prepare(SR, 256, outputs="channels")
    engine.post(SetTrack(Track(channels, SR, ("a", "b", "c"))))
    engine.post(StripTarget(1, 0.5, False, False, 0.0))
    engine.post(Play())
    recorder = Recorder(tmp_path / "rec.wav", SR, 2, max_block=1024)
    sink = NullSink(engine, SR, 256, engine.out_channels, recorder)
    t0 = time.monotonic()
    sink.start()
    time.sleep(1.0)
    sink.stop()
    elapsed = time.monotonic() - t0
    recorder.close()
    played = engine.position / SR
    assert abs(played - elapsed) < 0.25  # paced by the clock, not as fast as possible
    assert 0 < sink.recent_max_render_s <= sink.max_render_s
    data, sr = sf.read(tmp_path / "rec.wav", dtype="float32")
    assert sr == SR and data.shape[1] == 2 and len(data) == engine.position
    expected = channels[0] + 0.5 * channels[1] + channels[2]  # the master, not channel 1
    x = engine._xfade_len + engine._ramp_len
    np.testing.assert_allclose(data[x:, 0], expected[0, x : len(data)], atol=1e-6)


def test_scene_with_a_bad_value_changes_nothing() -> None:
    reg = Registry(["a", "b"])
    before = reg.snapshot()
    scene = {"channels": {"a": {"gain": 0.5}, "b": {"gain": "loud"}}}
    with pytest.raises(ParameterError, match="not a number"):
        with reg.transaction() as txn:
            txn.restore(scene)
    assert reg.snapshot() == before


def test_recording_header_is_true_while_recording(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    recorder = Recorder(path, SR, 2, max_block=1024)
    block = np.full((1000, 2), 0.25, np.float32)
    try:
        for _ in range(48):
            recorder.push(block)
        deadline = time.monotonic() + 5
        while sf.info(path).frames < 48000 and time.monotonic() < deadline:
            time.sleep(0.05)
        info = sf.info(path)  # read while the file is still open for writing
        assert info.frames == 48000 and info.samplerate == SR and info.subtype == "FLOAT"
        data, _ = sf.read(path, dtype="float32")
        assert data.shape == (48000, 2) and (data == 0.25).all()
    finally:
        recorder.close()
    assert sf.info(path).frames == 48000


def test_a_full_disk_stops_the_recording_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from stemdeck.daemon.audio import recorder as audio
    from stemdeck.daemon.status import Status, format_status

    recorder = Recorder(tmp_path / "rec.wav", SR, 2, max_block=1024)

    def full(self: object, frames: np.ndarray) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audio.WavFile, "write", full)
    recorder.push(np.zeros((256, 2), np.float32))
    deadline = time.monotonic() + 5
    while recorder.error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert recorder.error == "recording stopped: No space left on device"
    assert recorder._thread.is_alive()  # the writer goes on draining: no overruns pile up
    for _ in range(50):
        recorder.push(np.zeros((256, 2), np.float32))
    recorder.close()
    line = format_status(
        Status(
            track="song",
            playing=True,
            position=1.0,
            length=2.0,
            progress=None,
            levels=(),
            xruns=0,
            drops=0,
            slowest_ms=0.5,
            recorder=(recorder.overruns, recorder.error),
        )
    )
    assert "| rec recording stopped: No space left on device |" in line


# -- xruns: the stream's start is not one (issue 26) -------------------------------------
class _SlowEngine:
    """An engine whose blocks take ``cost[k]`` seconds of a fake clock (``clock``)."""

    max_block = 256

    def __init__(self, clock: list[float], cost: dict[int, float], stop_after: int, sink_stop):
        self.clock, self.cost, self.stop_after, self.sink_stop = clock, cost, stop_after, sink_stop
        self.blocks = 0

    def process(self, out: np.ndarray) -> None:
        self.clock[0] += self.cost.get(self.blocks, 0.0)
        self.blocks += 1
        if self.blocks == self.stop_after:
            self.sink_stop()

    def master_view(self, frames: int) -> np.ndarray:
        return np.zeros((frames, 2), np.float32)


@pytest.mark.parametrize(
    ("cost", "xruns"),
    [
        ({0: 0.5}, 0),  # the first block sets the thread up: late, and no xrun
        ({0: 0.5, 5: 0.5}, 1),  # a late block afterwards is one
        ({1: 0.5}, 1),  # so is the second
    ],
)
def test_null_clock_counts_no_xrun_for_its_start(
    monkeypatch: pytest.MonkeyPatch, cost: dict[int, float], xruns: int
) -> None:
    """The clock is a fake one (no sleeping, no busy machine): a block late by 0.5 s,
    100 periods, is an xrun unless it is the first."""
    import stemdeck.daemon.audio.sinks as audio

    clock = [0.0]

    class FakeTime:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

        @staticmethod
        def sleep(seconds: float) -> None:
            clock[0] += seconds

        perf_counter = staticmethod(time.perf_counter)

    monkeypatch.setattr(audio, "time", FakeTime)
    sink = NullSink(_SlowEngine(clock, {}, 0, lambda: None), SR, 256, 2, None)
    sink.engine = _SlowEngine(clock, cost, 10, sink._stop.set)
    sink._run()  # in this thread, to its stop
    assert sink.engine.blocks == 10
    assert sink.xruns == xruns


class _Status:
    def __init__(self, underflow: bool) -> None:
        self.output_underflow = underflow


@pytest.mark.parametrize(
    ("underflows", "xruns"),
    [
        ([True, True, False, False], 0),  # the first two callbacks: the stream's start
        ([True, True, True, False], 1),
        ([False, False, False, True], 1),
    ],
)
def test_sound_card_underflows_at_the_start_are_no_xruns(
    underflows: list[bool], xruns: int
) -> None:
    """The callback of :class:`SoundDeviceSink`, called as PortAudio does, no device."""
    from stemdeck.daemon.audio.sinks import Sink, SoundDeviceSink

    engine = _SlowEngine([0.0], {}, 0, lambda: None)
    sink = SoundDeviceSink.__new__(SoundDeviceSink)
    Sink.__init__(sink, engine, SR, 256, 2, None)  # no stream: its callback only
    out = np.zeros((256, 2), np.float32)
    for flag in underflows:
        sink._callback(out, 256, None, _Status(flag))
    assert engine.blocks == len(underflows)
    assert sink.xruns == xruns


class _FakeSoundDevice:
    """sounddevice with one output device of ``outputs`` channels, no PortAudio."""

    class PortAudioError(Exception):
        pass

    def __init__(self, outputs: int) -> None:
        self.outputs = outputs
        self.opened: list[int] = []

    def query_devices(self, device=None, kind=None):
        return {"name": "system", "max_output_channels": self.outputs, "hostapi": 0}

    def query_hostapis(self, index):
        return {"name": "JACK Audio Connection Kit"}

    def OutputStream(self, **kwargs):  # sounddevice's name
        self.opened.append(kwargs["channels"])
        raise self.PortAudioError("Invalid number of channels [PaErrorCode -9998]")


@pytest.mark.parametrize(
    ("channels", "outputs", "error"),
    [
        (
            8,
            2,
            "cannot open audio output 'system': 8 outputs (--outputs channels: 2 for each of "
            "4 channels), it has 2; use a device with more outputs (under JACK: a server with "
            "that many playback ports), or --outputs mix",
        ),
        (
            2,
            1,
            "cannot open audio output 'system': 2 outputs, it has 1; use a device with more "
            "outputs (under JACK: a server with that many playback ports), or --outputs mix",
        ),
        (8, 8, "cannot open audio output 3: Invalid number of channels [PaErrorCode -9998]"),
    ],
)
def test_too_few_device_outputs_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, channels: int, outputs: int, error: str
) -> None:
    import sys

    from stemdeck.daemon.audio.sinks import SoundDeviceSink

    fake = _FakeSoundDevice(outputs)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    engine = _SlowEngine([0.0], {}, 0, lambda: None)
    with pytest.raises(ParameterError) as err:
        SoundDeviceSink(engine, SR, 256, channels, None, device=3)
    assert str(err.value) == error
    assert fake.opened == ([] if channels > outputs else [channels])


def test_a_reopened_stream_leaves_stderr_alone(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Only PortAudio's first start is captured (daemon/c_stderr.py): when a stalled
    stream is reopened, other threads may be logging, and their lines must stay."""
    import os
    import sys

    from stemdeck.daemon.audio.sinks import output_device

    class Started(_FakeSoundDevice):
        default = type("default", (), {"device": [None, 0]})

        def query_devices(self, device=None, kind=None):
            os.write(2, b"stemdeck: warning: another thread's line\n")
            return [{"name": "system", "max_output_channels": 2, "default_samplerate": 48000.0}]

    monkeypatch.setitem(sys.modules, "sounddevice", Started(2))
    assert output_device(None) == (0, 48000, "")
    assert capfd.readouterr().err == "stemdeck: warning: another thread's line\n"
