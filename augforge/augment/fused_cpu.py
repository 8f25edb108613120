"""One fused CPU kernel for the tail of an image recipe, run inside the DALI pipeline.

On the CPU, DALI's ``resize`` and its per-pixel ``coord_transform`` are the slow steps of the usual
training recipe (random resized crop -> flip -> colour jitter -> normalize): each is a separate pass over
the image, and neither is vectorized well. This module does the whole tail in one pass, as a numba
kernel that DALI runs on its own worker threads through its ``numba_function`` operator (no Python, no
GIL, per image):

1. linear resampling to the output size, sampled at pixel centres with the edges clamped, exactly as
   DALI's ``resize`` (``antialias``: on downscaling, the triangle filter widens with the scale, as DALI's
   does);
2. horizontal and vertical flips;
3. an affine colour map ``M x + T`` (colour jitter), clamped to 0..255;
4. a per-channel ``x * S + U`` (normalize), and the store as uint8 (rounded) or float32, HWC.

Each image's parameters come in one float32 vector (``PARAMS`` entries, laid out as ``PARAM_LAYOUT``
says), drawn per sample by the DALI graph that ``fused_pass`` builds. The kernel and DALI's C entry
points are compiled once and cached on disk by numba; only the tiny shape function is compiled per
output size.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import carray, cfunc, njit
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic
from nvidia.dali.pipeline import do_not_convert

from augforge.augment.colour import colour_map, normalize_affine

#: flags in the per-image parameter vector (1.0: on)
HFLIP, VFLIP, ANTIALIAS = 18, 19, 20
#: layout of the per-image parameter vector: colour matrix M (row-major) and offset T, normalize scale S and
#: shift U (per channel), and the flags
PARAM_LAYOUT = {"M": slice(0, 9), "T": slice(9, 12), "S": slice(12, 15), "U": slice(15, 18), "hflip": HFLIP,
                "vflip": VFLIP, "antialias": ANTIALIAS}
PARAMS = 21


def identity_params() -> np.ndarray:
    """The parameter vector that leaves the pixels as they are (but for resampling)."""
    prm = np.zeros(PARAMS, dtype=np.float32)
    prm[PARAM_LAYOUT["M"]] = np.eye(3, dtype=np.float32).ravel()
    prm[PARAM_LAYOUT["S"]] = 1.0
    return prm


@intrinsic
def _as_pointer(typingctx, address):
    """An integer address as a void pointer (for ``carray``)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return nbtypes.voidptr(address), codegen


@njit(cache=True, nogil=True)
def taps(n_in, n_out, antialias, reverse):
    """Each output pixel's taps along one axis: (first, weights), with first (n_out,) uint64 and weights
    (n_out, K) float32 for the K consecutive source pixels first, first + 1, ... Edge pixels stand in for
    taps outside the image (their weights are folded in), so every output reads exactly K pixels in
    range. ``reverse`` flips the axis."""
    scale = n_in / n_out
    support = scale if (antialias and scale > 1.0) else 1.0  # triangle radius, in input pixels
    span = 1  # the most taps an output pixel has
    for o in range(n_out):
        centre = (o + 0.5) * scale - 0.5
        span = max(span, int(np.ceil(centre + support)) - int(np.floor(centre - support)) - 1)
    k = min(span, n_in)
    first = np.zeros(n_out, np.uint64)
    weight = np.zeros((n_out, k), np.float32)
    for o in range(n_out):
        centre = (o + 0.5) * scale - 0.5
        low = int(np.floor(centre - support)) + 1
        total = 0.0
        for j in range(span):
            total += max(1.0 - abs(low + j - centre) / support, 0.0)
        start = min(max(low, 0), n_in - k)
        dest = n_out - 1 - o if reverse else o
        first[dest] = start
        for j in range(span):
            v = 1.0 - abs(low + j - centre) / support
            if v > 0.0:
                weight[dest, min(max(low + j, 0), n_in - 1) - start] += v / total
    return first, weight


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def kernel(out, img, prm, rounded):
    """Resample ``img`` (HWC uint8) into ``out`` (HWC float32, or uint8 ``rounded``), flip, colour, scale and
    shift. Indices are unsigned (numba then skips its negative-index checks); the common two-tap case of the
    horizontal pass is written out."""
    ih, iw, c = img.shape
    oh, ow = out.shape[0], out.shape[1]
    antialias = prm[ANTIALIAS] > 0.5
    fy, wy = taps(ih, oh, antialias, prm[VFLIP] > 0.5)
    fx, wx = taps(iw, ow, antialias, prm[HFLIP] > 0.5)
    fx *= np.uint64(c)
    ky, kx = wy.shape[1], wx.shape[1]
    w0 = np.ascontiguousarray(wx[:, 0])
    w1 = np.ascontiguousarray(wx[:, 1]) if kx > 1 else w0
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    zero, top, half = np.float32(0.0), np.float32(255.0), np.float32(0.5)
    m0, m1, m2, m3, m4, m5, m6, m7, m8 = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7], prm[8]
    t0, t1, t2, s0, s1, s2, u0, u1, u2 = prm[9], prm[10], prm[11], prm[12], prm[13], prm[14], prm[15], prm[16], \
        prm[17]
    flat = img.reshape(ih, iw * c)
    row = np.empty(iw * c, np.float32)
    for y in range(oh):
        # vertical pass: the weighted sum of ky source rows, contiguous (vectorized)
        src, w = flat[fy[y]], wy[y, 0]
        for i in range(iw * c):
            row[i] = w * np.float32(src[i])
        for j in range(1, ky):
            src, w = flat[fy[y] + np.uint64(j)], wy[y, j]
            for i in range(iw * c):
                row[i] += w * np.float32(src[i])
        # horizontal pass, then colour, normalize and the store, pixel by pixel
        line = out[y].reshape(ow * c)
        for x in range(ow):
            p = fx[x]
            if c == 3:
                a = w0[x]
                r, g, b = a * row[p], a * row[p + one], a * row[p + two]
                if kx == 2:
                    a, p = w1[x], p + three
                    r, g, b = r + a * row[p], g + a * row[p + one], b + a * row[p + two]
                else:
                    for j in range(1, kx):
                        a, q = wx[x, j], p + np.uint64(3 * j)
                        r, g, b = r + a * row[q], g + a * row[q + one], b + a * row[q + two]
                v0 = min(max(m0 * r + m1 * g + m2 * b + t0, zero), top) * s0 + u0
                v1 = min(max(m3 * r + m4 * g + m5 * b + t1, zero), top) * s1 + u1
                v2 = min(max(m6 * r + m7 * g + m8 * b + t2, zero), top) * s2 + u2
                if rounded:
                    v0, v1, v2 = min(max(v0 + half, zero), top), min(max(v1 + half, zero), top), \
                        min(max(v2 + half, zero), top)
                o = np.uint64(3 * x)
                line[o], line[o + one], line[o + two] = v0, v1, v2
            else:
                v = zero
                for j in range(kx):
                    v += wx[x, j] * row[p + np.uint64(j)]
                v = min(max(m0 * v + t0, zero), top) * s0 + u0
                line[x] = min(max(v + half, zero), top) if rounded else v


_RUN_SIGNATURE = nbtypes.void(nbtypes.uint64, nbtypes.uint64, nbtypes.uint64, nbtypes.int32,
                              nbtypes.uint64, nbtypes.uint64, nbtypes.uint64, nbtypes.int32)


@njit(inline="always")
def _run(out_dtype, rounded, out_ptr, out_shapes_ptr, in_ptr, in_shapes_ptr):
    """One sample through numba_function's per-sample ABI: data pointers and shape pointers of out and ins."""
    out_shape = carray(_as_pointer(carray(_as_pointer(out_shapes_ptr), 1, dtype=np.int64)[0]), 3, dtype=np.int64)
    ins = carray(_as_pointer(in_ptr), 2, dtype=np.int64)
    img_shape = carray(_as_pointer(carray(_as_pointer(in_shapes_ptr), 2, dtype=np.int64)[0]), 3, dtype=np.int64)
    out = carray(_as_pointer(carray(_as_pointer(out_ptr), 1, dtype=np.int64)[0]),
                 (out_shape[0], out_shape[1], out_shape[2]), dtype=out_dtype)
    img = carray(_as_pointer(ins[0]), (img_shape[0], img_shape[1], img_shape[2]), dtype=np.uint8)
    kernel(out, img, carray(_as_pointer(ins[1]), PARAMS, dtype=np.float32), rounded)


@cfunc(_RUN_SIGNATURE, nopython=True, cache=True)
def run_uint8(out_ptr, out_shapes_ptr, out_ndims_ptr, num_outs, in_ptr, in_shapes_ptr, in_ndims_ptr, num_ins):
    """DALI's entry point: uint8 output."""
    _run(np.uint8, True, out_ptr, out_shapes_ptr, in_ptr, in_shapes_ptr)


@cfunc(_RUN_SIGNATURE, nopython=True, cache=True)
def run_float32(out_ptr, out_shapes_ptr, out_ndims_ptr, num_outs, in_ptr, in_shapes_ptr, in_ndims_ptr, num_ins):
    """DALI's entry point: float32 output."""
    _run(np.float32, False, out_ptr, out_shapes_ptr, in_ptr, in_shapes_ptr)


def resample(img: np.ndarray, size: tuple[int, int], prm: np.ndarray, dtype=np.float32) -> np.ndarray:
    """The kernel called directly on one HWC uint8 image (what the DALI op computes per sample)."""
    out = np.empty((int(size[0]), int(size[1]), img.shape[2]), dtype=dtype)
    kernel(out, np.ascontiguousarray(img), np.asarray(prm, dtype=np.float32), out.dtype == np.uint8)
    return out


@functools.cache
def _setup(height: int, width: int) -> int:
    """The address of DALI's shape function for outputs of ``height`` x ``width`` (0: the input's; channels
    as the input)."""

    @cfunc(nbtypes.void(nbtypes.uint64, nbtypes.uint64, nbtypes.int32, nbtypes.uint64, nbtypes.uint64, nbtypes.int32,
                        nbtypes.int32), nopython=True)
    def setup(out_shapes_ptr, out_ndims_ptr, num_outs, in_shapes_ptr, in_ndims_ptr, num_ins, num_samples):
        outs = carray(_as_pointer(out_shapes_ptr), num_samples, dtype=np.int64)
        ins = carray(_as_pointer(in_shapes_ptr), (2, num_samples), dtype=np.int64)
        for i in range(num_samples):
            shape = carray(_as_pointer(outs[i]), 3, dtype=np.int64)
            source = carray(_as_pointer(ins[0, i]), 3, dtype=np.int64)
            shape[0] = height if height else source[0]
            shape[1] = width if width else source[1]
            shape[2] = source[2]

    return setup.address


@functools.cache
def _operator_class():
    from nvidia.dali.plugin.numba import NumbaFunction

    class FusedResample(NumbaFunction):
        """DALI's numba_function operator given numba's compiled entry points (addresses) directly."""

        def _get_run_fn_cpu(self, run_fn, *args):
            return run_fn

        def _get_setup_fn_cpu(self, setup_fn):
            return setup_fn

    return FusedResample


def _float_coin(fn, types, p: float):
    """A per-sample 0.0/1.0 draw, 1.0 with probability ``p``."""
    return fn.cast(fn.random.coin_flip(probability=p, dtype=types.INT32), dtype=types.FLOAT)


def _xor(a, b):
    """Exclusive or of two 0/1 flags, floats or per-sample DataNodes."""
    return a + b - 2.0 * a * b


@do_not_convert  # builds nodes, never branches on one: AutoGraph need not convert it (nor what it calls)
def fused_pass(fn, types, img, run: list, resize, ctx):
    """``run`` (image ops, see ``image.fused_run``) and a resize owed by the decoder, ((h, w), antialias) or
    None, as one pass of the kernel over ``img``. Each image's parameter vector (``PARAM_LAYOUT``) is drawn
    here, by the DALI graph: colour draws, coins for flips and for ``color`` with p < 1."""

    size, antialias = resize if resize is not None else (None, True)
    M, T = np.eye(3).ravel(), np.zeros(3)
    S, U = np.ones(3), np.zeros(3)
    flags = {"hflip": 0.0, "vflip": 0.0}
    float_output = False
    for op in run:
        if op.name == "resize":
            size, antialias = op.params["size"], True
        elif op.name in flags:
            coin = 1.0 if op.p >= 1.0 else _float_coin(fn, types, op.p)
            flags[op.name] = _xor(flags[op.name], coin)
        elif op.name == "color":
            M, T = colour_map(fn, types, op.params)
            M = M.ravel() if isinstance(M, np.ndarray) else fn.reshape(M, shape=[9])
            if op.p < 1.0:  # the identity where the coin says no
                coin = _float_coin(fn, types, op.p)
                eye = _constant(fn, types, np.eye(3).ravel())
                M, T = (_constant(fn, types, M) - eye) * coin + eye, _constant(fn, types, T) * coin
        elif op.name == "normalize":
            scale, shift = normalize_affine(op.params, ctx.channels)
            S[: len(scale)], U[: len(shift)] = scale, shift
            float_output = True
    pieces = [M, T, S, U, flags["hflip"], flags["vflip"], float(antialias)]
    params = _vector(fn, types, pieces)
    return fused_resample(img, params, size, float_output)


def _is_constant(value) -> bool:
    return isinstance(value, (int, float, np.ndarray))


def _constant(fn, types, value):
    """``value`` as a float32 vector DataNode (a DataNode is returned as it is)."""
    if not _is_constant(value):
        return value
    value = np.atleast_1d(np.asarray(value, dtype=np.float64))
    return fn.constant(fdata=value.tolist(), shape=[len(value)], dtype=types.FLOAT)


def _vector(fn, types, pieces: list):
    """One float32 vector per sample from ``pieces``: numbers, numpy arrays and (vector or scalar) DataNodes.
    Neighbouring constants become one constant node."""
    out, constant = [], []
    for piece in pieces:
        if _is_constant(piece):
            constant.append(np.atleast_1d(piece))
            continue
        if constant:
            out.append(_constant(fn, types, np.concatenate(constant)))
            constant = []
        out.append(fn.cast(fn.reshape(piece, shape=[-1]), dtype=types.FLOAT))
    if constant:
        out.append(_constant(fn, types, np.concatenate(constant)))
    return out[0] if len(out) == 1 else fn.cat(*out, axis=0)


def fused_resample(img, params, size: tuple[int, int] | None, float_output: bool):
    """The DALI DataNode of the kernel over ``img`` (HWC uint8 on the CPU) with per-sample ``params``, to
    ``size`` (h, w; None keeps each image's size)."""
    from nvidia.dali import fn, types

    run = run_float32 if float_output else run_uint8
    op = _operator_class()(run_fn=run.address, setup_fn=_setup(*(map(int, size) if size else (0, 0))),
                           in_types=[types.UINT8, types.FLOAT], ins_ndim=[3, 1],
                           out_types=[types.FLOAT if float_output else types.UINT8], outs_ndim=[3], device="cpu")
    return fn.reshape(op(img, params), layout="HWC")  # numba_function sets no layout; the ops after it need one
