/* The mixer's block arithmetic in one compiled call each, holding the GIL.
 *
 * Why: the audio callback is Python, and every large numpy call releases the
 * GIL (numpy does so above 500 elements). Each release lets a control thread
 * (the web server, OSC) take the GIL, and the callback then waits up to the
 * switch interval to get it back, once per call: a dozen calls a block made
 * the callback's p99 track the control load (docs/web.md). These functions
 * never release the GIL, so a block waits for it once, when the callback starts.
 *
 * Each function computes exactly what the numpy reference path of
 * core/mixer/engine.py computes, in the same precision and order (float32
 * products and sums, float64 ramps), and checks every index against the
 * buffers it was given: a wrong argument raises ValueError, never reads or
 * writes out of bounds. Bounds are checked as spans (span_ok), never by adding
 * two caller-given integers, which could overflow past the check. Buffers are
 * taken through get_buf_nd: native float32/float64 only, writable where written,
 * exporters without strides (ctypes) read as C-contiguous. tests/test_kernel.py
 * compares the two paths and holds each of these.
 *
 * Built by setuptools as stemdeck.core.mixer._kernel (pyproject.toml). Keep it
 * free of -ffast-math: the results must not depend on the compiler's mood, and
 * floating-point contraction (FMA) is disabled for the same reason.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

/* A float32 or float64 buffer, any strides (PyBUF_STRIDES). ``st`` is the
 * strides to use: the exporter's, or C-contiguous ones computed here when it
 * gives none (ctypes arrays do that whatever the flags ask). */
typedef struct {
    Py_buffer view;
    int held;
    const Py_ssize_t *st;
    Py_ssize_t cstrides[3];
} Buf;

#if PY_BIG_ENDIAN
#define NATIVE_ORDER(c) ((c) == '>' || (c) == '!')
#else
#define NATIVE_ORDER(c) ((c) == '<')
#endif

/* A buffer of ``ndim_min``..``ndim_max`` dimensions of float32 (kind 'f') or
 * float64 ('d') in this machine's byte order; writable if asked. Anything else
 * (another type or byte order, indirect buffers, a shape the exporter does not
 * give or that does not fit its memory) raises ValueError. On failure the
 * buffer may be held: the caller releases it either way. */
static int
get_buf_nd(PyObject *obj, Buf *b, const char *name, char kind, int writable, int ndim_min,
           int ndim_max)
{
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    b->held = 0;
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) {
        PyErr_Format(PyExc_ValueError, "%s: not a%s buffer", name, writable ? " writable" : "");
        return -1;
    }
    b->held = 1;
    const char *f = b->view.format ? b->view.format : "B";
    if (*f == '=' || *f == '@' || NATIVE_ORDER(*f))
        f++;
    Py_ssize_t want = kind == 'f' ? 4 : 8;
    if (f[0] != kind || f[1] != '\0' || b->view.itemsize != want) {
        PyErr_Format(PyExc_ValueError, "%s: expected native float%d, got format %s", name,
                     (int)(want * 8), b->view.format ? b->view.format : "B");
        return -1;
    }
    int nd = b->view.ndim;
    if (nd < ndim_min || nd > ndim_max) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d dimensions, got %d", name, ndim_max, nd);
        return -1;
    }
    if (writable && b->view.readonly) {
        PyErr_Format(PyExc_ValueError, "%s: read-only", name);
        return -1;
    }
    if (b->view.shape == NULL || b->view.suboffsets != NULL) {
        PyErr_Format(PyExc_ValueError, "%s: not a strided buffer", name);
        return -1;
    }
    Py_ssize_t elems = 1;
    for (int d = 0; d < nd; d++) {
        Py_ssize_t len = b->view.shape[d];
        if (len < 0) {
            PyErr_Format(PyExc_ValueError, "%s: negative shape", name);
            return -1;
        }
        elems = (len == 0 || elems == 0) ? 0 : (elems > PY_SSIZE_T_MAX / len ? -1 : elems * len);
        if (elems < 0)
            break;
    }
    if (b->view.buf == NULL && elems != 0) {
        PyErr_Format(PyExc_ValueError, "%s: no memory", name);
        return -1;
    }
    if (b->view.strides != NULL) {
        b->st = b->view.strides;
        return 0;
    }
    /* No strides: C-contiguous, if the shape fits the memory given. */
    if (elems < 0 || elems > b->view.len / want) {
        PyErr_Format(PyExc_ValueError, "%s: shape larger than the buffer", name);
        return -1;
    }
    Py_ssize_t stride = want;
    for (int d = nd - 1; d >= 0; d--) {
        b->cstrides[d] = stride;
        stride *= b->view.shape[d] > 0 ? b->view.shape[d] : 1;
    }
    b->st = b->cstrides;
    return 0;
}

static int
get_buf(PyObject *obj, Buf *b, const char *name, char kind, int writable, int ndim)
{
    return get_buf_nd(obj, b, name, kind, writable, ndim, ndim);
}

/* [start, start + count) inside [0, size), with no overflow whatever the values. */
static int
span_ok(Py_ssize_t start, Py_ssize_t count, Py_ssize_t size)
{
    return start >= 0 && count >= 0 && start <= size && count <= size - start;
}

static void
release(Buf *b)
{
    if (b->held)
        PyBuffer_Release(&b->view);
    b->held = 0;
}

/* Pointer to element [i][j][k] of a 3-D buffer, or [i][j] of a 2-D one (k unused). */
#define AT3(b, T, i, j, k)                                                                 \
    ((T *)((char *)(b)->view.buf + (i) * (b)->st[0] + (j) * (b)->st[1] \
           + (k) * (b)->st[2]))
#define AT2(b, T, i, j) \
    ((T *)((char *)(b)->view.buf + (i) * (b)->st[0] + (j) * (b)->st[1]))
#define AT1(b, T, i) ((T *)((char *)(b)->view.buf + (i) * (b)->st[0]))
#define SHAPE(b, d) ((b)->view.shape[d])

static int
bad(const char *what)
{
    PyErr_Format(PyExc_ValueError, "out of bounds: %s", what);
    return -1;
}

/* ramp_curves(cur, step, left, ramp, curves, frames, rows)
 *
 * cur, step, left: float64 (n, 2); ramp: float64 (>= frames,) holding 1, 2, 3...;
 * curves: float32 (n, 2, >= frames). For every (strip, side):
 *   k[t] = min(ramp[t], left) * step + cur   (float64), curves[t] = (float)k[t],
 * then cur = k[frames - 1] and left = max(left - frames, 0). Curves are written
 * for the first ``rows`` strips only (those a track plays); every strip's ramp
 * moves on.
 */
static int
check_ramp(Buf *cur, Buf *step, Buf *left, Buf *ramp, Buf *curves, Py_ssize_t frames,
           Py_ssize_t rows)
{
    Py_ssize_t n = SHAPE(cur, 0);
    if (frames < 1 || rows < 0 || rows > n || SHAPE(cur, 1) != 2 || SHAPE(step, 0) != n
        || SHAPE(step, 1) != 2 || SHAPE(left, 0) != n || SHAPE(left, 1) != 2
        || SHAPE(curves, 0) != n || SHAPE(curves, 1) != 2 || SHAPE(curves, 2) < frames
        || SHAPE(ramp, 0) < frames)
        return bad("ramp_curves");
    return 0;
}

static int
run_ramp(Buf *cur, Buf *step, Buf *left, Buf *ramp, Buf *curves, Py_ssize_t frames,
         Py_ssize_t rows)
{
    Py_ssize_t n = SHAPE(cur, 0);
    if (check_ramp(cur, step, left, ramp, curves, frames, rows) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        for (Py_ssize_t s = 0; s < 2; s++) {
            double c = *AT2(cur, double, i, s), st = *AT2(step, double, i, s);
            double *lp = AT2(left, double, i, s);
            double l = *lp, k = c;
            for (Py_ssize_t t = i < rows ? 0 : frames - 1; t < frames; t++) {
                double r = *AT1(ramp, double, t);
                double m = r < l ? r : l;
                k = m * st;
                k = k + c;
                if (i < rows)
                    *AT3(curves, float, i, s, t) = (float)k;
            }
            *AT2(cur, double, i, s) = k;
            l = l - (double)frames;
            *lp = l > 0.0 ? l : 0.0;
        }
    }
    return 0;
}

static int
get_ramp_bufs(PyObject *const *o, Buf *b)
{
    if (get_buf(o[0], &b[0], "cur", 'd', 1, 2) < 0 || get_buf(o[1], &b[1], "step", 'd', 0, 2) < 0
        || get_buf(o[2], &b[2], "left", 'd', 1, 2) < 0
        || get_buf(o[3], &b[3], "ramp", 'd', 0, 1) < 0
        || get_buf(o[4], &b[4], "curves", 'f', 1, 3) < 0)
        return -1;
    return 0;
}

static void
release_all(Buf *b, int n)
{
    for (int i = 0; i < n; i++)
        release(&b[i]);
}

static PyObject *
ramp_curves(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[5];
    Py_ssize_t frames, rows;
    Buf b[5];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOnn", &o[0], &o[1], &o[2], &o[3], &o[4], &frames, &rows))
        return NULL;
    if (get_ramp_bufs(o, b) == 0 && run_ramp(&b[0], &b[1], &b[2], &b[3], &b[4], frames, rows) == 0)
        result = Py_NewRef(Py_None);
    release_all(b, 5);
    return result;
}

/* segment(src, pos, count, curves, row, prod, first, off, mix, add, co)
 *
 * Adds ``count`` samples of a track through its strips into the mix:
 *   src: float32 (n, a, length), a = 1 (mono: both sides) or 2; read from ``pos``;
 *   curves: float32 (>= n, 2, B) strip gains at ``off``, or None (the original
 *     standing in: unity);
 *   row: float32 (>= count,) head fade times transport, or None (unity);
 *   prod: float32 (rows, 2, P): the strips' signals go to rows first..first+n-1;
 *     at ``off`` when first > 0 (the main head, kept for the meters), at 0 otherwise;
 *   mix: float32 (2, B): the sum over strips is written at ``off`` (add = 0, the
 *     main head) or added to it (add = 1, a fading head);
 *   co: float32 (>= n, 2, B) per-strip outputs, added to at ``off``, or None.
 * Products in float32 as numpy does them: (src * curve) * row; the sum over
 * strips runs in strip order.
 */
static int
check_segment(Buf *src, Py_ssize_t pos, Py_ssize_t count, Buf *curves, Buf *row, Buf *prod,
              Py_ssize_t first, Py_ssize_t off, Buf *mix, Buf *co)
{
    /* Every end as a span check: pos + count, off + count, first + n never computed. */
    Py_ssize_t n = SHAPE(src, 0), a = SHAPE(src, 1), length = SHAPE(src, 2);
    Py_ssize_t poff = first > 0 ? off : 0;
    if (count < 1 || (a != 1 && a != 2) || !span_ok(pos, count, length)
        || (curves->held
            && (SHAPE(curves, 0) < n || SHAPE(curves, 1) != 2
                || !span_ok(off, count, SHAPE(curves, 2))))
        || (row->held && SHAPE(row, 0) < count) || !span_ok(first, n, SHAPE(prod, 0))
        || SHAPE(prod, 1) != 2 || !span_ok(poff, count, SHAPE(prod, 2)) || SHAPE(mix, 0) != 2
        || !span_ok(off, count, SHAPE(mix, 1))
        || (co->held
            && (SHAPE(co, 0) < n || SHAPE(co, 1) != 2 || !span_ok(off, count, SHAPE(co, 2)))))
        return bad("segment");
    return 0;
}

#define SEG_SUM 256 /* frames of the strips' sum at a time */

static int
run_segment(Buf *src, Py_ssize_t pos, Py_ssize_t count, Buf *curves, Buf *row, Buf *prod,
            Py_ssize_t first, Py_ssize_t off, Buf *mix, int add, Buf *co)
{
    int has_curves = curves->held, has_row = row->held, has_co = co->held;
    Py_ssize_t n = SHAPE(src, 0), a = SHAPE(src, 1);
    Py_ssize_t poff = first > 0 ? off : 0;
    if (check_segment(src, pos, count, curves, row, prod, first, off, mix, co) < 0)
        return -1;
    for (Py_ssize_t s = 0; s < 2; s++) {
        Py_ssize_t side = a == 2 ? s : 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            for (Py_ssize_t t = 0; t < count; t++) {
                float v = *AT3(src, float, i, side, pos + t);
                if (has_curves)
                    v = v * *AT3(curves, float, i, s, off + t);
                if (has_row)
                    v = v * *AT1(row, float, t);
                *AT3(prod, float, first + i, s, poff + t) = v;
                if (has_co) {
                    float *c = AT3(co, float, i, s, off + t);
                    *c = *c + v;
                }
            }
        }
        /* Each frame's sum in strip order, SEG_SUM frames at a time with the strips
         * outer: the frames' chains are independent (one frame's chain alone
         * waits on every add), the bits as a frame at a time. */
        for (Py_ssize_t t0 = 0; t0 < count; t0 += SEG_SUM) {
            Py_ssize_t m = count - t0 < SEG_SUM ? count - t0 : SEG_SUM;
            float acc[SEG_SUM];
            /* No strips (a track of no channels): the sum is 0, as numpy's. */
            for (Py_ssize_t t = 0; t < m; t++)
                acc[t] = n > 0 ? *AT3(prod, float, first, s, poff + t0 + t) : 0.0f;
            for (Py_ssize_t i = 1; i < n; i++) {
                const float *p = AT3(prod, float, first + i, s, poff + t0);
                const Py_ssize_t sp = prod->st[2];
                for (Py_ssize_t t = 0; t < m; t++)
                    acc[t] = acc[t] + *(const float *)((const char *)p + t * sp);
            }
            for (Py_ssize_t t = 0; t < m; t++) {
                float *mx = AT2(mix, float, s, off + t0 + t);
                *mx = add ? *mx + acc[t] : acc[t];
            }
        }
    }
    return 0;
}

static PyObject *
segment(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_src, *o_curves, *o_row, *o_prod, *o_mix, *o_co;
    Py_ssize_t pos, count, first, off;
    int add;
    Buf b[6];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OnnOOOnnOpO", &o_src, &pos, &count, &o_curves, &o_row, &o_prod,
                          &first, &off, &o_mix, &add, &o_co))
        return NULL;
    if (get_buf(o_src, &b[0], "src", 'f', 0, 3) == 0
        && (o_curves == Py_None || get_buf(o_curves, &b[1], "curves", 'f', 0, 3) == 0)
        && (o_row == Py_None || get_buf(o_row, &b[2], "row", 'f', 0, 1) == 0)
        && get_buf(o_prod, &b[3], "prod", 'f', 1, 3) == 0
        && get_buf(o_mix, &b[4], "mix", 'f', 1, 2) == 0
        && (o_co == Py_None || get_buf(o_co, &b[5], "co", 'f', 1, 3) == 0)
        && run_segment(&b[0], pos, count, &b[1], &b[2], &b[3], first, off, &b[4], add, &b[5]) == 0)
        result = Py_NewRef(Py_None);
    release_all(b, 6);
    return result;
}

/* finish(prod, rows, frames, mix, master, gain, peak, sumsq, out, co) -> bool
 *
 * The end of a block: the master gain (``master`` float32 (>= frames,) per
 * sample, or None and the scalar ``gain``) on mix (2, B); mix into row 0 of
 * prod (rows used: ``rows``); each row's peak |x| and sum of squares over the
 * block. If the master row holds a NaN or an infinity, returns 0 (False) and
 * touches nothing else (the caller silences the block). Otherwise folds the
 * block's levels into the meters ``peak`` and ``sumsq`` (float32 (>= rows,)),
 * writes the output block ``out`` (frames, C) -- the mix (C = 2) or, given
 * ``co`` (m, 2, B), every strip's pair (C = 2m) -- and returns 1 (True).
 */
static int
check_finish(Buf *prod, Py_ssize_t rows, Py_ssize_t frames, Buf *mix, Buf *master, Buf *peak,
             Buf *sumsq, Buf *out, Buf *co)
{
    if (co->held && SHAPE(co, 0) > PY_SSIZE_T_MAX / 2)
        return bad("finish");
    Py_ssize_t cols = co->held ? 2 * SHAPE(co, 0) : 2;
    if (frames < 1 || rows < 1 || SHAPE(prod, 0) < rows || SHAPE(prod, 1) != 2
        || SHAPE(prod, 2) < frames || SHAPE(mix, 0) != 2 || SHAPE(mix, 1) < frames
        || (master->held && SHAPE(master, 0) < frames) || SHAPE(peak, 0) < rows
        || SHAPE(sumsq, 0) < rows || SHAPE(out, 0) != frames || SHAPE(out, 1) != cols
        || (co->held && (SHAPE(co, 1) != 2 || SHAPE(co, 2) < frames)))
        return bad("finish");
    return 0;
}

/* Row r0 + j's levels take sample (s, t): its peak |x| (a NaN in a strip's row
 * shows as NaN, as numpy's) and its sum of squares. */
#define LEVEL(j)                                              \
    do {                                                      \
        float x_ = *AT3(prod, float, r0 + (j), s, t);         \
        float v_ = fabsf(x_);                                 \
        if (v_ > pk[j] || v_ != v_)                           \
            pk[j] = v_;                                       \
        sq[j] += (double)x_ * (double)x_;                     \
    } while (0)

static int
run_finish(Buf *prod, Py_ssize_t rows, Py_ssize_t frames, Buf *mix, Buf *master, double gain,
           Buf *peak, Buf *sumsq, Buf *out, Buf *co)
{
    int has_master = master->held, has_co = co->held;
    if (check_finish(prod, rows, frames, mix, master, peak, sumsq, out, co) < 0)
        return -1;
    Py_ssize_t cols = has_co ? 2 * SHAPE(co, 0) : 2;
    float g = (float)gain;
    for (Py_ssize_t s = 0; s < 2; s++) {
        for (Py_ssize_t t = 0; t < frames; t++) {
            float *m = AT2(mix, float, s, t);
            if (has_master)
                *m = *m * *AT1(master, float, t);
            else if (gain != 1.0)
                *m = *m * g;
            *AT3(prod, float, 0, s, t) = *m;
        }
    }
    /* The master row first: a non-finite block changes nothing. */
    for (Py_ssize_t s = 0; s < 2; s++)
        for (Py_ssize_t t = 0; t < frames; t++)
            if (!(fabsf(*AT3(prod, float, 0, s, t)) <= 3.4e38f))
                return 0;
    /* Four rows at a time: each row's levels its own chain, in the order of a
     * row alone (one row's sum of squares alone waits on every add). */
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += 4) {
        Py_ssize_t nr = rows - r0 < 4 ? rows - r0 : 4;
        float pk[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        double sq[4] = {0.0, 0.0, 0.0, 0.0};
        for (Py_ssize_t s = 0; s < 2; s++) {
            if (nr == 4)
                for (Py_ssize_t t = 0; t < frames; t++) {
                    LEVEL(0);
                    LEVEL(1);
                    LEVEL(2);
                    LEVEL(3);
                }
            else
                for (Py_ssize_t j = 0; j < nr; j++)
                    for (Py_ssize_t t = 0; t < frames; t++)
                        LEVEL(j);
        }
        for (Py_ssize_t j = 0; j < nr; j++) {
            float *p = AT1(peak, float, r0 + j);
            if (pk[j] > *p || pk[j] != pk[j])
                *p = pk[j];
            float *q = AT1(sumsq, float, r0 + j);
            *q = (float)((double)*q + sq[j]);
        }
    }
    for (Py_ssize_t t = 0; t < frames; t++) {
        if (!has_co) {
            *AT2(out, float, t, 0) = *AT2(mix, float, 0, t);
            *AT2(out, float, t, 1) = *AT2(mix, float, 1, t);
        }
        else {
            for (Py_ssize_t c = 0; c < cols; c++)
                *AT2(out, float, t, c) = *AT3(co, float, c / 2, c % 2, t);
        }
    }
    return 1;
}

static int
get_finish_bufs(PyObject *const *o, Buf *b, int co_writable)
{
    /* o: prod, mix, master, peak, sumsq, out, co (written by block, read by finish) */
    if (get_buf(o[0], &b[0], "prod", 'f', 1, 3) < 0 || get_buf(o[1], &b[1], "mix", 'f', 1, 2) < 0
        || (o[2] != Py_None && get_buf(o[2], &b[2], "master", 'f', 0, 1) < 0)
        || get_buf(o[3], &b[3], "peak", 'f', 1, 1) < 0
        || get_buf(o[4], &b[4], "sumsq", 'f', 1, 1) < 0
        || get_buf(o[5], &b[5], "out", 'f', 1, 2) < 0
        || (o[6] != Py_None && get_buf(o[6], &b[6], "co", 'f', co_writable, 3) < 0))
        return -1;
    return 0;
}

static PyObject *
to_bool(int r)
{
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *
finish(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[7];
    Py_ssize_t rows, frames;
    double gain;
    Buf b[7];
    memset(b, 0, sizeof b);
    int r = -1;
    if (!PyArg_ParseTuple(args, "OnnOOdOOOO", &o[0], &rows, &frames, &o[1], &o[2], &gain, &o[3],
                          &o[4], &o[5], &o[6]))
        return NULL;
    if (get_finish_bufs(o, b, 0) == 0)
        r = run_finish(&b[0], rows, frames, &b[1], &b[2], gain, &b[3], &b[4], &b[5], &b[6]);
    release_all(b, 7);
    return to_bool(r);
}

static void
zero3(Buf *b, Py_ssize_t frames)
{
    /* frames: how much of the last axis (all of it if larger). */
    int nd = b->view.ndim;
    Py_ssize_t d0 = SHAPE(b, 0), d1 = nd > 1 ? SHAPE(b, 1) : 1, d2 = nd > 2 ? SHAPE(b, 2) : 1;
    Py_ssize_t s0 = b->st[0], s1 = nd > 1 ? b->st[1] : 0;
    Py_ssize_t s2 = nd > 2 ? b->st[2] : 0;
    if (nd == 3 && frames < d2)
        d2 = frames;
    for (Py_ssize_t i = 0; i < d0; i++)
        for (Py_ssize_t j = 0; j < d1; j++)
            for (Py_ssize_t k = 0; k < d2; k++)
                *(float *)((char *)b->view.buf + i * s0 + j * s1 + k * s2) = 0.0f;
}

/* block(cur, step, left, ramp, curves, curve_frames, rows, src, pos, frames, is_mix,
 *       prod, mix, master, gain, peak, sumsq, out, co) -> bool
 *
 * A whole block of the steady case in one call (core/mixer/engine.py says when):
 * one play head at unity, no boundary inside the block. ramp_curves over
 * ``curve_frames`` (0: the curves stand), per-strip outputs cleared, segment
 * (rows 1.. of prod, at 0), then finish; returns what finish returns.
 * ``co`` is written here (cleared, then added to), so it must be writable. Every
 * argument is checked before anything is written: a refused block changes nothing.
 */
static PyObject *
block(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_ramp[5], *o_src, *o_fin[7];
    Py_ssize_t curve_frames, rows, pos, frames;
    int is_mix;
    double gain;
    Buf rb[5], src, fb[7], none;
    memset(rb, 0, sizeof rb), memset(fb, 0, sizeof fb);
    memset(&src, 0, sizeof src), memset(&none, 0, sizeof none);
    int r = -1;
    if (!PyArg_ParseTuple(args, "OOOOOnnOnnpOOOdOOOO", &o_ramp[0], &o_ramp[1], &o_ramp[2],
                          &o_ramp[3], &o_ramp[4], &curve_frames, &rows, &o_src, &pos, &frames,
                          &is_mix, &o_fin[0], &o_fin[1], &o_fin[2], &gain, &o_fin[3], &o_fin[4],
                          &o_fin[5], &o_fin[6]))
        return NULL;
    if (get_ramp_bufs(o_ramp, rb) < 0 || get_buf(o_src, &src, "src", 'f', 0, 3) < 0
        || get_finish_bufs(o_fin, fb, 1) < 0)
        goto done;
    /* Every check before anything is written: a refused block changes nothing. */
    Buf *curves = is_mix ? &none : &rb[4];
    Py_ssize_t rows_fin = is_mix ? 1 : 1 + SHAPE(&src, 0);
    if (curve_frames > 0
        && check_ramp(&rb[0], &rb[1], &rb[2], &rb[3], &rb[4], curve_frames, rows) < 0)
        goto done;
    if (check_segment(&src, pos, frames, curves, &none, &fb[0], 1, 0, &fb[1], &fb[6]) < 0
        || check_finish(&fb[0], rows_fin, frames, &fb[1], &fb[2], &fb[3], &fb[4], &fb[5], &fb[6])
               < 0)
        goto done;
    if (curve_frames > 0 && run_ramp(&rb[0], &rb[1], &rb[2], &rb[3], &rb[4], curve_frames, rows) < 0)
        goto done;
    if (fb[6].held)
        zero3(&fb[6], frames);
    if (run_segment(&src, pos, frames, curves, &none, &fb[0], 1, 0, &fb[1], 0, &fb[6]) < 0)
        goto done;
    r = run_finish(&fb[0], rows_fin, frames, &fb[1], &fb[2], gain, &fb[3], &fb[4], &fb[5], &fb[6]);
done:
    release_all(rb, 5), release(&src), release_all(fb, 7);
    return to_bool(r);
}

/* filter(x, rows, frames, tgt, step, left, rtgt, rstep, rleft, state, table)
 *
 * The DJ filter of ``rows`` strips, in place on x (float32 (>= rows, 2, >= frames)):
 * one knob k in -1..1 per strip (low-pass below 0, high-pass above, 0 a true
 * bypass) and its resonance r in 0..1, both gliding per sample. A ramp is
 * (tgt, step, left), float64 (m,) each: sample t of the block stands at
 *   tgt - step * max(left - (t + 1), 0),
 * so it ends exactly on its target whatever the blocks (left counts down in
 * whole samples); every one of the m ramps moves on, filtered or not.
 *
 * The filter is a TPT (topology-preserving, Zavalishin) state-variable filter,
 * stable for every cutoff below Nyquist and every damping above 0, with its
 * state (ic1, ic2) per (strip, side) in ``state`` float64 (m, 2, 2). Its cutoff
 * coefficient g = tan(pi fc / sr) is read from ``table`` float64 (2, T + 1):
 * row 0 the low-pass at |k| = i / T, row 1 the high-pass, interpolated linearly
 * (the engine fills it for its sample rate). Damping kd = sqrt 2 - 1.3142... r
 * (Q 0.707 at r = 0, 10 at r = 1). The output is x + w (f - x), f the low or
 * high output, w = min(20 |k|, 1): at k = 0 the strip is exactly x. A strip whose
 * knob stands at 0 for the whole block is not touched, and its state is cleared.
 * All in float64, in the order the numpy reference (core/mixer/kernel.py) uses.
 */
static int
check_filter(Buf *x, Py_ssize_t rows, Py_ssize_t frames, Buf *p[6], Buf *state, Buf *table)
{
    Py_ssize_t m = SHAPE(p[0], 0);
    if (frames < 1 || rows < 0 || rows > m || SHAPE(x, 0) < rows || SHAPE(x, 1) != 2
        || SHAPE(x, 2) < frames || SHAPE(state, 0) != m || SHAPE(state, 1) != 2
        || SHAPE(state, 2) != 2 || SHAPE(table, 0) != 2 || SHAPE(table, 1) < 2)
        return bad("filter");
    for (int j = 1; j < 6; j++)
        if (SHAPE(p[j], 0) != m)
            return bad("filter");
    return 0;
}

static double
ramp_at(double tgt, double step, double left, Py_ssize_t t)
{
    double rem = left - (double)(t + 1);
    return rem > 0.0 ? tgt - step * rem : tgt;
}

/* One sample's filter coefficients: knob k, resonance r. */
typedef struct {
    double a1, a2, a3, kd, w;
    int hp;
} Svf;

static void
svf_coeffs(Buf *table, Py_ssize_t tn, double k, double r, Svf *c)
{
    c->hp = k > 0.0;
    double a = fabs(k);
    double idx = a * (double)tn;
    double fl = floor(idx);
    if (fl > (double)(tn - 1))
        fl = (double)(tn - 1);
    double frac = idx - fl;
    Py_ssize_t ii = (Py_ssize_t)fl;
    double g0 = *AT2(table, double, c->hp, ii), g1 = *AT2(table, double, c->hp, ii + 1);
    double g = g0 + frac * (g1 - g0);
    c->kd = 1.4142135623730951 - r * 1.3142135623730951;
    c->a1 = 1.0 / (1.0 + g * (g + c->kd));
    c->a2 = g * c->a1;
    c->a3 = g * c->a2;
    c->w = a * 20.0;
    if (c->w > 1.0)
        c->w = 1.0;
}

/* One sample v through the filter of state (c1, c2): the DJ filter's output. */
static double
svf_tick(const Svf *c, double v, double *c1, double *c2)
{
    double v3 = v - *c2;
    double v1 = c->a1 * *c1 + c->a2 * v3;
    double v2 = (*c2 + c->a2 * *c1) + c->a3 * v3;
    *c1 = 2.0 * v1 - *c1;
    *c2 = 2.0 * v2 - *c2;
    double f = c->hp ? (v - c->kd * v1) - v2 : v2;
    return v + c->w * (f - v);
}

static void
run_filter(Buf *x, Py_ssize_t rows, Py_ssize_t frames, Buf *p[6], Buf *state, Buf *table)
{
    Py_ssize_t m = SHAPE(p[0], 0), tn = SHAPE(table, 1) - 1;
    for (Py_ssize_t i = 0; i < m; i++) {
        double kt = *AT1(p[0], double, i), ks = *AT1(p[1], double, i);
        double kl = *AT1(p[2], double, i);
        double rt = *AT1(p[3], double, i), rs = *AT1(p[4], double, i);
        double rl = *AT1(p[5], double, i);
        if (i < rows) {
            double *ic = AT3(state, double, i, 0, 0);
            double *s1 = AT3(state, double, i, 1, 0);
            if (kl == 0.0 && kt == 0.0) {
                *ic = *AT3(state, double, i, 0, 1) = 0.0;
                *s1 = *AT3(state, double, i, 1, 1) = 0.0;
            }
            else {
                double c1[2], c2[2];
                for (int s = 0; s < 2; s++) {
                    c1[s] = *AT3(state, double, i, s, 0);
                    c2[s] = *AT3(state, double, i, s, 1);
                }
                /* Not gliding: the same coefficients for every sample, made once. */
                int steady = kl == 0.0 && rl == 0.0;
                Svf c;
                if (steady)
                    svf_coeffs(table, tn, kt, rt, &c);
                for (Py_ssize_t t = 0; t < frames; t++) {
                    if (!steady)
                        svf_coeffs(table, tn, ramp_at(kt, ks, kl, t), ramp_at(rt, rs, rl, t), &c);
                    for (int s = 0; s < 2; s++) {
                        float *xp = AT3(x, float, i, s, t);
                        *xp = (float)svf_tick(&c, (double)*xp, &c1[s], &c2[s]);
                    }
                }
                for (int s = 0; s < 2; s++) {
                    *AT3(state, double, i, s, 0) = c1[s];
                    *AT3(state, double, i, s, 1) = c2[s];
                }
            }
        }
        double nl = kl - (double)frames;
        *AT1(p[2], double, i) = nl > 0.0 ? nl : 0.0;
        nl = rl - (double)frames;
        *AT1(p[5], double, i) = nl > 0.0 ? nl : 0.0;
    }
}

static PyObject *
filter(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_x, *o_p[6], *o_state, *o_table;
    Py_ssize_t rows, frames;
    Buf bx, bp[6], bs, bt;
    Buf *pp[6] = {&bp[0], &bp[1], &bp[2], &bp[3], &bp[4], &bp[5]};
    static const char *names[6] = {"tgt", "step", "left", "rtgt", "rstep", "rleft"};
    memset(&bx, 0, sizeof bx), memset(bp, 0, sizeof bp);
    memset(&bs, 0, sizeof bs), memset(&bt, 0, sizeof bt);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OnnOOOOOOOO", &o_x, &rows, &frames, &o_p[0], &o_p[1], &o_p[2],
                          &o_p[3], &o_p[4], &o_p[5], &o_state, &o_table))
        return NULL;
    int ok = get_buf(o_x, &bx, "x", 'f', 1, 3) == 0;
    for (int j = 0; ok && j < 6; j++)
        ok = get_buf(o_p[j], &bp[j], names[j], 'd', j == 2 || j == 5, 1) == 0;
    ok = ok && get_buf(o_state, &bs, "state", 'd', 1, 3) == 0
         && get_buf(o_table, &bt, "table", 'd', 0, 2) == 0
         && check_filter(&bx, rows, frames, pp, &bs, &bt) == 0;
    if (ok) {
        run_filter(&bx, rows, frames, pp, &bs, &bt);
        result = Py_NewRef(Py_None);
    }
    release(&bx), release_all(bp, 6), release(&bs), release(&bt);
    return result;
}

/* echo(x, xpre, rows, frames, sends, bus, line, fstate, table, mix)
 *
 * The echo bus, sample by sample, added to the master bus mix (2, >= frames):
 *   in[t]   = sum over strips i < rows, in strip order, of src_i[t] * send_i[t]
 *             (float64), src the strip after its fader (x) or, where sends[3][i]
 *             is not 0, before it (xpre); both float32 (>= rows, 2, >= frames);
 *   r[t]    = the delay line read d[t] samples back, interpolated linearly;
 *   y[t]    = r[t] through the bus's DJ filter (resonance 0), or r[t] at knob 0;
 *   line[t] = in[t] + feedback[t] * y[t], kept within +-4 (a runaway never grows
 *             past it, a non-finite value is 0); mix[t] += return[t] * y[t].
 * sends: float64 (4, n): each strip's send ramp (target, step, samples left, as
 * filter's) and its pre flag; every strip's ramp moves on. bus: float64 (15,):
 * the write position, then the ramps of the delay (samples: target, span, left:
 * glide_at), feedback, return and filter knob (target, step, left each), the
 * samples the bus has been quiet (|in| and |y| under 1e-6: the engine stops
 * running it once that exceeds the delay), and the delay glide's length.
 * line: float32 (2, D); fstate: float64 (2, 2), the filter's state.
 */
enum { B_POS, B_D, B_FB = 4, B_RET = 7, B_K = 10, B_QUIET = 13, B_DLEN, B_SIZE };

/* The delay's glide: (target, span, samples left) over ``length`` samples on a
 * raised cosine, so the read head's speed changes smoothly (no corner, no click):
 * target - span * (1 - cos(pi q)) / 2, q = the share of the glide still to go. */
static double
glide_at(double tgt, double span, double left, double length, Py_ssize_t t)
{
    double rem = left - (double)(t + 1);
    if (!(rem > 0.0))
        return tgt;
    double q = rem / length;
    return tgt - span * ((1.0 - cos(3.141592653589793 * q)) * 0.5);
}

static PyObject *
echo(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[8];
    Py_ssize_t rows, frames;
    Buf b[8];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOnnOOOOOO", &o[0], &o[1], &rows, &frames, &o[2], &o[3], &o[4],
                          &o[5], &o[6], &o[7]))
        return NULL;
    if (get_buf(o[0], &b[0], "x", 'f', 0, 3) < 0 || get_buf(o[1], &b[1], "xpre", 'f', 0, 3) < 0
        || get_buf(o[2], &b[2], "sends", 'd', 1, 2) < 0
        || get_buf(o[3], &b[3], "bus", 'd', 1, 1) < 0
        || get_buf(o[4], &b[4], "line", 'f', 1, 2) < 0
        || get_buf(o[5], &b[5], "fstate", 'd', 1, 2) < 0
        || get_buf(o[6], &b[6], "table", 'd', 0, 2) < 0
        || get_buf(o[7], &b[7], "mix", 'f', 1, 2) < 0)
        goto done;
    Buf *x = &b[0], *xpre = &b[1], *sends = &b[2], *bus = &b[3], *line = &b[4];
    Buf *fst = &b[5], *table = &b[6], *mix = &b[7];
    Py_ssize_t n = SHAPE(sends, 1), D = SHAPE(line, 1);
    if (frames < 1 || rows < 0 || rows > n || SHAPE(sends, 0) != 4 || SHAPE(x, 0) < rows
        || SHAPE(x, 1) != 2 || SHAPE(x, 2) < frames || SHAPE(xpre, 0) < rows
        || SHAPE(xpre, 1) != 2 || SHAPE(xpre, 2) < frames || SHAPE(bus, 0) != B_SIZE
        || SHAPE(line, 0) != 2 || D < 4 || SHAPE(fst, 0) != 2 || SHAPE(fst, 1) != 2
        || SHAPE(table, 0) != 2 || SHAPE(table, 1) < 2 || SHAPE(mix, 0) != 2
        || SHAPE(mix, 1) < frames) {
        bad("echo");
        goto done;
    }
    double v[B_SIZE];
    for (int j = 0; j < B_SIZE; j++)
        v[j] = *AT1(bus, double, j);
    if (!(v[B_POS] >= 0.0 && v[B_POS] < (double)D) || v[B_POS] != floor(v[B_POS])
        || !(v[B_DLEN] >= 1.0)) {
        bad("echo: position");
        goto done;
    }
    Py_ssize_t pos = (Py_ssize_t)v[B_POS], tn = SHAPE(table, 1) - 1;
    int bypass = v[B_K + 2] == 0.0 && v[B_K] == 0.0;
    double c1[2], c2[2];
    for (int s = 0; s < 2; s++) {
        c1[s] = *AT2(fst, double, s, 0);
        c2[s] = *AT2(fst, double, s, 1);
    }
    double quiet = v[B_QUIET];
    int kstill = v[B_K + 2] == 0.0; /* the filter's knob is not gliding: one set of coefficients */
    Svf c;
    if (!bypass && kstill)
        svf_coeffs(table, tn, v[B_K], 0.0, &c);
    for (Py_ssize_t t = 0; t < frames; t++) {
        double in[2] = {0.0, 0.0};
        for (Py_ssize_t i = 0; i < rows; i++) {
            double sd = ramp_at(*AT2(sends, double, 0, i), *AT2(sends, double, 1, i),
                                *AT2(sends, double, 2, i), t);
            Buf *src = *AT2(sends, double, 3, i) != 0.0 ? xpre : x;
            for (int s = 0; s < 2; s++)
                in[s] = in[s] + (double)*AT3(src, float, i, s, t) * sd;
        }
        double d = glide_at(v[B_D], v[B_D + 1], v[B_D + 2], v[B_DLEN], t);
        if (!(d >= 1.0))
            d = 1.0;
        if (d > (double)(D - 2))
            d = (double)(D - 2);
        double rp = (double)pos - d;
        if (rp < 0.0)
            rp = rp + (double)D;
        double fl = floor(rp);
        double frac = rp - fl;
        Py_ssize_t i0 = (Py_ssize_t)fl;
        if (i0 >= D)
            i0 = D - 1;
        Py_ssize_t i1 = i0 + 1 == D ? 0 : i0 + 1;
        if (!bypass && !kstill)
            svf_coeffs(table, tn, ramp_at(v[B_K], v[B_K + 1], v[B_K + 2], t), 0.0, &c);
        double fb = ramp_at(v[B_FB], v[B_FB + 1], v[B_FB + 2], t);
        double ret = ramp_at(v[B_RET], v[B_RET + 1], v[B_RET + 2], t);
        int loud = fabs(in[0]) > 1e-6 || fabs(in[1]) > 1e-6;
        for (int s = 0; s < 2; s++) {
            double l0 = (double)*AT2(line, float, s, i0), l1 = (double)*AT2(line, float, s, i1);
            double r = l0 + frac * (l1 - l0);
            double y = bypass ? r : svf_tick(&c, r, &c1[s], &c2[s]);
            double w = in[s] + fb * y;
            if (!(w <= 4.0))
                w = w > 4.0 ? 4.0 : 0.0; /* NaN: 0 */
            if (w < -4.0)
                w = -4.0;
            *AT2(line, float, s, pos) = (float)w;
            float *m = AT2(mix, float, s, t);
            *m = *m + (float)(ret * y);
            if (fabs(y) > 1e-6)
                loud = 1;
        }
        quiet = loud ? 0.0 : quiet + 1.0;
        pos = pos + 1 == D ? 0 : pos + 1;
    }
    for (int s = 0; s < 2; s++) {
        *AT2(fst, double, s, 0) = bypass ? 0.0 : c1[s];
        *AT2(fst, double, s, 1) = bypass ? 0.0 : c2[s];
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double *l = AT2(sends, double, 2, i);
        double nl = *l - (double)frames;
        *l = nl > 0.0 ? nl : 0.0;
    }
    *AT1(bus, double, B_POS) = (double)pos;
    for (int j = B_D + 2; j <= B_K + 2; j += 3) {
        double nl = v[j] - (double)frames;
        *AT1(bus, double, j) = nl > 0.0 ? nl : 0.0;
    }
    *AT1(bus, double, B_QUIET) = quiet;
    result = Py_NewRef(Py_None);
done:
    release_all(b, 8);
    return result;
}

/* reverb(x, rows, frames, sends, bus, lens, lines, state, mix)
 *
 * The reverb bus, sample by sample, added to the master bus mix (2, >= frames).
 * A Freeverb (Jezar's public-domain design): per side eight damped combs in
 * parallel, then four allpasses in series; the right side's delays are longer
 * by the stereo spread. Sample t:
 *   in[t]   = sum over strips i < rows, in strip order, of
 *             (x_i[0][t] + x_i[1][t]) * send_i[t] (float64, mono), x float32
 *             (>= rows, 2, >= frames): the strips after their faders;
 *   u[t]    = in[t] through the low-cut (a TPT state-variable high-pass,
 *             Q 0.707, g = tan(pi lowcut / sr) gliding), times 0.015;
 *   comb    : o = line[p]; store = o * (1 - damp) + store * damp;
 *             line[p] = u + store * feedback;           (each comb's output o)
 *   sum     = the eight combs' outputs in comb order;
 *   allpass : b = line[p]; y = b - v; line[p] = v + b * 0.5; (v the input, y on)
 *   mix[t] += return[t] * y (the last allpass's output, per side).
 * Every line write is kept within +-1000 (a non-finite value is 0) and written 0
 * below 1e-30 (no denormals however long the bus runs on silence).
 * sends: float64 (3, n): each strip's send ramp (target, step, samples left, as
 * filter's); every strip's ramp moves on. bus: float64 (RV_SIZE,): the ramps
 * (target, step, left) of the feedback, the return and the low-cut's g, the
 * damping, and the samples the bus has been quiet (|in| and |y| under
 * -90 dBFS: the engine stops running it once that exceeds its decay).
 * lens: float64 (2, 12): each side's eight comb and four allpass lengths
 * (whole samples, >= 1), laid end to end in that side's row of lines float32
 * (2, D); state: float64 (2, 22): each side's twelve read/write positions
 * (0 <= p < its length), eight comb stores, and (side 0 only) the low-cut's
 * state (ic1, ic2) at [20], [21].
 */
enum { R_FB, R_RET = 3, R_G = 6, R_DAMP = 9, R_QUIET, R_SIZE };
#define RV_COMBS 8
#define RV_STAGES 12
#define RV_STATE 22
#define RV_QUIET 3.1622776601683795e-05 /* -90 dBFS */

static double
rv_keep(double w)
{
    if (!(w <= 1000.0))
        w = w > 1000.0 ? 1000.0 : 0.0; /* NaN: 0 */
    if (w < -1000.0)
        w = -1000.0;
    if (fabs(w) < 1e-30)
        w = 0.0;
    return w;
}

static PyObject *
reverb(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[7];
    Py_ssize_t rows, frames;
    Buf b[7];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OnnOOOOOO", &o[0], &rows, &frames, &o[1], &o[2], &o[3], &o[4],
                          &o[5], &o[6]))
        return NULL;
    if (get_buf(o[0], &b[0], "x", 'f', 0, 3) < 0 || get_buf(o[1], &b[1], "sends", 'd', 1, 2) < 0
        || get_buf(o[2], &b[2], "bus", 'd', 1, 1) < 0
        || get_buf(o[3], &b[3], "lens", 'd', 0, 2) < 0
        || get_buf(o[4], &b[4], "lines", 'f', 1, 2) < 0
        || get_buf(o[5], &b[5], "state", 'd', 1, 2) < 0
        || get_buf(o[6], &b[6], "mix", 'f', 1, 2) < 0)
        goto done;
    Buf *x = &b[0], *sends = &b[1], *bus = &b[2], *lens = &b[3], *lines = &b[4];
    Buf *st = &b[5], *mix = &b[6];
    Py_ssize_t n = SHAPE(sends, 1), D = SHAPE(lines, 1);
    if (frames < 1 || rows < 0 || rows > n || SHAPE(sends, 0) != 3 || SHAPE(x, 0) < rows
        || SHAPE(x, 1) != 2 || SHAPE(x, 2) < frames || SHAPE(bus, 0) != R_SIZE
        || SHAPE(lens, 0) != 2 || SHAPE(lens, 1) != RV_STAGES || SHAPE(lines, 0) != 2
        || SHAPE(st, 0) != 2 || SHAPE(st, 1) != RV_STATE || SHAPE(mix, 0) != 2
        || SHAPE(mix, 1) < frames) {
        bad("reverb");
        goto done;
    }
    /* Every length, offset and position checked: no index below leaves its line. */
    Py_ssize_t len[2][RV_STAGES], off[2][RV_STAGES], pos[2][RV_STAGES];
    for (int s = 0; s < 2; s++) {
        Py_ssize_t used = 0;
        for (int j = 0; j < RV_STAGES; j++) {
            double l = *AT2(lens, double, s, j), p = *AT2(st, double, s, j);
            if (!(l >= 1.0 && l <= (double)D && l == floor(l)) || !(p >= 0.0 && p < l)
                || p != floor(p)) {
                bad("reverb: lengths");
                goto done;
            }
            len[s][j] = (Py_ssize_t)l;
            if (!span_ok(used, len[s][j], D)) {
                bad("reverb: lengths");
                goto done;
            }
            off[s][j] = used;
            used = used + len[s][j];
            pos[s][j] = (Py_ssize_t)p;
        }
    }
    double v[R_SIZE];
    for (int j = 0; j < R_SIZE; j++)
        v[j] = *AT1(bus, double, j);
    double store[2][RV_COMBS];
    for (int s = 0; s < 2; s++)
        for (int j = 0; j < RV_COMBS; j++)
            store[s][j] = *AT2(st, double, s, RV_STAGES + j);
    double c1 = *AT2(st, double, 0, 20), c2 = *AT2(st, double, 0, 21);
    double damp = v[R_DAMP], undamp = 1.0 - damp, quiet = v[R_QUIET];
    const double kd = 1.4142135623730951;
    int gstill = v[R_G + 2] == 0.0; /* the low-cut is not gliding: one set of coefficients */
    double g = v[R_G], a1 = 1.0 / (1.0 + g * (g + kd)), a2 = g * a1, a3 = g * a2;
    for (Py_ssize_t t = 0; t < frames; t++) {
        double in = 0.0;
        for (Py_ssize_t i = 0; i < rows; i++) {
            double sd = ramp_at(*AT2(sends, double, 0, i), *AT2(sends, double, 1, i),
                                *AT2(sends, double, 2, i), t);
            double m = (double)*AT3(x, float, i, 0, t) + (double)*AT3(x, float, i, 1, t);
            in = in + m * sd;
        }
        if (!gstill) {
            g = ramp_at(v[R_G], v[R_G + 1], v[R_G + 2], t);
            a1 = 1.0 / (1.0 + g * (g + kd));
            a2 = g * a1;
            a3 = g * a2;
        }
        double v3 = in - c2;
        double v1 = a1 * c1 + a2 * v3;
        double v2 = (c2 + a2 * c1) + a3 * v3;
        c1 = rv_keep(2.0 * v1 - c1);
        c2 = rv_keep(2.0 * v2 - c2);
        double u = ((in - kd * v1) - v2) * 0.015;
        double fb = ramp_at(v[R_FB], v[R_FB + 1], v[R_FB + 2], t);
        double ret = ramp_at(v[R_RET], v[R_RET + 1], v[R_RET + 2], t);
        int loud = fabs(in) > RV_QUIET;
        for (int s = 0; s < 2; s++) {
            float *ln = AT2(lines, float, s, 0);
            const Py_ssize_t step = lines->st[1];
#define LINE(k) (*(float *)((char *)ln + (k) * step))
            double sum = 0.0;
            for (int j = 0; j < RV_COMBS; j++) {
                Py_ssize_t k = off[s][j] + pos[s][j];
                double out = (double)LINE(k);
                double fs = rv_keep(out * undamp + store[s][j] * damp);
                store[s][j] = fs;
                LINE(k) = (float)rv_keep(u + fs * fb);
                sum = sum + out;
                pos[s][j] = pos[s][j] + 1 == len[s][j] ? 0 : pos[s][j] + 1;
            }
            for (int j = RV_COMBS; j < RV_STAGES; j++) {
                Py_ssize_t k = off[s][j] + pos[s][j];
                double bo = (double)LINE(k);
                LINE(k) = (float)rv_keep(sum + bo * 0.5);
                sum = bo - sum;
                pos[s][j] = pos[s][j] + 1 == len[s][j] ? 0 : pos[s][j] + 1;
            }
#undef LINE
            float *mp = AT2(mix, float, s, t);
            *mp = *mp + (float)(ret * sum);
            if (fabs(sum) > RV_QUIET)
                loud = 1;
        }
        quiet = loud ? 0.0 : quiet + 1.0;
    }
    for (int s = 0; s < 2; s++) {
        for (int j = 0; j < RV_STAGES; j++)
            *AT2(st, double, s, j) = (double)pos[s][j];
        for (int j = 0; j < RV_COMBS; j++)
            *AT2(st, double, s, RV_STAGES + j) = store[s][j];
    }
    *AT2(st, double, 0, 20) = c1;
    *AT2(st, double, 0, 21) = c2;
    for (Py_ssize_t i = 0; i < n; i++) {
        double *l = AT2(sends, double, 2, i);
        double nl = *l - (double)frames;
        *l = nl > 0.0 ? nl : 0.0;
    }
    for (int j = R_FB + 2; j <= R_G + 2; j += 3) {
        double nl = v[j] - (double)frames;
        *AT1(bus, double, j) = nl > 0.0 ? nl : 0.0;
    }
    *AT1(bus, double, R_QUIET) = quiet;
    result = Py_NewRef(Py_None);
done:
    release_all(b, 7);
    return result;
}

/* mixdown(x, rows, frames, mix, prod, co)
 *
 * The FX path's strips into the master bus: mix (2, >= frames) = the sum of
 * rows 0..rows-1 of x (float32 (>= rows, 2, >= frames)) in strip order; each row
 * also into row 1 + i of prod (the strips' meters) and, given co (>= rows, 2, B),
 * into co (the per-strip outputs). rows 0: mix is silence.
 */
static PyObject *
mixdown(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_x, *o_mix, *o_prod, *o_co;
    Py_ssize_t rows, frames;
    Buf b[4];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OnnOOO", &o_x, &rows, &frames, &o_mix, &o_prod, &o_co))
        return NULL;
    if (get_buf(o_x, &b[0], "x", 'f', 0, 3) < 0 || get_buf(o_mix, &b[1], "mix", 'f', 1, 2) < 0
        || get_buf(o_prod, &b[2], "prod", 'f', 1, 3) < 0
        || (o_co != Py_None && get_buf(o_co, &b[3], "co", 'f', 1, 3) < 0))
        goto done;
    if (frames < 1 || rows < 0 || SHAPE(&b[0], 0) < rows || SHAPE(&b[0], 1) != 2
        || SHAPE(&b[0], 2) < frames || SHAPE(&b[1], 0) != 2 || SHAPE(&b[1], 1) < frames
        || !span_ok(1, rows, SHAPE(&b[2], 0)) || SHAPE(&b[2], 1) != 2
        || SHAPE(&b[2], 2) < frames
        || (b[3].held
            && (SHAPE(&b[3], 0) < rows || SHAPE(&b[3], 1) != 2 || SHAPE(&b[3], 2) < frames))) {
        bad("mixdown");
        goto done;
    }
    for (Py_ssize_t s = 0; s < 2; s++)
        for (Py_ssize_t t = 0; t < frames; t++) {
            float acc = rows > 0 ? *AT3(&b[0], float, 0, s, t) : 0.0f;
            for (Py_ssize_t i = 1; i < rows; i++)
                acc = acc + *AT3(&b[0], float, i, s, t);
            *AT2(&b[1], float, s, t) = acc;
            for (Py_ssize_t i = 0; i < rows; i++) {
                float v = *AT3(&b[0], float, i, s, t);
                *AT3(&b[2], float, 1 + i, s, t) = v;
                if (b[3].held)
                    *AT3(&b[3], float, i, s, t) = v;
            }
        }
    result = Py_NewRef(Py_None);
done:
    release_all(b, 4);
    return result;
}

/* read(src, state, count, end, dst, table) -> int
 *
 * The read head between rates: up to ``count`` frames of a track read at a
 * fractional position that steps by ``step`` track frames per output frame,
 * each interpolated by a windowed sinc (band-limited: no aliasing into the
 * passband, see core/mixer/kernel.py for the figures), into dst.
 *   src: float32 (n, a, length), a = 1 or 2; samples outside 0..length-1 are 0;
 *   state: float64 (6,): pos (the integer frame), phase (0 <= phase < 1), step,
 *     and the step's glide: target, inc (the change a frame), frames left. After
 *     each frame: phase += step, its integer part moves pos; then, while frames
 *     are left, left -= 1 and step = target - inc * left (target at 0). The
 *     step, the target and target - inc * left (the glide's far end: the step
 *     the glide started from) each in (0, READ_MAX_STEP] (the far end give or
 *     take a rounding). Written back after the call;
 *   end: no frame is read once pos >= end (the loop end or the track's end);
 *   dst: float32 (>= n, >= a, >= count), row (i, s) of src into dst[i, s, :];
 *   table: float64 (READ_HALF * READ_RES + 2,): the kernel h(w) at w = i / READ_RES
 *     (sinc times a Kaiser window that ends at w = READ_HALF).
 * Returns the frames read (0 if pos >= end at once).
 *
 * The cutoff, in track frames, is fc = READ_CUT, or READ_CUT / step when the
 * step exceeds 1 (reading faster than the output: the filter narrows so nothing
 * aliases). Each frame at x = pos + phase takes the taps k with
 * w = |k - phase| * fc < READ_HALF: v_k = lerp of the table at w * READ_RES, the
 * coefficients v_k / (sum of v_k in k order); each row's sample is then
 * the sum, in k order in float64, of coefficient times sample (taps outside the
 * track add nothing), cast to float32. The numpy reference (kernel.py) does the
 * same operations in the same order.
 */
#define READ_HALF 16
#define READ_RES 512
#define READ_CUT 0.96
#define READ_MAX_STEP 32.0
/* 2 * ceil(READ_HALF * READ_MAX_STEP / READ_CUT) + 4: the taps of the fastest read */
#define READ_MAX_TAPS 1072

/* Row ``row`` of a (n, a, length) buffer, a = 1 or 2: the byte offset of its
 * frame 0 (no division: row / a and row % a in the block's inner loops cost
 * more than the arithmetic). */
static inline Py_ssize_t
rd_row(const Buf *b, Py_ssize_t a, Py_ssize_t row)
{
    return a == 2 ? (row >> 1) * b->st[0] + (row & 1) * b->st[1] : row * b->st[0];
}

#define RD_AT(b, base, k) ((float *)((char *)(b)->view.buf + (base) + (k) * (b)->st[2]))

/* A frame's taps: the coefficients v_k / (sum of v_k in k order) for k = lo..hi
 * into coef[0 .. hi - lo], as the comment above says. */
static void
rd_taps(double ph, double fc, const Buf *tab, double *coef, Py_ssize_t *plo, Py_ssize_t *phi)
{
    double reach = (double)READ_HALF / fc;
    /* k runs over lo..hi, a range one wider than the support each side;
     * the test w < READ_HALF decides. */
    Py_ssize_t lo = (Py_ssize_t)floor(ph - reach), hi = (Py_ssize_t)ceil(ph + reach);
    if (hi - lo + 1 > READ_MAX_TAPS)
        hi = lo + READ_MAX_TAPS - 1; /* never: step <= READ_MAX_STEP */
    double sum = 0.0;
    for (Py_ssize_t k = lo; k <= hi; k++) {
        double w = fabs((double)k - ph) * fc;
        double v = 0.0;
        if (w < (double)READ_HALF) {
            double u = w * (double)READ_RES;
            Py_ssize_t ii = (Py_ssize_t)u;
            double fr = u - (double)ii;
            double t0 = *AT1(tab, double, ii), t1 = *AT1(tab, double, ii + 1);
            v = t0 + fr * (t1 - t0);
        }
        coef[k - lo] = v;
        sum = sum + v;
    }
    for (Py_ssize_t k = lo; k <= hi; k++)
        coef[k - lo] = coef[k - lo] / sum;
    *plo = lo;
    *phi = hi;
}

/* Rows from..rows-1 of one frame: each row's sum of cf[k] times its sample at
 * ip + k, k = klo..khi, in k order in float64, four rows at a time (four
 * independent chains in registers: one row's chain alone waits on every add),
 * into dst[., ., out]. */
static void
rd_rows(const Buf *src, Py_ssize_t a, Py_ssize_t from, Py_ssize_t rows, Py_ssize_t ip,
        const double *cf, Py_ssize_t klo, Py_ssize_t khi, Buf *dst, Py_ssize_t out)
{
    const Py_ssize_t sk = src->st[2];
    Py_ssize_t row = from;
    for (; row + 4 <= rows; row += 4) {
        const char *p0 = (const char *)RD_AT(src, rd_row(src, a, row), ip);
        const char *p1 = (const char *)RD_AT(src, rd_row(src, a, row + 1), ip);
        const char *p2 = (const char *)RD_AT(src, rd_row(src, a, row + 2), ip);
        const char *p3 = (const char *)RD_AT(src, rd_row(src, a, row + 3), ip);
        double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
        for (Py_ssize_t k = klo; k <= khi; k++) {
            double c = cf[k];
            Py_ssize_t byte = k * sk;
            a0 = a0 + c * (double)*(const float *)(p0 + byte);
            a1 = a1 + c * (double)*(const float *)(p1 + byte);
            a2 = a2 + c * (double)*(const float *)(p2 + byte);
            a3 = a3 + c * (double)*(const float *)(p3 + byte);
        }
        *RD_AT(dst, rd_row(dst, a, row), out) = (float)a0;
        *RD_AT(dst, rd_row(dst, a, row + 1), out) = (float)a1;
        *RD_AT(dst, rd_row(dst, a, row + 2), out) = (float)a2;
        *RD_AT(dst, rd_row(dst, a, row + 3), out) = (float)a3;
    }
    for (; row < rows; row++) {
        const char *p0 = (const char *)RD_AT(src, rd_row(src, a, row), ip);
        double a0 = 0.0;
        for (Py_ssize_t k = klo; k <= khi; k++)
            a0 = a0 + cf[k] * (double)*(const float *)(p0 + k * sk);
        *RD_AT(dst, rd_row(dst, a, row), out) = (float)a0;
    }
}

/* Four rows and more (a track of many channels) are read a piece of frames at
 * a time: the piece's taps are made once, then each group of 16, 8 or 4 rows'
 * span of the track is copied as float64, sample by sample with the group's
 * rows side by side (rd_span[j * G + r]), and every frame's sums run over the
 * group at once in vectors of two rows; the rows left over (fewer than 4) go
 * as rd_rows, and so do all rows of a frame whose taps alone span more than
 * RD_SPAN (a step above about 15). Each row's sum is still its own chain, in k order, so the
 * samples are the same bits as one row at a time. Module-global buffers: every
 * call holds the GIL from start to end, so no two calls use them at once, and
 * nothing is allocated in a block. */
#define RD_GROUP 16
#define RD_SPAN 512     /* track frames a piece's span holds */
#define RD_COEFS 8192   /* a piece's taps, all its frames */
#define RD_FRAMES 512   /* a piece's frames */
static double rd_coef[RD_COEFS];
static Py_ssize_t rd_ip[RD_FRAMES], rd_klo[RD_FRAMES], rd_khi[RD_FRAMES], rd_off[RD_FRAMES];
#if defined(__GNUC__) /* GCC and clang: vectors of two doubles (MSVC: rd_rows only) */
typedef double rd_v2 __attribute__((vector_size(16)));
static double rd_span[RD_SPAN * RD_GROUP] __attribute__((aligned(16)));

/* One group of G rows (G = 4, 8 or 16: a constant where it is inlined, so the
 * accumulators are registers) over the piece's n frames, the span starting at
 * track frame s0, s1 past its end. */
static inline __attribute__((always_inline)) void
rd_group(const int G, const Buf *src, Py_ssize_t a, Py_ssize_t row0, Py_ssize_t s0,
         Py_ssize_t s1, Py_ssize_t n, Buf *dst, Py_ssize_t out)
{
    const Py_ssize_t sk = src->st[2];
    Py_ssize_t to[RD_GROUP];
    for (int r = 0; r < G; r++) {
        to[r] = rd_row(dst, a, row0 + r);
        const char *p = (const char *)RD_AT(src, rd_row(src, a, row0 + r), s0);
        for (Py_ssize_t j = 0; j < s1 - s0; j++)
            rd_span[j * G + r] = (double)*(const float *)(p + j * sk);
    }
    const rd_v2 zero = {0.0, 0.0};
    for (Py_ssize_t f = 0; f < n; f++) {
        const double *cf = rd_coef + rd_off[f];
        const double *x = rd_span + (rd_ip[f] - s0) * G;
        rd_v2 c0 = zero, c1 = zero, c2 = zero, c3 = zero, c4 = zero, c5 = zero, c6 = zero,
              c7 = zero;
        for (Py_ssize_t k = rd_klo[f]; k <= rd_khi[f]; k++) {
            double c = cf[k];
            const rd_v2 *xk = (const rd_v2 *)(x + k * G);
            c0 = c0 + c * xk[0];
            c1 = c1 + c * xk[1];
            if (G >= 8) {
                c2 = c2 + c * xk[2];
                c3 = c3 + c * xk[3];
            }
            if (G >= 16) {
                c4 = c4 + c * xk[4];
                c5 = c5 + c * xk[5];
                c6 = c6 + c * xk[6];
                c7 = c7 + c * xk[7];
            }
        }
        rd_v2 acc[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
        for (int i = 0; i < G; i++)
            *RD_AT(dst, to[i], out + f) = (float)acc[i / 2][i % 2];
    }
}

#endif /* __GNUC__ */

static PyObject *
read_head(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_src, *o_state, *o_dst, *o_table;
    Py_ssize_t count, end;
    Buf b[4];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOnnOO", &o_src, &o_state, &count, &end, &o_dst, &o_table))
        return NULL;
    if (get_buf(o_src, &b[0], "src", 'f', 0, 3) < 0
        || get_buf(o_state, &b[1], "state", 'd', 1, 1) < 0
        || get_buf(o_dst, &b[2], "dst", 'f', 1, 3) < 0
        || get_buf(o_table, &b[3], "table", 'd', 0, 1) < 0)
        goto done;
    Buf *src = &b[0], *st = &b[1], *dst = &b[2], *tab = &b[3];
    Py_ssize_t n = SHAPE(src, 0), a = SHAPE(src, 1), length = SHAPE(src, 2);
    if (count < 1 || (a != 1 && a != 2) || SHAPE(st, 0) != 6 || SHAPE(dst, 0) < n
        || SHAPE(dst, 1) < a || SHAPE(dst, 2) < count
        || SHAPE(tab, 0) != READ_HALF * READ_RES + 2 || end < 0 || end > length) {
        bad("read");
        goto done;
    }
    double pos = *AT1(st, double, 0), ph = *AT1(st, double, 1), step = *AT1(st, double, 2);
    double tgt = *AT1(st, double, 3), inc = *AT1(st, double, 4), left = *AT1(st, double, 5);
    /* Every value checked so no index below can leave its buffer, whatever the
     * state holds (NaN fails every comparison). */
    if (!(pos >= 0.0 && pos <= 9007199254740992.0 && pos == floor(pos)) || !(ph >= 0.0 && ph < 1.0)
        || !(step > 0.0 && step <= READ_MAX_STEP) || !(tgt > 0.0 && tgt <= READ_MAX_STEP)
        || !(left >= 0.0 && left <= 1e9 && left == floor(left))
        || !(fabs(inc) * left <= READ_MAX_STEP)
        /* the glide's every step lies between tgt and tgt - inc * left (linear in
         * the frames left), the step it started from but for rounding (hence the
         * slack, far below a tap's worth) */
        || !(tgt - inc * left > 0.0 && tgt - inc * left <= READ_MAX_STEP * (1.0 + 1e-9))) {
        bad("read: state");
        goto done;
    }
    Py_ssize_t rows = n * a, produced = 0;
    /* Fewer than 4 rows go one frame at a time (rd_rows): no group to fill. */
#if defined(__GNUC__)
    int grouped = rows >= 4;
#else
    int grouped = 0; /* no vector extensions (MSVC): a row at a time, the same bits */
#endif
    while (produced < count && pos < (double)end) {
        /* A piece: the frames' taps, positions and span, the state moved on. */
        Py_ssize_t nf = 0, used = 0, s0 = 0, s1 = 0;
        while (produced + nf < count && pos < (double)end && nf < RD_FRAMES) {
            double fc = step > 1.0 ? READ_CUT / step : READ_CUT;
            Py_ssize_t lo, hi;
            if (used + READ_MAX_TAPS > RD_COEFS)
                break;
            rd_taps(ph, fc, tab, rd_coef + used, &lo, &hi);
            Py_ssize_t ip = (Py_ssize_t)pos;
            /* Only the taps inside the track: the rest read 0. */
            Py_ssize_t klo = ip + lo < 0 ? -ip : lo;
            Py_ssize_t khi = hi;
            if (ip + hi > length - 1)
                khi = length - 1 - ip;
            Py_ssize_t a0 = ip + klo, a1 = ip + khi + 1; /* the track frames it reads */
            Py_ssize_t n0 = nf > 0 && s0 < a0 ? s0 : a0, n1 = nf > 0 && s1 > a1 ? s1 : a1;
            if (nf > 0 && n1 - n0 > RD_SPAN)
                break; /* the next piece starts with this frame (its taps made again) */
            s0 = n0;
            s1 = n1;
            rd_ip[nf] = ip;
            rd_klo[nf] = klo;
            rd_khi[nf] = khi;
            rd_off[nf] = used - lo;
            used += hi - lo + 1;
            nf++;
            ph = ph + step;
            double fl = floor(ph);
            pos = pos + fl;
            ph = ph - fl;
            if (left > 0.0) {
                left = left - 1.0;
                step = left > 0.0 ? tgt - inc * left : tgt;
            }
            if (!grouped || s1 - s0 > RD_SPAN)
                break; /* one frame at a time; or one frame wider than a span */
        }
        Py_ssize_t row = 0;
#if defined(__GNUC__)
        if (grouped && s1 - s0 <= RD_SPAN) {
            for (; row + 16 <= rows; row += 16)
                rd_group(16, src, a, row, s0, s1, nf, dst, produced);
            for (; row + 8 <= rows; row += 8)
                rd_group(8, src, a, row, s0, s1, nf, dst, produced);
            for (; row + 4 <= rows; row += 4)
                rd_group(4, src, a, row, s0, s1, nf, dst, produced);
        }
#endif
        for (Py_ssize_t f = 0; f < nf; f++)
            rd_rows(src, a, row, rows, rd_ip[f], rd_coef + rd_off[f], rd_klo[f], rd_khi[f], dst,
                    produced + f);
        produced += nf;
    }
    *AT1(st, double, 0) = pos;
    *AT1(st, double, 1) = ph;
    *AT1(st, double, 2) = step;
    *AT1(st, double, 5) = left;
    result = PyLong_FromSsize_t(produced);
done:
    release_all(b, 4);
    return result;
}

/* shift(io, frames, tables, state, ring_in, ring_out, work, mix) -> True
 *
 * Keylock and pitch shift: one spectral pitch shifter of the stereo master,
 * whatever the number of strips (core/mixer/keylock.py drives it). A phase
 * vocoder that moves each spectral peak with its region (Laroche and Dolson,
 * "New phase-vocoder techniques for pitch-shifting, harmonizing and other
 * exotic effects", 1999, with identity phase locking): every ``hop`` samples
 * the last N inputs, Hann-windowed and centred (the frame's middle at time 0,
 * so the bins of one peak's main lobe share its phase), go through one complex
 * FFT (left + i right), peaks are the local maxima of |L| + |R| over +-2 bins
 * (above 1e-5 of the largest) and, up to 1.1 kHz, the partials their main lobes
 * hide (sh_move), each peak's region (the bins nearer its frequency than the
 * next peak's) moves by a whole number of bins to the bin of alpha times the peak's
 * true frequency (from its phase advance since the last frame, on the louder
 * side), and its bins turn by one rotation: the peak's phase one hop on from the
 * phase its new bin had in the last output frame (the phase of the largest
 * share it took), at the new frequency. Both
 * sides take the same move and rotation (the stereo image is kept). One inverse
 * FFT, the Hann window again, overlap-add. A frame's work is spread over half a
 * hop (below: the analysis, the moves, the synthesis, each at its own sample), so
 * no block carries all of it: a fixed latency of N + hop / 2 samples.
 *   io: float32 (>= frames, 2), the block, in place: dry * (1 - g) + wet * g;
 *   tables: float64 (2, N): [0] the Hann window, [1][0..N/2) cos(2 pi k / N),
 *     [1][N/2..N) sin(2 pi k / N); N a power of two, 16..16384;
 *   state: float64 (SH_SIZE,): alpha (the transpose factor for the next frame,
 *     0.25..4), g (the wet gain), its target (0 or 1), its step a sample, the
 *     samples to wait before g moves towards 1 (the shifter fills first), the
 *     samples since the last frame, the ring position, the hop, the overlap-add
 *     scale, a reset flag (non-zero: rings, phases and positions cleared first),
 *     the last bin where hidden partials are looked for (0..N/2: 1.1 kHz), the
 *     slot of the last frame's moves in work (0..SH_SLOTS - 1, for ``retro``);
 *   ring_in: float32 (2, N); ring_out: float64 (2, N) (overlap-add); work:
 *     float64 (SH_ROWS, N).
 *   mix: float32 (2, >= frames) or None: the result copied there too.
 * A non-finite result sample is written 0. Returns True.
 */
enum { SH_ALPHA, SH_G, SH_GTGT, SH_GSTEP, SH_WAIT, SH_COUNT, SH_POS, SH_HOP, SH_SCALE,
       SH_RESET, SH_HIDDEN, SH_SLOT, SH_SIZE };
/* The work rows: the FFT's buffer, |L| + |R|, this frame's L and R, the last
 * frame's (for the phase advance at a peak), the moved L and R, each output bin's
 * value in the last output frame and in this one (its phase: the largest share's),
 * the peaks, the largest share taken by each output bin, each input bin's own
 * frequency (in bins; NaN past the hidden partials' bins) and at [N/2 + 1] the
 * last frame's transpose factor; then ``retro``'s FFT buffer and moved L and R,
 * and the moves of the last SH_SLOTS frames (each SH_MAP rows: for every input
 * bin, side by side, its move in whole bins, NaN for a bin that went nowhere, the
 * share of it that goes one bin further, and its region's rotation, cos and sin;
 * side by side, as a row each they cost sh_move 9 % more: each row's k-th store
 * falls a multiple of 4 KiB from the k-th loads of the others, which stalls). */
#define SH_SLOTS 6
#define SH_MAP 4
enum { W_RE, W_IM, W_MAG, W_XLR, W_XLI, W_XRR, W_XRI, W_PLR, W_PLI, W_PRR, W_PRI, W_YLR,
       W_YLI, W_YRR, W_YRI, W_SYR, W_SYI, W_SZR, W_SZI, W_PEAK, W_WT, W_FREQ, W_RTR, W_RTI,
       W_DLR, W_DLI, W_DRR, W_DRI, W_MAPS, SH_ROWS = W_MAPS + SH_SLOTS * SH_MAP };
#define SH_PI 3.14159265358979323846

static double
princarg(double p)
{
    return p - 2.0 * SH_PI * floor((p + SH_PI) / (2.0 * SH_PI));
}

/* In-place complex FFT of size n (a power of two), e^{-i} (forward). */
static void
sh_fft(double *re, double *im, Py_ssize_t n, const double *cs, const double *sn)
{
    for (Py_ssize_t i = 1, j = 0; i < n; i++) {
        Py_ssize_t bit = n >> 1;
        for (; j & bit; bit >>= 1)
            j ^= bit;
        j ^= bit;
        if (i < j) {
            double t = re[i];
            re[i] = re[j];
            re[j] = t;
            t = im[i];
            im[i] = im[j];
            im[j] = t;
        }
    }
    /* The first two passes at once (twiddles 1 and -i: no product), then each
     * twiddle read once a pass (n a power of two, at least 4): 20 % less time for
     * 1024 points than a pass at a time with every twiddle read per butterfly. */
    for (Py_ssize_t i = 0; i < n; i += 4) {
        double ar = re[i] + re[i + 1], ai = im[i] + im[i + 1];
        double br = re[i] - re[i + 1], bi = im[i] - im[i + 1];
        double cr = re[i + 2] + re[i + 3], ci = im[i + 2] + im[i + 3];
        double dr = re[i + 2] - re[i + 3], di = im[i + 2] - im[i + 3];
        re[i] = ar + cr;
        im[i] = ai + ci;
        re[i + 2] = ar - cr;
        im[i + 2] = ai - ci;
        re[i + 1] = br + di; /* + d times -i */
        im[i + 1] = bi - dr;
        re[i + 3] = br - di;
        im[i + 3] = bi + dr;
    }
    for (Py_ssize_t len = 8; len <= n; len <<= 1) {
        Py_ssize_t half = len >> 1, stride = n / len;
        for (Py_ssize_t k = 0; k < half; k++) {
            double wr = cs[k * stride], wi = -sn[k * stride];
            for (Py_ssize_t a = k; a < n; a += len) {
                Py_ssize_t b = a + half;
                double xr = re[b] * wr - im[b] * wi, xi = re[b] * wi + im[b] * wr;
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] = re[a] + xr;
                im[a] = im[a] + xi;
            }
        }
    }
}

/* A frame's work comes in three stages, each in its own block at 64 frames (the
 * hop is 256): the analysis (sh_analyse) when the frame's last input is in,
 * a quarter hop later the peaks and their moves (sh_move), half a hop later the
 * synthesis (sh_synth) overlap-added from the current position: the latency is
 * N + hop / 2. */

/* Bin k of the L and R spectra from the FFT of L + i R (re, im; N points):
 * x = {L re, L im, R re, R im}. */
static inline void
sh_split(const double *re, const double *im, Py_ssize_t N, Py_ssize_t k, double x[4])
{
    Py_ssize_t j = (N - k) & (N - 1);
    double ar = re[k], ai = im[k], br = re[j], bi = -im[j];
    x[0] = 0.5 * (ar + br);
    x[1] = 0.5 * (ai + bi);
    x[2] = 0.5 * (ai - bi);
    x[3] = -0.5 * (ar - br);
}

/* |L| + |R| at a bin: what the peaks are chosen on. */
static inline double
sh_mag(double lr, double li, double rr, double ri)
{
    return sqrt(lr * lr + li * li) + sqrt(rr * rr + ri * ri);
}

/* Z = YL + i YR into re, im (Hermitian halves of N points), for the inverse as
 * conj(FFT(conj(Z))) / N. */
static void
sh_pack(Py_ssize_t N, const double *ylr, const double *yli, const double *yrr,
        const double *yri, double *re, double *im)
{
    Py_ssize_t half = N / 2;
    re[0] = ylr[0];
    im[0] = -yrr[0];
    re[half] = ylr[half];
    im[half] = -yrr[half];
    for (Py_ssize_t k = 1; k < half; k++) {
        re[k] = ylr[k] - yri[k];
        im[k] = -(yli[k] + yrr[k]);
        re[N - k] = ylr[k] + yri[k];
        im[N - k] = -(-yli[k] + yrr[k]);
    }
}

/* The last N inputs (pos is the oldest), windowed and centred, through the FFT:
 * L and R and |L| + |R|. */
static void
sh_analyse(Py_ssize_t N, Py_ssize_t pos, const float *in0, const float *in1,
           const double *win, const double *cs, const double *sn, double *w)
{
    double *re = w + W_RE * N, *im = w + W_IM * N, *mag = w + W_MAG * N;
    double *xlr = w + W_XLR * N, *xli = w + W_XLI * N, *xrr = w + W_XRR * N;
    double *xri = w + W_XRI * N;
    Py_ssize_t half = N / 2, M = half + 1;
    for (Py_ssize_t n = 0; n < N; n++) {
        Py_ssize_t s = (pos + n) & (N - 1), d = (n + half) & (N - 1);
        re[d] = (double)in0[s] * win[n];
        im[d] = (double)in1[s] * win[n];
    }
    sh_fft(re, im, N, cs, sn);
    for (Py_ssize_t k = 0; k < M; k++) {
        double x[4];
        sh_split(re, im, N, k, x);
        xlr[k] = x[0];
        xli[k] = x[1];
        xrr[k] = x[2];
        xri[k] = x[3];
        mag[k] = sh_mag(x[0], x[1], x[2], x[3]);
    }
}

/* Between peaks at bins a < b: bin k goes with b, its own frequency nearer b's
 * (halfway between them where a frequency is unknown: silence in either frame, or
 * past the hidden partials' bins, where no bin's frequency is read). */
static int
sh_nearer(const double *fq, Py_ssize_t k, Py_ssize_t a, Py_ssize_t b)
{
    double da = fabs(fq[k] - fq[a]), db = fabs(fq[k] - fq[b]);
    if (isnan(da) || isnan(db))
        return 2 * k > a + b;
    return db < da;
}

/* The peaks, each region moved and turned (into YL, YR), the next frame's last
 * L, R and output phases, and the spectrum to invert in the FFT's buffer.
 *
 * Each bin's own frequency (its phase advance since the last frame, both sides'
 * summed) says which partial it belongs to. A peak is a maximum over +-2 bins,
 * or, up to the state's last hidden bin (1.1 kHz at any rate), a
 * partial that the main lobe of a louder one two or three bins away hides (a
 * bass note's harmonics, a close-voiced chord): a bin whose own frequency lies
 * within 0.75 bin of it and within half a bin of a neighbour's (a partial's lobe
 * spans bins of one frequency; an impulse's or noise's bins each have their
 * own). Moved with the louder one's region, by its shift in Hz, such a partial
 * went out of tune by up to 44 cents for 440 Hz beside a louder 300 Hz at rates
 * 0.92-1.08 (now 0). Above 1.1 kHz, or with a looser test, the extra peaks cost
 * more (the regions' phase locking lost) than they keep (``bench/stretch.py``
 * items 5 and 6). Two neighbouring bins of one frequency are one peak: the
 * maximum, else the louder. Between two peaks, a bin goes with the one whose
 * frequency is nearer its own (up to the hidden bins; above, halfway between). */
static void
sh_move(Py_ssize_t N, Py_ssize_t hop, double alpha, Py_ssize_t hidden_to, Py_ssize_t slot,
        double *w)
{
    double *re = w + W_RE * N, *im = w + W_IM * N, *mag = w + W_MAG * N;
    double *xlr = w + W_XLR * N, *xli = w + W_XLI * N, *xrr = w + W_XRR * N;
    double *xri = w + W_XRI * N, *plr = w + W_PLR * N, *pli = w + W_PLI * N;
    double *prr = w + W_PRR * N, *pri = w + W_PRI * N, *ylr = w + W_YLR * N;
    double *yli = w + W_YLI * N, *yrr = w + W_YRR * N, *yri = w + W_YRI * N;
    double *syr = w + W_SYR * N, *syi = w + W_SYI * N, *szr = w + W_SZR * N;
    double *szi = w + W_SZI * N, *pk = w + W_PEAK * N, *wt = w + W_WT * N;
    double *map = w + (W_MAPS + slot * SH_MAP) * N; /* this frame's moves, for retro */
    Py_ssize_t half = N / 2, M = half + 1;
    double top = 0.0;
    for (Py_ssize_t k = 0; k < M; k++) {
        map[4 * k] = NAN;
        if (mag[k] > top)
            top = mag[k];
        ylr[k] = yli[k] = yrr[k] = yri[k] = wt[k] = 0.0;
        szr[k] = syr[k];
        szi[k] = syi[k];
    }
    /* Each bin's own frequency up to just past the last hidden bin, the only ones
     * read (an atan2 each: for every bin they cost 25 % more of the shifter; above,
     * a region ends halfway to the next peak, sh_nearer). */
    double bin = 2.0 * SH_PI / (double)N, *fq = w + W_FREQ * N;
    for (Py_ssize_t k = 0; k < M; k++) {
        if (k > hidden_to + 2) {
            fq[k] = NAN;
            continue;
        }
        double ar = xlr[k] * plr[k] + xli[k] * pli[k] + xrr[k] * prr[k] + xri[k] * pri[k];
        double ai = xli[k] * plr[k] - xlr[k] * pli[k] + xri[k] * prr[k] - xrr[k] * pri[k];
        fq[k] = ar == 0.0 && ai == 0.0 ? NAN /* silent in either frame: no frequency */
                : (double)k + princarg(atan2(ai, ar) - bin * (double)k * (double)hop)
                                  / (bin * (double)hop);
    }
    /* While the rate moves (the factor differs from the last frame's by over 0.1 %:
     * the mixer's glide, not a follower's nudge) every partial sweeps and a bin's
     * own frequency is the sweep's: no hidden partials. fq[M] keeps the factor. */
    Py_ssize_t peaks = 0, hidden = fabs(alpha - fq[M]) <= 1e-3 * alpha ? hidden_to : -1;
    fq[M] = alpha;
    double floor_ = top * 1e-5, last = 0.0;
    int last_max = 0;
    for (Py_ssize_t k = 0; k < M; k++) {
        double m = mag[k];
        if (m <= floor_)
            continue;
        int max_ = !((k >= 1 && !(m > mag[k - 1])) || (k >= 2 && !(m > mag[k - 2]))
                     || (k + 1 < M && !(m >= mag[k + 1])) || (k + 2 < M && !(m >= mag[k + 2])));
        if (!max_ && !(k <= hidden && fabs(fq[k] - (double)k) < 0.75
                       && ((k >= 1 && fabs(fq[k - 1] - fq[k]) < 0.5)
                           || (k + 1 < M && fabs(fq[k + 1] - fq[k]) < 0.5))))
            continue;
        if (peaks > 0 && pk[peaks - 1] == (double)(k - 1) && fabs(fq[k] - last) < 0.5) {
            if (max_ || (!last_max && m > mag[k - 1])) { /* one partial: its maximum */
                pk[peaks - 1] = (double)k;
                last = fq[k];
                last_max = max_;
            }
            continue;
        }
        last = fq[k];
        last_max = max_;
        pk[peaks++] = (double)k;
    }
    for (Py_ssize_t p = 0; p < peaks; p++) {
        Py_ssize_t kp = (Py_ssize_t)pk[p], lo = 0, hi = M - 1;
        if (p > 0) { /* from the first bin that goes with it rather than the last peak */
            Py_ssize_t ka = (Py_ssize_t)pk[p - 1];
            for (lo = ka + 1; lo < kp && !sh_nearer(fq, lo, ka, kp); lo++)
                ;
        }
        if (p + 1 < peaks) { /* to the last before the first that goes with the next */
            Py_ssize_t kb = (Py_ssize_t)pk[p + 1];
            for (hi = kp + 1; hi < kb && !sh_nearer(fq, hi, kp, kb); hi++)
                ;
            hi--;
        }
        int left = xlr[kp] * xlr[kp] + xli[kp] * xli[kp] >= xrr[kp] * xrr[kp] + xri[kp] * xri[kp];
        double xr = left ? xlr[kp] : xrr[kp], xi = left ? xli[kp] : xri[kp];
        double qr = left ? plr[kp] : prr[kp], qi = left ? pli[kp] : pri[kp];
        double ph = atan2(xi, xr);
        /* The phase advance since the last frame: the angle of X conj(X_last). */
        double adv = atan2(xi * qr - xr * qi, xr * qr + xi * qi);
        double omega = bin * (double)kp + princarg(adv - bin * (double)kp * (double)hop)
                                              / (double)hop;
        double wout = alpha * omega;
        /* The region moves by (wout - omega) / bin bins: whole bins, and the
         * fraction left by sharing each bin between its two new neighbours (the
         * frame is centred: a main lobe's bins share one phase, so the shared
         * lobe is one again, at the new frequency). */
        double mv = (wout - omega) / bin, fl = floor(mv), fr = mv - fl;
        double kf = (double)kp + floor(mv + 0.5);
        if (!(kf >= 0.0 && kf <= (double)(M - 1)) || !(fabs(mv) <= (double)M))
            continue;
        Py_ssize_t kk = (Py_ssize_t)kf, shift = (Py_ssize_t)fl;
        double phout = princarg(atan2(syi[kk], syr[kk]) + wout * (double)hop);
        double rot = phout - ph, cr = cos(rot), ci = sin(rot);
        for (Py_ssize_t k = lo; k <= hi; k++) {
            map[4 * k] = (double)shift;
            map[4 * k + 1] = fr;
            map[4 * k + 2] = cr;
            map[4 * k + 3] = ci;
            double a = xlr[k] * cr - xli[k] * ci, b = xlr[k] * ci + xli[k] * cr;
            double c = xrr[k] * cr - xri[k] * ci, d = xrr[k] * ci + xri[k] * cr;
            double mk = left ? sqrt(a * a + b * b) : sqrt(c * c + d * d);
            for (int side = 0; side < 2; side++) {
                Py_ssize_t k2 = k + shift + side;
                double share = side ? fr : 1.0 - fr;
                if (k2 < 0 || k2 >= M || share == 0.0)
                    continue;
                ylr[k2] += a * share;
                yli[k2] += b * share;
                yrr[k2] += c * share;
                yri[k2] += d * share;
                if (mk * share > wt[k2]) { /* the bin's phase: its largest share's */
                    wt[k2] = mk * share;
                    szr[k2] = left ? a : c;
                    szi[k2] = left ? b : d;
                }
            }
        }
    }
    memcpy(plr, xlr, (size_t)M * sizeof(double));
    memcpy(pli, xli, (size_t)M * sizeof(double));
    memcpy(prr, xrr, (size_t)M * sizeof(double));
    memcpy(pri, xri, (size_t)M * sizeof(double));
    memcpy(syr, szr, (size_t)M * sizeof(double));
    memcpy(syi, szi, (size_t)M * sizeof(double));
    sh_pack(N, ylr, yli, yrr, yri, re, im);
}

/* The inverse FFT, the Hann window again, overlap-added from pos on. */
static void
sh_synth(Py_ssize_t N, double scale, Py_ssize_t pos, double *out0, double *out1,
         const double *win, const double *cs, const double *sn, double *w)
{
    double *re = w + W_RE * N, *im = w + W_IM * N;
    Py_ssize_t half = N / 2;
    sh_fft(re, im, N, cs, sn);
    double g = scale / (double)N;
    for (Py_ssize_t n = 0; n < N; n++) {
        Py_ssize_t s = (n + half) & (N - 1), d = (pos + n) & (N - 1);
        out0[d] += re[s] * win[n] * g;
        out1[d] += -im[s] * win[n] * g;
    }
}

static PyObject *
shift(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[7];
    Py_ssize_t frames;
    Buf b[7];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OnOOOOOO", &o[0], &frames, &o[1], &o[2], &o[3], &o[4], &o[5],
                          &o[6]))
        return NULL;
    if (get_buf(o[0], &b[0], "io", 'f', 1, 2) < 0
        || get_buf(o[1], &b[1], "tables", 'd', 0, 2) < 0
        || get_buf(o[2], &b[2], "state", 'd', 1, 1) < 0
        || get_buf(o[3], &b[3], "ring_in", 'f', 1, 2) < 0
        || get_buf(o[4], &b[4], "ring_out", 'd', 1, 2) < 0
        || get_buf(o[5], &b[5], "work", 'd', 1, 2) < 0
        || (o[6] != Py_None && get_buf(o[6], &b[6], "mix", 'f', 1, 2) < 0))
        goto done;
    Buf *io = &b[0], *tab = &b[1], *st = &b[2], *rin = &b[3], *rout = &b[4], *wk = &b[5];
    Buf *mix = b[6].held ? &b[6] : NULL;
    Py_ssize_t N = SHAPE(tab, 1);
    /* Every table and ring one contiguous row each: the frame works on plain arrays. */
    if (frames < 0 || SHAPE(io, 0) < frames || SHAPE(io, 1) != 2 || SHAPE(tab, 0) != 2
        || N < 16 || N > 16384 || (N & (N - 1)) != 0 || SHAPE(st, 0) != SH_SIZE
        || SHAPE(rin, 0) != 2 || SHAPE(rin, 1) != N || SHAPE(rout, 0) != 2
        || SHAPE(rout, 1) != N || SHAPE(wk, 0) != SH_ROWS || SHAPE(wk, 1) != N
        || tab->st[1] != 8 || rin->st[1] != 4 || rout->st[1] != 8 || wk->st[1] != 8
        || wk->st[0] != 8 * N || (mix && (SHAPE(mix, 0) != 2 || SHAPE(mix, 1) < frames))) {
        bad("shift");
        goto done;
    }
    double v[SH_SIZE];
    for (int j = 0; j < SH_SIZE; j++)
        v[j] = *AT1(st, double, j);
    if (!(v[SH_ALPHA] >= 0.25 && v[SH_ALPHA] <= 4.0) || !(v[SH_G] >= 0.0 && v[SH_G] <= 1.0)
        || !(v[SH_GTGT] == 0.0 || v[SH_GTGT] == 1.0) || !(v[SH_GSTEP] > 0.0 && v[SH_GSTEP] <= 1.0)
        || !(v[SH_WAIT] >= 0.0 && v[SH_WAIT] <= 1e9) || !(v[SH_HOP] >= 1.0 && v[SH_HOP] <= (double)N)
        || v[SH_HOP] != floor(v[SH_HOP]) || !(v[SH_COUNT] >= 0.0 && v[SH_COUNT] < v[SH_HOP])
        || v[SH_COUNT] != floor(v[SH_COUNT]) || !(v[SH_POS] >= 0.0 && v[SH_POS] < (double)N)
        || v[SH_POS] != floor(v[SH_POS]) || !(fabs(v[SH_SCALE]) <= 1e6)
        || !(v[SH_HIDDEN] >= 0.0 && v[SH_HIDDEN] <= (double)(N / 2))
        || v[SH_HIDDEN] != floor(v[SH_HIDDEN]) || !(v[SH_SLOT] >= 0.0 && v[SH_SLOT] < SH_SLOTS)
        || v[SH_SLOT] != floor(v[SH_SLOT])) {
        bad("shift: state");
        goto done;
    }
    float *in0 = AT2(rin, float, 0, 0), *in1 = AT2(rin, float, 1, 0);
    double *out0 = AT2(rout, double, 0, 0), *out1 = AT2(rout, double, 1, 0);
    double *w = AT2(wk, double, 0, 0);
    const double *win = AT2(tab, double, 0, 0), *cs = AT2(tab, double, 1, 0);
    const double *sn = cs + N / 2;
    if (v[SH_RESET] != 0.0) {
        memset(in0, 0, (size_t)N * sizeof(float));
        memset(in1, 0, (size_t)N * sizeof(float));
        memset(out0, 0, (size_t)N * sizeof(double));
        memset(out1, 0, (size_t)N * sizeof(double));
        memset(w, 0, (size_t)(SH_ROWS * N) * sizeof(double));
        v[SH_COUNT] = v[SH_POS] = v[SH_RESET] = v[SH_SLOT] = 0.0;
    }
    Py_ssize_t hop = (Py_ssize_t)v[SH_HOP], count = (Py_ssize_t)v[SH_COUNT];
    Py_ssize_t pos = (Py_ssize_t)v[SH_POS], slot = (Py_ssize_t)v[SH_SLOT];
    double g = v[SH_G], gt = v[SH_GTGT], gs = v[SH_GSTEP], wait = v[SH_WAIT];
    for (Py_ssize_t t = 0; t < frames; t++) {
        float *p0 = AT2(io, float, t, 0), *p1 = AT2(io, float, t, 1);
        float d0 = *p0, d1 = *p1;
        in0[pos] = d0;
        in1[pos] = d1;
        double w0 = out0[pos], w1 = out1[pos];
        out0[pos] = out1[pos] = 0.0;
        pos = (pos + 1) & (N - 1);
        if (++count == hop)
            count = 0;
        if (count == 0)
            sh_analyse(N, pos, in0, in1, win, cs, sn, w);
        if (count == hop / 4) {
            slot = slot + 1 == SH_SLOTS ? 0 : slot + 1;
            sh_move(N, hop, v[SH_ALPHA], (Py_ssize_t)v[SH_HIDDEN], slot, w);
        }
        if (count == hop / 2)
            sh_synth(N, v[SH_SCALE], pos, out0, out1, win, cs, sn, w);
        if (gt == 0.0) {
            g = g - gs > 0.0 ? g - gs : 0.0;
        } else if (wait > 0.0) {
            wait = wait - 1.0;
        } else {
            g = g + gs < 1.0 ? g + gs : 1.0;
        }
        double r0 = g == 1.0 ? w0 : (double)d0 * (1.0 - g) + w0 * g;
        double r1 = g == 1.0 ? w1 : (double)d1 * (1.0 - g) + w1 * g;
        float f0 = isfinite(r0) ? (float)r0 : 0.0f, f1 = isfinite(r1) ? (float)r1 : 0.0f;
        *p0 = f0;
        *p1 = f1;
        if (mix) {
            *AT2(mix, float, 0, t) = f0;
            *AT2(mix, float, 1, t) = f1;
        }
    }
    *AT1(st, double, SH_G) = g;
    *AT1(st, double, SH_WAIT) = wait;
    *AT1(st, double, SH_COUNT) = (double)count;
    *AT1(st, double, SH_POS) = (double)pos;
    *AT1(st, double, SH_SLOT) = (double)slot;
    *AT1(st, double, SH_RESET) = 0.0;
    result = Py_NewRef(Py_True);
done:
    release_all(b, 7);
    return result;
}

/* retro(delta, ramp, tables, state, ring_in, ring_out, work) -> True
 *
 * A control heard at once through the shifter (core/mixer/keylock.py's
 * ``Shifter.retro``): the shifter's last inputs change by ``delta`` as if they
 * had always been so (a strip's new gain applied to what it already sent), and
 * so does everything made of them that is not heard yet: the input ring, the
 * frame analysed and not yet moved (its spectrum), the frame moved and not yet
 * synthesised (its moved spectrum) and the frames overlap-added in the output
 * ring, whose change comes in over ``ramp`` samples from the next one heard.
 * A frame's change is the FFT of delta over the frame's inputs, moved as the
 * frame's own spectrum was (its regions' whole-bin moves, shares and rotations,
 * kept by sh_move: the move of a spectrum is linear in it once its peaks are
 * chosen), then synthesised as sh_synth does. The next frame's phase advances
 * are measured against the last moved frame as it was (correcting it too made no
 * difference that could be measured on the levels of the tones left). What
 * the moves of a frame did not place (a sound unmuted where the mix had no peak
 * of its own) goes with the region it falls in, by that region's move: heard for
 * the frames made before the change, then placed by its own peaks.
 *   delta: float32 (2, L), L >= 2 N + hop: the change of the last L inputs,
 *     the oldest first (the last is the input just before the next block's);
 *   ramp: samples (1..1e9) over which the output ring's change comes in;
 *   the rest as ``shift``'s. Returns True.
 */
static PyObject *
retro(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[6];
    Py_ssize_t ramp;
    Buf b[6];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OnOOOOO", &o[0], &ramp, &o[1], &o[2], &o[3], &o[4], &o[5]))
        return NULL;
    if (get_buf(o[0], &b[0], "delta", 'f', 0, 2) < 0
        || get_buf(o[1], &b[1], "tables", 'd', 0, 2) < 0
        || get_buf(o[2], &b[2], "state", 'd', 0, 1) < 0
        || get_buf(o[3], &b[3], "ring_in", 'f', 1, 2) < 0
        || get_buf(o[4], &b[4], "ring_out", 'd', 1, 2) < 0
        || get_buf(o[5], &b[5], "work", 'd', 1, 2) < 0)
        goto done;
    Buf *dl = &b[0], *tab = &b[1], *st = &b[2], *rin = &b[3], *rout = &b[4], *wk = &b[5];
    Py_ssize_t N = SHAPE(tab, 1), L = SHAPE(dl, 1);
    if (SHAPE(tab, 0) != 2 || N < 16 || N > 16384 || (N & (N - 1)) != 0
        || SHAPE(st, 0) != SH_SIZE || SHAPE(rin, 0) != 2 || SHAPE(rin, 1) != N
        || SHAPE(rout, 0) != 2 || SHAPE(rout, 1) != N || SHAPE(wk, 0) != SH_ROWS
        || SHAPE(wk, 1) != N || tab->st[1] != 8 || rin->st[1] != 4 || rout->st[1] != 8
        || wk->st[1] != 8 || wk->st[0] != 8 * N || SHAPE(dl, 0) != 2 || dl->st[1] != 4
        || ramp < 1 || ramp > 1000000000) {
        bad("retro");
        goto done;
    }
    double v[SH_SIZE];
    for (int j = 0; j < SH_SIZE; j++)
        v[j] = *AT1(st, double, j);
    Py_ssize_t hop = N / 4;
    if (v[SH_HOP] != (double)hop || !(v[SH_COUNT] >= 0.0 && v[SH_COUNT] < (double)hop)
        || v[SH_COUNT] != floor(v[SH_COUNT]) || !(v[SH_POS] >= 0.0 && v[SH_POS] < (double)N)
        || v[SH_POS] != floor(v[SH_POS]) || !(fabs(v[SH_SCALE]) <= 1e6)
        || !(v[SH_SLOT] >= 0.0 && v[SH_SLOT] < SH_SLOTS) || v[SH_SLOT] != floor(v[SH_SLOT])
        || v[SH_RESET] != 0.0 || L < 2 * N + hop) {
        bad("retro: state");
        goto done;
    }
    Py_ssize_t c = (Py_ssize_t)v[SH_COUNT], pos = (Py_ssize_t)v[SH_POS];
    Py_ssize_t slot = (Py_ssize_t)v[SH_SLOT], half = N / 2, M = half + 1;
    const float *d0 = AT2(dl, float, 0, 0), *d1 = AT2(dl, float, 1, 0);
    float *in0 = AT2(rin, float, 0, 0), *in1 = AT2(rin, float, 1, 0);
    double *out0 = AT2(rout, double, 0, 0), *out1 = AT2(rout, double, 1, 0);
    double *w = AT2(wk, double, 0, 0);
    const double *win = AT2(tab, double, 0, 0), *cs = AT2(tab, double, 1, 0);
    const double *sn = cs + N / 2;
    double *re = w + W_RTR * N, *im = w + W_RTI * N;
    double *ylr = w + W_DLR * N, *yli = w + W_DLI * N, *yrr = w + W_DRR * N, *yri = w + W_DRI * N;
    double g = v[SH_SCALE] / (double)N;
    int moved0 = c >= hop / 4, synth0 = c >= hop / 2;
    /* Frame j (0: the last analysed) took the inputs from c + j hop + N back to
     * c + j hop + 1 back; a synthesised one has been heard for e of its N samples. */
    for (Py_ssize_t j = 0; j * hop <= N; j++) {
        Py_ssize_t first = L - c - j * hop - N, e = c + j * hop - hop / 2;
        int synthesised = j > 0 || synth0;
        /* A frame whose rest is heard within the ramp is left as it is: its window
         * takes it out by the ramp's end (the change comes in less evenly, never
         * later), and the block saves its two FFTs (with the mixer's 10 ms ramp,
         * the two oldest). */
        if (synthesised && N - e <= ramp)
            break;
        for (Py_ssize_t n = 0; n < N; n++) {
            Py_ssize_t d = (n + half) & (N - 1);
            re[d] = (double)d0[first + n] * win[n];
            im[d] = (double)d1[first + n] * win[n];
        }
        sh_fft(re, im, N, cs, sn);
        if (j == 0 && !moved0) { /* analysed only: its spectrum, which sh_move will read */
            double *xlr = w + W_XLR * N, *xli = w + W_XLI * N, *xrr = w + W_XRR * N;
            double *xri = w + W_XRI * N, *mag = w + W_MAG * N;
            for (Py_ssize_t k = 0; k < M; k++) {
                double x[4];
                sh_split(re, im, N, k, x);
                xlr[k] += x[0];
                xli[k] += x[1];
                xrr[k] += x[2];
                xri[k] += x[3];
                mag[k] = sh_mag(xlr[k], xli[k], xrr[k], xri[k]);
            }
            continue;
        }
        /* The frame's moves: the last moved frame's slot, one back a frame. */
        Py_ssize_t s = (slot - (moved0 ? j : j - 1)) % SH_SLOTS;
        const double *map = w + (W_MAPS + (s < 0 ? s + SH_SLOTS : s) * SH_MAP) * N;
        for (Py_ssize_t k = 0; k < M; k++)
            ylr[k] = yli[k] = yrr[k] = yri[k] = 0.0;
        for (Py_ssize_t k = 0; k < M; k++) {
            double x[4];
            sh_split(re, im, N, k, x);
            double xlr = x[0], xli = x[1], xrr = x[2], xri = x[3];
            double mv = map[4 * k]; /* NaN: the bin went nowhere (a caller's work: any) */
            if (!(fabs(mv) <= (double)M))
                continue;
            double fr = map[4 * k + 1], cr = map[4 * k + 2], ci = map[4 * k + 3];
            double a = xlr * cr - xli * ci, bb = xlr * ci + xli * cr;
            double cc = xrr * cr - xri * ci, dd = xrr * ci + xri * cr;
            for (int side = 0; side < 2; side++) {
                Py_ssize_t k2 = k + (Py_ssize_t)mv + side;
                double share = side ? fr : 1.0 - fr;
                if (k2 < 0 || k2 >= M || share == 0.0)
                    continue;
                ylr[k2] += a * share;
                yli[k2] += bb * share;
                yrr[k2] += cc * share;
                yri[k2] += dd * share;
            }
        }
        sh_pack(N, ylr, yli, yrr, yri, re, im);
        if (!synthesised) { /* moved only: into the spectrum sh_synth will invert */
            double *zr = w + W_RE * N, *zi = w + W_IM * N;
            for (Py_ssize_t k = 0; k < N; k++) {
                zr[k] += re[k];
                zi[k] += im[k];
            }
            continue;
        }
        sh_fft(re, im, N, cs, sn);
        double step = 1.0 / (double)ramp;
        for (Py_ssize_t n = e > 0 ? e : 0; n < N; n++) {
            Py_ssize_t r = n - e, src = (n + half) & (N - 1), d = (pos + r) & (N - 1);
            double k = r + 1 >= ramp ? 1.0 : (double)(r + 1) * step;
            out0[d] += re[src] * win[n] * g * k;
            out1[d] += -im[src] * win[n] * g * k;
        }
    }
    /* The input ring (pos is its oldest sample): the frames to come are made of it. */
    for (Py_ssize_t n = 0; n < N; n++) {
        Py_ssize_t d = (pos + n) & (N - 1);
        in0[d] += d0[L - N + n];
        in1[d] += d1[L - N + n];
    }
    result = Py_NewRef(Py_True);
done:
    release_all(b, 6);
    return result;
}

/* keep(src, pos, prod, rows, frames, pre, post, at) -> None
 *
 * A steady block's strips into keylock's strip history (core/mixer/history.py's
 * ``StripHistory.write``): each of ``rows`` strips' ``frames`` samples before
 * its gain (``src`` rows from ``pos``, as ``block`` read them, a mono row on
 * both sides) and after (rows
 * 1.. of ``prod``, as ``block`` wrote them), into the rings ``pre`` and
 * ``post`` (float32 (L, n, 2), rows <= n, frames <= L) from sample ``at``
 * (0..L - 1), round to their start. The rings are time-major, so a block's
 * samples are one stretch of each: kept strip-major (a row a strip, 9 KiB
 * apart), the writes of 64 strips missed the cache enough to raise the engine's
 * p99 at 64 frames by 9 % of the block; numpy's copies cost 30 us a block more.
 */
static PyObject *
keep(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[4];
    Py_ssize_t pos, rows, frames, at;
    Buf b[4];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OnOnnOOn", &o[0], &pos, &o[1], &rows, &frames, &o[2], &o[3],
                          &at))
        return NULL;
    if (get_buf(o[0], &b[0], "src", 'f', 0, 3) < 0 || get_buf(o[1], &b[1], "prod", 'f', 0, 3) < 0
        || get_buf(o[2], &b[2], "pre", 'f', 1, 3) < 0 || get_buf(o[3], &b[3], "post", 'f', 1, 3) < 0)
        goto done;
    Buf *src = &b[0], *prod = &b[1], *pre = &b[2], *post = &b[3];
    Py_ssize_t L = SHAPE(pre, 0), n = SHAPE(pre, 1);
    if (SHAPE(pre, 2) != 2 || SHAPE(post, 0) != L || SHAPE(post, 1) != n || SHAPE(post, 2) != 2
        || rows < 0 || rows > n || rows > SHAPE(src, 0) || rows >= SHAPE(prod, 0)
        || SHAPE(src, 1) < 1 || SHAPE(src, 1) > 2 || SHAPE(prod, 1) != 2 || frames < 0 || frames > L
        || frames > SHAPE(prod, 2) || !span_ok(pos, frames, SHAPE(src, 2)) || at < 0 || at >= L) {
        bad("keep");
        goto done;
    }
    if (pre->st[2] == 4 && pre->st[1] == 8 && pre->st[0] == 8 * n && post->st[2] == 4
        && post->st[1] == 8 && post->st[0] == 8 * n && src->st[2] == 4 && prod->st[2] == 4) {
        /* The mixer's buffers: a sample of every strip at a time, written side by side
         * (10 us a 64-frame block at 64 strips; a strip at a time, 23 us). */
        const char *a = (const char *)AT3(src, float, 0, 0, pos);
        const char *p = (const char *)AT3(prod, float, 1, 0, 0);
        /* A mono channel goes to both sides (as the mix takes it). */
        Py_ssize_t as0 = src->st[0], as1 = SHAPE(src, 1) == 2 ? src->st[1] : 0;
        Py_ssize_t ps0 = prod->st[0], ps1 = prod->st[1];
        for (Py_ssize_t t = 0, r = at; t < frames; t++, r = r + 1 == L ? 0 : r + 1) {
            float *pr = AT3(pre, float, r, 0, 0), *po = AT3(post, float, r, 0, 0);
            for (Py_ssize_t i = 0; i < rows; i++) {
                pr[2 * i] = *(const float *)(a + i * as0 + 4 * t);
                pr[2 * i + 1] = *(const float *)(a + i * as0 + as1 + 4 * t);
                po[2 * i] = *(const float *)(p + i * ps0 + 4 * t);
                po[2 * i + 1] = *(const float *)(p + i * ps0 + ps1 + 4 * t);
            }
        }
    } else {
        for (Py_ssize_t t = 0, r = at; t < frames; t++, r = r + 1 == L ? 0 : r + 1)
            for (Py_ssize_t i = 0; i < rows; i++)
                for (int side = 0; side < 2; side++) {
                    Py_ssize_t from = SHAPE(src, 1) == 2 ? side : 0;
                    *AT3(pre, float, r, i, side) = *AT3(src, float, i, from, pos + t);
                    *AT3(post, float, r, i, side) = *AT3(prod, float, i + 1, side, t);
                }
    }
    result = Py_NewRef(Py_None);
done:
    release_all(b, 4);
    return result;
}

/* retro_delta(pre, post, at, want, changed, gain, delta) -> True
 *
 * What a change of strip gains makes of a shifter's last inputs (``retro``'s
 * delta): for each (strip, side) with ``changed`` non-zero, its signal before
 * its gain at the gain it wants now, less what it sent, times the master gain,
 * summed into ``delta`` (written); and what it sent becomes that (``post``
 * written), so a second change before those samples leave the rings is made
 * against the first. The rings (``keep``'s) are read from sample ``at`` (the
 * oldest) round to it:
 *   pre, post: float32 (L, n, 2); at: 0..L - 1; want, changed: float64 (n, 2),
 *   a wanted gain finite; gain: the master's (finite); delta: float32 (2, L),
 *   contiguous rows.
 * float32 throughout, as the mix is made.
 */
static PyObject *
retro_delta(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[5];
    Py_ssize_t at;
    double gain;
    Buf b[5];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOnOOdO", &o[0], &o[1], &at, &o[2], &o[3], &gain, &o[4]))
        return NULL;
    if (get_buf(o[0], &b[0], "pre", 'f', 0, 3) < 0 || get_buf(o[1], &b[1], "post", 'f', 1, 3) < 0
        || get_buf(o[2], &b[2], "want", 'd', 0, 2) < 0
        || get_buf(o[3], &b[3], "changed", 'd', 0, 2) < 0
        || get_buf(o[4], &b[4], "delta", 'f', 1, 2) < 0)
        goto done;
    Buf *pre = &b[0], *post = &b[1], *want = &b[2], *chg = &b[3], *dl = &b[4];
    Py_ssize_t L = SHAPE(pre, 0), n = SHAPE(pre, 1);
    if (SHAPE(pre, 2) != 2 || SHAPE(post, 0) != L || SHAPE(post, 1) != n || SHAPE(post, 2) != 2
        || SHAPE(want, 0) != n || SHAPE(want, 1) != 2 || SHAPE(chg, 0) != n
        || SHAPE(chg, 1) != 2 || SHAPE(dl, 0) != 2 || SHAPE(dl, 1) != L || dl->st[1] != 4
        || L < 1 || at < 0 || at >= L || !isfinite(gain)) {
        bad("retro_delta");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        for (int side = 0; side < 2; side++)
            if (*AT2(chg, double, i, side) != 0.0 && !isfinite(*AT2(want, double, i, side))) {
                bad("retro_delta: want");
                goto done;
            }
    float *d0 = AT2(dl, float, 0, 0), *d1 = AT2(dl, float, 1, 0), fg = (float)gain;
    for (Py_ssize_t t = 0; t < L; t++)
        d0[t] = d1[t] = 0.0f;
    /* The changed (strip, side)s a batch at a time (no allocation), each batch
     * over the rings in time order (a block's strips are side by side there),
     * the two sides apart and each summed on two chains: 20-30 us for a strip,
     * 0.4-0.5 ms for a solo that changes 64 (one chain through a pair's side took
     * 1.2 ms; the rings of 64 strips are 1.2 MB each, read from memory). */
    enum { BATCH = 64 };
    Py_ssize_t ks[2][BATCH];
    float ws[2][BATCH];
    int flat = pre->st[2] == 4 && pre->st[1] == 8 && pre->st[0] == 8 * n && post->st[2] == 4
               && post->st[1] == 8 && post->st[0] == 8 * n;
    for (Py_ssize_t from = 0; from < 2 * n;) {
        int count[2] = {0, 0};
        for (; from < 2 * n && count[0] < BATCH && count[1] < BATCH; from++) {
            Py_ssize_t i = from / 2;
            int side = (int)(from % 2);
            if (*AT2(chg, double, i, side) != 0.0) {
                ks[side][count[side]] = i;
                ws[side][count[side]++] = (float)*AT2(want, double, i, side);
            }
        }
        for (int side = 0; side < 2; side++) {
            int m = count[side];
            float *d = side ? d1 : d0;
            /* Bases and strides in locals: the extension is built without strict
             * aliasing, so each store through q would reload them (5x slower). */
            const Py_ssize_t *kk = ks[side];
            const float *ww = ws[side];
            const float *pb = AT3(pre, float, 0, 0, side);
            float *qb = AT3(post, float, 0, 0, side);
            Py_ssize_t row = 2 * n;
            for (Py_ssize_t t = 0, r = at; t < L && m; t++, r = r + 1 == L ? 0 : r + 1) {
                float s0 = 0.0f, s1 = 0.0f;
                if (flat) {
                    const float *p = pb + r * row;
                    float *q = qb + r * row;
                    int c = 0;
                    for (; c + 1 < m; c += 2) {
                        Py_ssize_t a = 2 * kk[c], b = 2 * kk[c + 1];
                        float x = ww[c] * p[a], y = ww[c + 1] * p[b];
                        float qa = q[a], qbv = q[b];
                        q[a] = x;
                        q[b] = y;
                        s0 += x - qa;
                        s1 += y - qbv;
                    }
                    if (c < m) {
                        Py_ssize_t a = 2 * kk[c];
                        float x = ww[c] * p[a];
                        s0 += x - q[a];
                        q[a] = x;
                    }
                } else {
                    for (int c = 0; c < m; c++) {
                        float x = ws[side][c] * *AT3(pre, float, r, ks[side][c], side);
                        float *q = AT3(post, float, r, ks[side][c], side);
                        s0 += x - *q;
                        *q = x;
                    }
                }
                d[t] += s0 + s1;
            }
        }
    }
    for (Py_ssize_t t = 0; t < L; t++) {
        d0[t] *= fg;
        d1[t] *= fg;
    }
    result = Py_NewRef(Py_True);
done:
    release_all(b, 5);
    return result;
}

/* zero(buf): fill a float32 buffer of 1 to 3 dimensions, any strides, with 0. */
static PyObject *
zero(PyObject *self, PyObject *obj)
{
    (void)self;
    Buf b;
    memset(&b, 0, sizeof b);
    if (get_buf_nd(obj, &b, "zero", 'f', 1, 1, 3) < 0) {
        release(&b);
        return NULL;
    }
    zero3(&b, PY_SSIZE_T_MAX);
    release(&b);
    Py_RETURN_NONE;
}

/* fold(env, period, out) -> None
 *
 * The beat analysis's fold (core/beats/analysis.py ``_fold``, its numpy
 * reference, bit for bit): the mean of ``env`` (float64 (n,)) by phase of
 * ``period`` frames (finite, > 0) in B = len(out) phase bins (1..FOLD_MAX_BINS),
 * into ``out`` float64 (B,). Frame i's phase is pos = fmod(i / period, 1) * B
 * (numpy's remainder of a positive number); it goes to bin lo = (int)pos % B
 * with weight 1 - frac and to (lo + 1) % B with weight frac, frac = pos -
 * floor(pos); each bin's weighted sums of env and of the weights are made in
 * frame order, the two bins' shares apart, then added: out = sums / max(counts,
 * 1e-9). In the kernel because the tempo search folds a whole track's envelope
 * 642 times (numpy's passes and bincounts took 0.55 s of a 3-minute track's
 * analysis); it holds the GIL like every call here. The same bits for a
 * finite envelope (with NaNs of both signs the one kept may differ).
 */
#define FOLD_MAX_BINS 256

static PyObject *
fold(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o_env, *o_out;
    double period;
    Buf b[2];
    memset(b, 0, sizeof b);
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OdO", &o_env, &period, &o_out))
        return NULL;
    if (get_buf(o_env, &b[0], "env", 'd', 0, 1) < 0 || get_buf(o_out, &b[1], "out", 'd', 1, 1) < 0)
        goto done;
    Py_ssize_t n = SHAPE(&b[0], 0), bins = SHAPE(&b[1], 0);
    if (bins < 1 || bins > FOLD_MAX_BINS || !(period > 0.0 && period <= 1e300)) {
        bad("fold");
        goto done;
    }
    double s_lo[FOLD_MAX_BINS], s_hi[FOLD_MAX_BINS], c_lo[FOLD_MAX_BINS], c_hi[FOLD_MAX_BINS];
    for (Py_ssize_t k = 0; k < bins; k++)
        s_lo[k] = s_hi[k] = c_lo[k] = c_hi[k] = 0.0;
    double nb = (double)bins;
    /* For 0 <= x < 2^63 the integer conversion is floor(x) exactly, and x -
     * floor(x) is fmod(x, 1) exactly (the fraction of x is a multiple of its
     * last bit): the same bits without a library call. Refused unless every
     * i / period stays below 2^52 (the caller then takes the numpy reference);
     * pos < B, or = B by rounding. */
    if (!((double)n / period < 4503599627370496.0)) {
        bad("fold: period");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double a = (double)i / period;
        double pos = (a - (double)(long long)a) * nb;
        Py_ssize_t lo = (Py_ssize_t)pos;
        double frac = pos - (double)lo, rest = 1.0 - frac;
        if (lo >= bins)
            lo -= bins;
        Py_ssize_t hi = lo + 1 == bins ? 0 : lo + 1;
        double e = *AT1(&b[0], double, i);
        s_lo[lo] += e * rest;
        s_hi[hi] += e * frac;
        c_lo[lo] += rest;
        c_hi[hi] += frac;
    }
    for (Py_ssize_t k = 0; k < bins; k++) {
        double sums = s_lo[k] + s_hi[k], counts = c_lo[k] + c_hi[k];
        *AT1(&b[1], double, k) = sums / (counts > 1e-9 || counts != counts ? counts : 1e-9);
    }
    result = Py_NewRef(Py_None);
done:
    release_all(b, 2);
    return result;
}

static PyMethodDef methods[] = {
    {"ramp_curves", ramp_curves, METH_VARARGS, "Strip gain ramps of a block (see _kernel.c)."},
    {"segment", segment, METH_VARARGS, "A track's strips into the mix (see _kernel.c)."},
    {"finish", finish, METH_VARARGS, "Master gain, meters and output (see _kernel.c)."},
    {"block", block, METH_VARARGS, "A steady block in one call (see _kernel.c)."},
    {"filter", filter, METH_VARARGS, "The DJ filter of strips, in place (see _kernel.c)."},
    {"echo", echo, METH_VARARGS, "The echo bus into the mix (see _kernel.c)."},
    {"reverb", reverb, METH_VARARGS, "The reverb bus into the mix (see _kernel.c)."},
    {"mixdown", mixdown, METH_VARARGS, "The FX path's strips into the mix (see _kernel.c)."},
    {"read", read_head, METH_VARARGS, "The read head between rates (see _kernel.c)."},
    {"shift", shift, METH_VARARGS, "Keylock: the master's pitch shifter (see _kernel.c)."},
    {"keep", keep, METH_VARARGS, "A steady block's strips into keylock's history (see _kernel.c)."},
    {"retro", retro, METH_VARARGS, "A control heard at once through the shifter (see _kernel.c)."},
    {"retro_delta", retro_delta, METH_VARARGS, "Strips' gain change on a shifter's inputs (see _kernel.c)."},
    {"fold", fold, METH_VARARGS, "The beat analysis's fold of an envelope (see _kernel.c)."},
    {"zero", zero, METH_O, "Fill a float32 buffer with zeros."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_kernel",
    .m_doc = "The mixer's block arithmetic, compiled, holding the GIL (see _kernel.c).",
    .m_size = -1,
    .m_methods = methods,
};

/* Bumped with every change of a signature or a meaning: core/mixer/engine.py
 * runs numpy rather than a stale build (an editable install not rebuilt). */
#define KERNEL_ABI 11

PyMODINIT_FUNC
PyInit__kernel(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", KERNEL_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
