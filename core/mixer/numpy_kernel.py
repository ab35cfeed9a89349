"""The numpy reference of the mixer's compiled kernel (``core/mixer/_kernel.c``).

:class:`NumpyKernel` has the compiled kernel's calls (kernel.py's :class:`~.kernel.Kernel`)
and computes the same float32 operations in the same order, on scratch buffers of
its own; ``tests/core/mixer/test_kernel.py`` checks the two give the same samples.
The FX references (``filter``, ``echo``, ``reverb``) loop in Python floats: fine
as references, too slow for an FX-heavy real-time block.
"""

from __future__ import annotations

import math

import numpy as np

from .kernel import (
    READ_CUT,
    READ_HALF,
    READ_MAX_GLIDE,
    READ_MAX_STEP,
    READ_RES,
    REVERB_COMBS,
    REVERB_QUIET,
    REVERB_STAGES,
    glide_at,
)

__all__ = ["NumpyKernel"]

# Where the echo bus's and the reverb bus's scalars sit (kernel.py says what each is).
_B_POS, _B_D, _B_FB, _B_RET, _B_K, _B_QUIET, _B_DLEN = 0, 1, 4, 7, 10, 13, 14
_R_FB, _R_RET, _R_G, _R_DAMP, _R_QUIET = 0, 3, 6, 9, 10


def _rv_keep(w: float) -> float:
    """A reverb line's write within +-1000, NaN 0, 0 below 1e-30 (``_kernel.c``'s ``rv_keep``)."""
    if not w <= 1000.0:
        w = 1000.0 if w > 1000.0 else 0.0
    if w < -1000.0:
        w = -1000.0
    if abs(w) < 1e-30:
        w = 0.0
    return w


def _ramp_at(tgt: float, step: float, left: float, t: int) -> float:
    rem = left - float(t + 1)
    return tgt - step * rem if rem > 0.0 else tgt


def _svf_coeffs(
    table: np.ndarray, tn: int, k: float, r: float
) -> tuple[float, float, float, float, float, bool]:
    """One sample's DJ filter coefficients (a1, a2, a3, kd, w, hp), as ``_kernel.c``."""
    hp = k > 0.0
    a = abs(k)
    idx = a * float(tn)
    fl = min(float(math.floor(idx)), float(tn - 1))
    frac = idx - fl
    ii = int(fl)
    g0, g1 = float(table[int(hp), ii]), float(table[int(hp), ii + 1])
    g = g0 + frac * (g1 - g0)
    kd = 1.4142135623730951 - r * 1.3142135623730951
    a1 = 1.0 / (1.0 + g * (g + kd))
    a2 = g * a1
    a3 = g * a2
    w = min(a * 20.0, 1.0)
    return a1, a2, a3, kd, w, hp


def _svf_tick(
    c: tuple[float, float, float, float, float, bool], v: float, c1: float, c2: float
) -> tuple[float, float, float]:
    """One sample through the filter: (output, c1, c2)."""
    a1, a2, a3, kd, w, hp = c
    v3 = v - c2
    v1 = a1 * c1 + a2 * v3
    v2 = (c2 + a2 * c1) + a3 * v3
    c1 = 2.0 * v1 - c1
    c2 = 2.0 * v2 - c2
    f = (v - kd * v1) - v2 if hp else v2
    return v + w * (f - v), c1, c2


_FILTER_COEFFS = ("k", "r", "a", "g", "g1", "kd", "a1", "a2", "a3", "w")
_FILTER_STEP = ("v", "v1", "v2", "v3", "f", "tmp")


class NumpyKernel:
    """The reference arithmetic in numpy, with the compiled kernel's calls.

    Every large numpy call hands the GIL over (see ``core/mixer/_kernel.c``),
    which is why the compiled kernel exists; this one stays as its reference and
    as the fallback where no C compiler built it. Its scratch buffers are made
    here, once: a call allocates no array data.

    Parameters
    ----------
    max_channels : int
        Strips (rows of the curves and of the fading head's strip signals).
    max_block : int
        Frames of the largest block.
    """

    def __init__(self, max_channels: int, max_block: int) -> None:
        n, b = max_channels, max_block
        self._ramp_scratch = np.zeros((n, 2, b))  # every strip's ramp, float64
        self._meter_scratch = np.zeros((n + 1, 2, b), np.float32)  # |x|, then x * x
        self._block_peak = np.zeros(n + 1, np.float32)  # each row's peak in this block
        self._block_sumsq = np.zeros(n + 1, np.float32)  # each row's sum of squares
        self._fading_sum = np.zeros((2, b), np.float32)  # a fading head's strips summed
        # The DJ filter's per-sample coefficients, (strip, sample), float64, and
        # its per-sample state arithmetic on (strip, side).
        self._t1 = np.arange(1, b + 1, dtype=np.float64)  # t + 1
        self._fc = {name: np.zeros((n, b)) for name in _FILTER_COEFFS}
        self._fi = np.zeros((n, b), np.intp)
        self._fi2 = np.zeros((n, b), np.intp)
        self._fhp = np.zeros((n, b), bool)
        self._fmask = np.zeros((n, b), bool)
        self._fs = {name: np.zeros((n, 2)) for name in _FILTER_STEP}
        self._echo_in = np.zeros((2, b))  # what the strips send, float64
        self._echo_send = np.zeros(b)  # one strip's send ramp
        self._echo_tmp = np.zeros((2, b))
        self._echo_mask = np.zeros(b, bool)
        self._echo_ret = np.zeros((2, b), np.float32)  # the return, to add to the mix
        self._rv_in = np.zeros(b)  # what the strips send to the reverb (mono), float64
        self._rv_tmp = np.zeros(b)
        self._rv_ret = np.zeros((2, b), np.float32)  # the reverb's return, to add to the mix
        # The read head: each frame's position, phase and cutoff.
        self._rd_pos = np.zeros(b)
        self._rd_phase = np.zeros(b)
        self._rd_fc = np.zeros(b)

    def ramp_curves(
        self,
        cur: np.ndarray,
        step: np.ndarray,
        left: np.ndarray,
        ramp: np.ndarray,
        curves: np.ndarray,
        frames: int,
        rows: int,
        /,
    ) -> None:
        """Every strip's gain ramp over ``frames`` samples; curves for the first ``rows``."""
        k = self._ramp_scratch[:, :, :frames]
        np.minimum(ramp[:frames], left[:, :, np.newaxis], out=k)
        np.multiply(k, step[:, :, np.newaxis], out=k)
        np.add(k, cur[:, :, np.newaxis], out=k)
        np.copyto(curves[:rows, :, :frames], k[:rows])
        np.copyto(cur, k[:, :, frames - 1])  # where each ramp is after the block
        np.subtract(left, frames, out=left)
        np.maximum(left, 0.0, out=left)

    def segment(
        self,
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
    ) -> None:
        """``count`` samples of ``src`` from ``pos`` through the strips into ``mix`` at ``off``."""
        n = src.shape[0]
        part = src[:, :, pos : pos + count]
        if first:  # the main head: its strip signals stay where the block's meters read them
            signals = prod[first : first + n, :, off : off + count]
        else:
            signals = prod[:n, :, :count]
        if curves is None:  # the original standing in: no strips
            if row is None:
                np.copyto(signals, part)
            else:
                np.multiply(part, row[:count], out=signals)
        else:
            np.multiply(part, curves[:n, :, off : off + count], out=signals)
            if row is not None:
                np.multiply(signals, row[:count], out=signals)
        target = mix[:, off : off + count]
        if not add:  # the main head is first: it writes the block, the others add to it
            np.add.reduce(signals, axis=0, out=target)
        else:
            summed = self._fading_sum[:, :count]
            np.add.reduce(signals, axis=0, out=summed)
            np.add(target, summed, out=target)
        if co is not None:  # the original standing in goes to the first pair
            outputs = co[:n, :, off : off + count]
            np.add(outputs, signals, out=outputs)

    def finish(
        self,
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
    ) -> bool:
        """Master gain, meters and the output block; False (meters untouched) if not finite."""
        mix = mix[:, :frames]
        if master is not None:
            np.multiply(mix, master[:frames], out=mix)
        elif gain != 1.0:
            np.multiply(mix, gain, out=mix)
        levels = prod[:rows, :, :frames]
        np.copyto(levels[0], mix)
        scratch = self._meter_scratch[:rows, :, :frames]
        block_peak, block_sumsq = self._block_peak[:rows], self._block_sumsq[:rows]
        np.abs(levels, out=scratch)
        np.maximum.reduce(scratch, axis=(1, 2), out=block_peak)
        if not block_peak[0] <= 3.4e38:  # NaN or inf somewhere: never let it out
            return False
        np.maximum(peak[:rows], block_peak, out=peak[:rows])
        np.multiply(levels, levels, out=scratch)
        np.add.reduce(scratch, axis=(1, 2), out=block_sumsq)
        np.add(sumsq[:rows], block_sumsq, out=sumsq[:rows])
        if co is None:
            np.copyto(out.T, mix)
        else:
            np.copyto(out.T, co[:, :, :frames].reshape(2 * co.shape[0], frames))
        return True

    def filter(
        self,
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
    ) -> None:
        """The DJ filter of the first ``rows`` strips of ``x``, in place (see ``_kernel.c``).

        The coefficients of every sample are computed at once; the recursion then
        runs sample by sample over every (strip, side), in float64 and in the
        compiled kernel's order. Strips whose knob stands at 0 come out exactly as
        they went in (the wet share is 0) and their state is cleared."""
        if rows:
            c, n = self._fc, rows
            t1 = self._t1[:frames]
            k, r, a, g, g1 = (c[name][:n, :frames] for name in ("k", "r", "a", "g", "g1"))
            kd, a1, a2, a3, w = (c[name][:n, :frames] for name in ("kd", "a1", "a2", "a3", "w"))
            ii, hp, mask = self._fi[:n, :frames], self._fhp[:n, :frames], self._fmask[:n, :frames]
            for value, ramp_tgt, ramp_step, ramp_left in (
                (k, tgt, step, left),
                (r, rtgt, rstep, rleft),
            ):
                # tgt - step * rem where rem = left - (t + 1) > 0, else tgt
                np.subtract(ramp_left[:n, np.newaxis], t1, out=a)
                np.greater(a, 0.0, out=mask)
                np.multiply(ramp_step[:n, np.newaxis], a, out=a)
                np.subtract(ramp_tgt[:n, np.newaxis], a, out=value)
                np.copyto(
                    value, np.broadcast_to(ramp_tgt[:n, np.newaxis], value.shape), where=~mask
                )
            np.greater(k, 0.0, out=hp)
            np.abs(k, out=a)
            tn = table.shape[1] - 1
            np.multiply(a, float(tn), out=g1)  # idx
            np.floor(g1, out=g)
            np.minimum(g, float(tn - 1), out=g)
            np.subtract(g1, g, out=g1)  # frac
            # The flat table index: hp * (tn + 1) + floor(idx).
            flat = table.reshape(-1)
            np.copyto(ii, g, casting="unsafe")
            base = self._fi2[:n, :frames]
            np.multiply(hp, tn + 1, out=base, casting="unsafe")
            np.add(ii, base, out=ii)
            np.take(flat, ii, out=a2)  # g0
            np.add(ii, 1, out=ii)
            np.take(flat, ii, out=a3)  # g1
            np.subtract(a3, a2, out=a3)
            np.multiply(g1, a3, out=a3)
            np.add(a2, a3, out=g)
            np.multiply(r, 1.3142135623730951, out=kd)
            np.subtract(1.4142135623730951, kd, out=kd)
            np.add(g, kd, out=a1)
            np.multiply(g, a1, out=a1)
            np.add(1.0, a1, out=a1)
            np.divide(1.0, a1, out=a1)
            np.multiply(g, a1, out=a2)
            np.multiply(g, a2, out=a3)
            np.multiply(a, 20.0, out=w)
            np.minimum(w, 1.0, out=w)
            s = self._fs
            v, v1, v2, v3, f, tmp = (s[name][:n] for name in _FILTER_STEP)
            c1, c2 = state[:n, :, 0], state[:n, :, 1]
            for t in range(frames):
                col = np.s_[:, t, np.newaxis]
                np.copyto(v, x[:n, :, t])
                np.subtract(v, c2, out=v3)
                np.multiply(a1[col], c1, out=v1)
                np.multiply(a2[col], v3, out=tmp)
                np.add(v1, tmp, out=v1)
                np.multiply(a2[col], c1, out=v2)
                np.add(c2, v2, out=v2)
                np.multiply(a3[col], v3, out=tmp)
                np.add(v2, tmp, out=v2)
                np.multiply(v1, 2.0, out=tmp)
                np.subtract(tmp, c1, out=c1)
                np.multiply(v2, 2.0, out=tmp)
                np.subtract(tmp, c2, out=c2)
                np.multiply(kd[col], v1, out=f)
                np.subtract(v, f, out=f)
                np.subtract(f, v2, out=f)
                np.copyto(f, v2, where=~hp[col])
                np.subtract(f, v, out=f)
                np.multiply(w[col], f, out=f)
                np.add(v, f, out=f)
                np.copyto(x[:n, :, t], f, casting="same_kind")
            bypassed = (left[:n] == 0.0) & (tgt[:n] == 0.0)
            state[:n][bypassed] = 0.0
        np.subtract(left, frames, out=left)
        np.maximum(left, 0.0, out=left)
        np.subtract(rleft, frames, out=rleft)
        np.maximum(rleft, 0.0, out=rleft)

    def echo(
        self,
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
    ) -> None:
        """The echo bus into ``mix`` (see ``_kernel.c``): the sends summed with numpy,
        then the delay line, its filter and feedback sample by sample in Python
        floats (float64, the compiled kernel's order). The reference only: slow."""
        t1 = self._t1[:frames]
        into, tmp = self._echo_in[:, :frames], self._echo_tmp[:, :frames]
        sd, mask = self._echo_send[:frames], self._echo_mask[:frames]
        into.fill(0.0)
        for i in range(rows):
            np.subtract(sends[2, i], t1, out=sd)
            np.greater(sd, 0.0, out=mask)
            np.multiply(sends[1, i], sd, out=sd)
            np.subtract(sends[0, i], sd, out=sd)
            np.copyto(sd, sends[0, i], where=~mask)
            src = xpre if sends[3, i] != 0.0 else x
            np.multiply(src[i, :, :frames], sd, out=tmp)
            np.add(into, tmp, out=into)
        size = line.shape[1]
        tn = table.shape[1] - 1
        v = [float(a) for a in bus]
        pos, quiet = int(v[_B_POS]), v[_B_QUIET]
        bypass = v[_B_K + 2] == 0.0 and v[_B_K] == 0.0
        c1 = [float(fstate[0, 0]), float(fstate[1, 0])]
        c2 = [float(fstate[0, 1]), float(fstate[1, 1])]
        ins = into.tolist()
        ret_out = self._echo_ret[:, :frames]
        coeffs = (0.0, 0.0, 0.0, 0.0, 0.0, False)
        for t in range(frames):
            d = glide_at(v[_B_D], v[_B_D + 1], v[_B_D + 2], v[_B_DLEN], t)
            d = min(max(d, 1.0), float(size - 2))
            rp = float(pos) - d
            if rp < 0.0:
                rp = rp + float(size)
            fl = float(math.floor(rp))
            frac = rp - fl
            i0 = min(int(fl), size - 1)
            i1 = 0 if i0 + 1 == size else i0 + 1
            if not bypass:
                k = _ramp_at(v[_B_K], v[_B_K + 1], v[_B_K + 2], t)
                coeffs = _svf_coeffs(table, tn, k, 0.0)
            fb = _ramp_at(v[_B_FB], v[_B_FB + 1], v[_B_FB + 2], t)
            ret = _ramp_at(v[_B_RET], v[_B_RET + 1], v[_B_RET + 2], t)
            loud = abs(ins[0][t]) > 1e-6 or abs(ins[1][t]) > 1e-6
            for side in (0, 1):
                l0, l1 = float(line[side, i0]), float(line[side, i1])
                r = l0 + frac * (l1 - l0)
                if bypass:
                    y = r
                else:
                    y, c1[side], c2[side] = _svf_tick(coeffs, r, c1[side], c2[side])
                w = ins[side][t] + fb * y
                if not w <= 4.0:
                    w = 4.0 if w > 4.0 else 0.0
                w = max(w, -4.0)
                line[side, pos] = w
                ret_out[side, t] = ret * y
                if abs(y) > 1e-6:
                    loud = True
            quiet = 0.0 if loud else quiet + 1.0
            pos = 0 if pos + 1 == size else pos + 1
        np.add(mix[:, :frames], ret_out, out=mix[:, :frames])
        for side in (0, 1):
            fstate[side, 0] = 0.0 if bypass else c1[side]
            fstate[side, 1] = 0.0 if bypass else c2[side]
        np.subtract(sends[2], frames, out=sends[2])
        np.maximum(sends[2], 0.0, out=sends[2])
        bus[_B_POS] = pos
        for j in (_B_D + 2, _B_FB + 2, _B_RET + 2, _B_K + 2):
            bus[j] = max(v[j] - frames, 0.0)
        bus[_B_QUIET] = quiet

    def reverb(
        self,
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
    ) -> None:
        """The reverb bus into ``mix`` (see ``_kernel.c``): the sends summed with
        numpy, then the low-cut, the combs and the allpasses sample by sample in
        Python floats (float64, the compiled kernel's order). The reference only: slow."""
        t1 = self._t1[:frames]
        into, tmp = self._rv_in[:frames], self._rv_tmp[:frames]
        sd, mask = self._echo_send[:frames], self._echo_mask[:frames]
        into.fill(0.0)
        for i in range(rows):
            np.subtract(sends[2, i], t1, out=sd)
            np.greater(sd, 0.0, out=mask)
            np.multiply(sends[1, i], sd, out=sd)
            np.subtract(sends[0, i], sd, out=sd)
            np.copyto(sd, sends[0, i], where=~mask)
            np.add(x[i, 0, :frames], x[i, 1, :frames], out=tmp, dtype=np.float64)
            np.multiply(tmp, sd, out=tmp)
            np.add(into, tmp, out=into)
        size = lines.shape[1]
        length = [[int(a) for a in lens[s]] for s in (0, 1)]
        offset = [[sum(length[s][:j]) for j in range(REVERB_STAGES)] for s in (0, 1)]
        pos = [[int(a) for a in state[s, :REVERB_STAGES]] for s in (0, 1)]
        for s in (0, 1):
            if offset[s][-1] + length[s][-1] > size or min(length[s]) < 1:
                raise ValueError("out of bounds: reverb: lengths")
            if any(not 0 <= p < n for p, n in zip(pos[s], length[s], strict=True)):
                raise ValueError("out of bounds: reverb: lengths")
        store = [[float(a) for a in state[s, REVERB_STAGES:20]] for s in (0, 1)]
        c1, c2 = float(state[0, 20]), float(state[0, 21])
        v = [float(a) for a in bus]
        damp = v[_R_DAMP]
        undamp = 1.0 - damp
        quiet = v[_R_QUIET]
        kd = 1.4142135623730951
        ins = into.tolist()
        ret_out = self._rv_ret[:, :frames]
        rows_l = [lines[0], lines[1]]
        for t in range(frames):
            g = _ramp_at(v[_R_G], v[_R_G + 1], v[_R_G + 2], t)
            a1 = 1.0 / (1.0 + g * (g + kd))
            a2 = g * a1
            a3 = g * a2
            xin = ins[t]
            v3 = xin - c2
            v1 = a1 * c1 + a2 * v3
            v2 = (c2 + a2 * c1) + a3 * v3
            c1 = _rv_keep(2.0 * v1 - c1)
            c2 = _rv_keep(2.0 * v2 - c2)
            u = ((xin - kd * v1) - v2) * 0.015
            fb = _ramp_at(v[_R_FB], v[_R_FB + 1], v[_R_FB + 2], t)
            ret = _ramp_at(v[_R_RET], v[_R_RET + 1], v[_R_RET + 2], t)
            loud = abs(xin) > REVERB_QUIET
            for s in (0, 1):
                line, off, ln, ps, st = rows_l[s], offset[s], length[s], pos[s], store[s]
                total = 0.0
                for j in range(REVERB_COMBS):
                    k = off[j] + ps[j]
                    out = float(line[k])
                    fs = _rv_keep(out * undamp + st[j] * damp)
                    st[j] = fs
                    line[k] = _rv_keep(u + fs * fb)
                    total = total + out
                    ps[j] = 0 if ps[j] + 1 == ln[j] else ps[j] + 1
                for j in range(REVERB_COMBS, REVERB_STAGES):
                    k = off[j] + ps[j]
                    bo = float(line[k])
                    line[k] = _rv_keep(total + bo * 0.5)
                    total = bo - total
                    ps[j] = 0 if ps[j] + 1 == ln[j] else ps[j] + 1
                ret_out[s, t] = ret * total
                if abs(total) > REVERB_QUIET:
                    loud = True
            quiet = 0.0 if loud else quiet + 1.0
        np.add(mix[:, :frames], ret_out, out=mix[:, :frames])
        for s in (0, 1):
            for j in range(REVERB_STAGES):
                state[s, j] = pos[s][j]
            for j in range(REVERB_COMBS):
                state[s, REVERB_STAGES + j] = store[s][j]
        state[0, 20], state[0, 21] = c1, c2
        np.subtract(sends[2], frames, out=sends[2])
        np.maximum(sends[2], 0.0, out=sends[2])
        for j in (_R_FB + 2, _R_RET + 2, _R_G + 2):
            bus[j] = max(v[j] - frames, 0.0)
        bus[_R_QUIET] = quiet

    def mixdown(
        self,
        x: np.ndarray,
        rows: int,
        frames: int,
        mix: np.ndarray,
        prod: np.ndarray,
        co: np.ndarray | None,
        /,
    ) -> None:
        """Rows of ``x`` summed into ``mix``, and copied to the meters and ``co``."""
        strips = x[:rows, :, :frames]
        if rows:
            np.add.reduce(strips, axis=0, out=mix[:, :frames])
        else:
            mix[:, :frames].fill(0.0)
        np.copyto(prod[1 : 1 + rows, :, :frames], strips)
        if co is not None:
            np.copyto(co[:rows, :, :frames], strips)

    def read(
        self,
        src: np.ndarray,
        state: np.ndarray,
        count: int,
        end: int,
        dst: np.ndarray,
        table: np.ndarray,
        /,
    ) -> int:
        """The read head between rates (see ``_kernel.c``): the positions frame
        by frame in Python floats, then every frame's taps at once, summed tap by
        tap in ``_kernel.c``'s order. A reference, not made for speed: it makes
        arrays of (frames, taps) and (channels, sides, frames)."""
        n, a, length = src.shape
        if count < 1 or not 0 <= end <= length or dst.shape[0] < n or dst.shape[1] < a:
            raise ValueError("out of bounds: read")
        pos, ph, step, tgt, inc, left = (float(v) for v in state)
        if not (0.0 <= pos <= 9007199254740992.0 and pos == math.floor(pos) and 0.0 <= ph < 1.0):
            raise ValueError("out of bounds: read: state")
        if not (0.0 < step <= READ_MAX_STEP and 0.0 < tgt <= READ_MAX_STEP):
            raise ValueError("out of bounds: read: state")
        if not (0.0 <= left <= READ_MAX_GLIDE and left == math.floor(left)):  # as the C's
            raise ValueError("out of bounds: read: state")
        if not abs(inc) * left <= READ_MAX_STEP:
            raise ValueError("out of bounds: read: state")
        if not 0.0 < tgt - inc * left <= READ_MAX_STEP * (1.0 + 1e-9):  # the glide's far end
            raise ValueError("out of bounds: read: state")
        at, phase, cut = self._rd_pos, self._rd_phase, self._rd_fc
        frames = 0
        while frames < count and pos < end:
            at[frames], phase[frames] = pos, ph
            cut[frames] = READ_CUT / step if step > 1.0 else READ_CUT
            frames += 1
            ph = ph + step
            fl = float(math.floor(ph))
            pos = pos + fl
            ph = ph - fl
            if left > 0.0:
                left = left - 1.0
                step = tgt - inc * left if left > 0.0 else tgt
        state[0], state[1], state[2], state[5] = pos, ph, step, left
        if frames == 0:
            return 0
        at, phase, cut = at[:frames], phase[:frames], cut[:frames]
        reach = float(READ_HALF) / cut
        lo = np.floor(phase - reach).astype(np.intp)
        hi = np.ceil(phase + reach).astype(np.intp)
        taps = np.arange(int(lo.min()), int(hi.max()) + 1)
        # w = |k - phase| * fc per (frame, tap); v the table's lerp where w < READ_HALF
        w = np.abs(taps[np.newaxis, :].astype(np.float64) - phase[:, np.newaxis])
        w = w * cut[:, np.newaxis]
        inside = w < float(READ_HALF)
        u = np.where(inside, w, 0.0) * float(READ_RES)
        ii = u.astype(np.intp)
        fr = u - ii.astype(np.float64)
        t0, t1 = table[ii], table[ii + 1]
        v = np.where(inside, t0 + fr * (t1 - t0), 0.0)
        total = np.zeros(frames)
        for j in range(taps.size):
            total = total + v[:, j]
        coef = v / total[:, np.newaxis]
        first = at.astype(np.intp)
        acc = np.zeros((n, a, frames))
        for j, k in enumerate(taps):
            idx = first + k
            valid = (idx >= 0) & (idx < length)
            x = src[:, :, np.clip(idx, 0, length - 1)].astype(np.float64)
            term = x * coef[:, j]
            np.copyto(term, 0.0, where=~valid)
            acc = acc + term
        dst[:n, :a, :frames] = acc.astype(np.float32)
        return frames

    def zero(self, a: np.ndarray, /) -> None:
        """Fill ``a`` with zeros."""
        a.fill(0.0)
