# Types of the compiled mixer kernel (core/mixer/_kernel.c, which documents each call).
import numpy as np

ABI: int

def ramp_curves(
    cur: np.ndarray,
    step: np.ndarray,
    left: np.ndarray,
    ramp: np.ndarray,
    curves: np.ndarray,
    frames: int,
    rows: int,
    /,
) -> None: ...
def segment(
    src: np.ndarray,
    pos: int,
    count: int,
    curves: np.ndarray | None,
    row: np.ndarray | None,
    prod: np.ndarray,
    first: int,
    off: int,
    mix: np.ndarray,
    add: bool,
    co: np.ndarray | None,
    /,
) -> None: ...
def finish(
    prod: np.ndarray,
    rows: int,
    frames: int,
    mix: np.ndarray,
    master: np.ndarray | None,
    gain: float,
    peak: np.ndarray,
    sumsq: np.ndarray,
    out: np.ndarray,
    co: np.ndarray | None,
    /,
) -> bool: ...
def block(
    cur: np.ndarray,
    step: np.ndarray,
    left: np.ndarray,
    ramp: np.ndarray,
    curves: np.ndarray,
    curve_frames: int,
    rows: int,
    src: np.ndarray,
    pos: int,
    frames: int,
    is_mix: bool,
    prod: np.ndarray,
    mix: np.ndarray,
    master: np.ndarray | None,
    gain: float,
    peak: np.ndarray,
    sumsq: np.ndarray,
    out: np.ndarray,
    co: np.ndarray | None,
    /,
) -> bool: ...
def zero(a: np.ndarray, /) -> None: ...
def filter(
    x: np.ndarray,
    rows: int,
    frames: int,
    tgt: np.ndarray,
    step: np.ndarray,
    left: np.ndarray,
    rtgt: np.ndarray,
    rstep: np.ndarray,
    rleft: np.ndarray,
    state: np.ndarray,
    table: np.ndarray,
    /,
) -> None: ...
def mixdown(
    x: np.ndarray,
    rows: int,
    frames: int,
    mix: np.ndarray,
    prod: np.ndarray,
    co: np.ndarray | None,
    /,
) -> None: ...
def echo(
    x: np.ndarray,
    xpre: np.ndarray,
    rows: int,
    frames: int,
    sends: np.ndarray,
    bus: np.ndarray,
    line: np.ndarray,
    fstate: np.ndarray,
    table: np.ndarray,
    mix: np.ndarray,
    /,
) -> None: ...
def reverb(
    x: np.ndarray,
    rows: int,
    frames: int,
    sends: np.ndarray,
    bus: np.ndarray,
    lens: np.ndarray,
    lines: np.ndarray,
    state: np.ndarray,
    mix: np.ndarray,
    /,
) -> None: ...
def read(
    src: np.ndarray,
    state: np.ndarray,
    count: int,
    end: int,
    dst: np.ndarray,
    table: np.ndarray,
    /,
) -> int: ...
def fold(env: np.ndarray, period: float, out: np.ndarray, /) -> None: ...
def shift(
    io: np.ndarray,
    frames: int,
    tables: np.ndarray,
    state: np.ndarray,
    ring_in: np.ndarray,
    ring_out: np.ndarray,
    work: np.ndarray,
    mix: np.ndarray | None,
    /,
) -> bool: ...
def keep(
    src: np.ndarray,
    pos: int,
    prod: np.ndarray,
    rows: int,
    frames: int,
    pre: np.ndarray,
    post: np.ndarray,
    at: int,
    /,
) -> None: ...
def retro(
    delta: np.ndarray,
    ramp: int,
    tables: np.ndarray,
    state: np.ndarray,
    ring_in: np.ndarray,
    ring_out: np.ndarray,
    work: np.ndarray,
    /,
) -> bool: ...
def retro_delta(
    pre: np.ndarray,
    post: np.ndarray,
    at: int,
    want: np.ndarray,
    changed: np.ndarray,
    gain: float,
    delta: np.ndarray,
    /,
) -> bool: ...
