"""Fader taper and level conversions, shared by OSC, MIDI, scenes and tests.

The registry of every controllable value (its key, range and 0..1 view) is
:mod:`stemdeck.core.control.registry`; these functions are its level laws.
A channel's level has three views of one value: ``fader`` (0..1 with the
console taper below, unity at 0.75), ``gain`` (linear, at most +10 dB) and
``db``.

Fader taper (position f -> dB): f >= 0.5: 40f - 30; 0.25..0.5: 80f - 50;
0.0625..0.25: 160f - 70; below: 480f - 90; f = 0 is off.
"""

from __future__ import annotations

import math

from ..errors import ParameterError

__all__ = [
    "ECHO_DIVISIONS",
    "ECHO_FEEDBACK",
    "ECHO_MAX_BEATS",
    "ECHO_MAX_MS",
    "ECHO_MIN_BEATS",
    "ECHO_MIN_MS",
    "ECHO_MS",
    "ECHO_RETURN",
    "MAX_DB",
    "MAX_RATE",
    "MAX_TRACK_RATE",
    "MIN_RATE",
    "MIN_TRACK_RATE",
    "OFF_DB",
    "REVERB_LOWCUT",
    "REVERB_MAX_LOWCUT",
    "REVERB_MIN_LOWCUT",
    "REVERB_RETURN",
    "REVERB_SIZE",
    "UNITY_FADER",
    "db_to_fader",
    "db_to_gain",
    "fader_to_db",
    "fader_to_gain",
    "gain_to_db",
    "gain_to_fader",
    "plays_at",
]

MAX_DB = 10.0
OFF_DB = -90.0  # at or below this a level is off
UNITY_FADER = 0.75
MAX_GAIN = 10 ** (MAX_DB / 20)
# The rates a track may have (Hz): the read head converts any of them to the device's.
MIN_TRACK_RATE = 8000
MAX_TRACK_RATE = 192000
# The transport's rate (vinyl mode: pitch follows), a factor on the read head's step.
MIN_RATE = 0.5
MAX_RATE = 2.0
# The echo bus: its delay's range (the delay line is allocated for the longest)
# and the values it starts at.
ECHO_MIN_MS = 1.0
ECHO_MAX_MS = 4000.0
ECHO_MS = 500.0
# The echo's delay in beats (``/fx/echo/beats``): its range, and the divisions a
# control with steps (a 7-bit knob, the browser mixer) offers, shortest first.
ECHO_MIN_BEATS = 1 / 16
ECHO_MAX_BEATS = 4.0
ECHO_DIVISIONS = (1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0, 1.5, 2.0, 3.0, 4.0)
ECHO_FEEDBACK = 0.5
ECHO_RETURN = 1.0
# The reverb bus: its low-cut's range (Hz) and the values it starts at.
REVERB_MIN_LOWCUT = 20.0
REVERB_MAX_LOWCUT = 1000.0
REVERB_SIZE = 0.5
REVERB_LOWCUT = 200.0
REVERB_RETURN = 1.0

# (fader position where the segment starts, slope in dB per unit, offset in dB)
_TAPER = ((0.5, 40.0, -30.0), (0.25, 80.0, -50.0), (0.0625, 160.0, -70.0), (0.0, 480.0, -90.0))


def _finite(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(f"{what} must be a number, got {value!r}")
    if math.isnan(value):
        raise ParameterError(f"{what} must be a number, got NaN")
    return float(value)


def fader_to_db(position: float) -> float:
    """Fader position 0..1 to dB; 0 is ``-inf`` (off), 0.75 is 0 dB, 1 is +10 dB.

    Raises
    ------
    ParameterError
        NaN, or a position outside 0..1.
    """
    f = _finite(position, "fader position")
    if not 0.0 <= f <= 1.0:
        raise ParameterError(f"fader position must be in 0..1, got {position!r}")
    if f == 0.0:
        return -math.inf
    for start, slope, offset in _TAPER:
        if f >= start:
            return slope * f + offset
    raise AssertionError("unreachable")


def db_to_fader(db: float) -> float:
    """Inverse of :func:`fader_to_db`; levels at or below -90 dB give 0, above +10 dB raise."""
    if isinstance(db, bool) or not isinstance(db, int | float) or math.isnan(db):
        raise ParameterError(f"level in dB must be a number, got {db!r}")
    if db > MAX_DB + 1e-9:
        raise ParameterError(f"level must be <= +{MAX_DB:g} dB, got {db!r}")
    if db <= OFF_DB:
        return 0.0
    for start, slope, offset in _TAPER:
        if db >= slope * start + offset:
            return min((db - offset) / slope, 1.0)
    return 0.0


def db_to_gain(db: float) -> float:
    """dB to linear gain; ``-inf`` and anything at or below -90 dB is 0."""
    if math.isnan(db):
        raise ParameterError("level in dB must be a number, got NaN")
    return 0.0 if db <= OFF_DB else 10.0 ** (db / 20.0)


def gain_to_db(gain: float) -> float:
    """Linear gain to dB; 0 is ``-inf``."""
    return -math.inf if gain <= 0.0 else 20.0 * math.log10(gain)


def fader_to_gain(position: float) -> float:
    """Fader position 0..1 to linear gain (0 is off)."""
    return db_to_gain(fader_to_db(position))


def gain_to_fader(gain: float) -> float:
    """Linear gain to fader position 0..1 (gains above +10 dB sit at the top)."""
    return db_to_fader(min(gain_to_db(gain), MAX_DB))


def plays_at(sr: int) -> bool:
    """Whether the mixer plays a track at ``sr`` Hz as it is (its read head converts
    the rate as it reads): an integer in ``MIN_TRACK_RATE..MAX_TRACK_RATE``."""
    return isinstance(sr, int) and MIN_TRACK_RATE <= sr <= MAX_TRACK_RATE
