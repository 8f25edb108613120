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

Each image's parameters come in one float32 vector (``PARAMS`` entries, laid out as ``param_index``
says), drawn per sample by the DALI graph. The kernel and DALI's C entry points are compiled once and
cached on disk by numba; only the tiny shape function is compiled per output size.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import carray, cfunc, njit
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

#: layout of the per-image parameter vector
PARAM_LAYOUT = {"M": slice(0, 9), "T": slice(9, 12), "S": slice(12, 15), "U": slice(15, 18), "hflip": 18,
                "vflip": 19, "antialias": 20}
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
    """Source indices (clamped to the edges) and weights of each output pixel along one axis:
    (n_out, K) int64 and float32, K the most taps any output needs. ``reverse`` flips the axis."""
    scale = n_in / n_out
    support = scale if (antialias and scale > 1.0) else 1.0  # triangle radius, in input pixels
    k = 1
    for o in range(n_out):
        centre = (o + 0.5) * scale - 0.5
        k = max(k, int(np.ceil(centre + support)) - int(np.floor(centre - support)) - 1)
    index = np.zeros((n_out, k), np.int64)
    weight = np.zeros((n_out, k), np.float32)
    for o in range(n_out):
        centre = (o + 0.5) * scale - 0.5
        low = int(np.floor(centre - support)) + 1
        total = 0.0
        for j in range(k):
            v = 1.0 - abs(low + j - centre) / support
            if v > 0.0:
                total += v
        dest = n_out - 1 - o if reverse else o
        for j in range(k):
            v = 1.0 - abs(low + j - centre) / support
            weight[dest, j] = v / total if v > 0.0 else 0.0
            index[dest, j] = min(max(low + j, 0), n_in - 1)
    return index, weight


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def kernel(out, img, prm, rounded):
    """Resample ``img`` (HWC uint8) into ``out`` (HWC float32, or uint8 ``rounded``), flip, colour, scale and
    shift."""
    ih, iw, c = img.shape
    oh, ow = out.shape[0], out.shape[1]
    antialias = prm[20] > 0.5
    yi, yw = taps(ih, oh, antialias, prm[19] > 0.5)
    xi, xw = taps(iw, ow, antialias, prm[18] > 0.5)
    xi *= c
    ky, kx = yw.shape[1], xw.shape[1]
    flat = img.reshape(ih, iw * c)
    row = np.empty(iw * c, np.float32)
    m0, m1, m2, m3, m4, m5, m6, m7, m8 = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7], prm[8]
    t0, t1, t2, s0, s1, s2, u0, u1, u2 = prm[9], prm[10], prm[11], prm[12], prm[13], prm[14], prm[15], prm[16], \
        prm[17]
    for y in range(oh):
        # vertical pass: the weighted sum of the source rows, contiguous (vectorized)
        src, w = flat[yi[y, 0]], yw[y, 0]
        for i in range(iw * c):
            row[i] = w * np.float32(src[i])
        for j in range(1, ky):
            src, w = flat[yi[y, j]], yw[y, j]
            if w != 0.0:
                for i in range(iw * c):
                    row[i] += w * np.float32(src[i])
        line = out[y]
        for x in range(ow):
            if c == 3:
                p = xi[x, 0]
                w = xw[x, 0]
                r, g, b = w * row[p], w * row[p + 1], w * row[p + 2]
                for j in range(1, kx):
                    p, w = xi[x, j], xw[x, j]
                    r += w * row[p]
                    g += w * row[p + 1]
                    b += w * row[p + 2]
                v0 = min(max(m0 * r + m1 * g + m2 * b + t0, 0.0), 255.0) * s0 + u0
                v1 = min(max(m3 * r + m4 * g + m5 * b + t1, 0.0), 255.0) * s1 + u1
                v2 = min(max(m6 * r + m7 * g + m8 * b + t2, 0.0), 255.0) * s2 + u2
                if rounded:
                    line[x, 0] = min(max(v0 + 0.5, 0.0), 255.0)
                    line[x, 1] = min(max(v1 + 0.5, 0.0), 255.0)
                    line[x, 2] = min(max(v2 + 0.5, 0.0), 255.0)
                else:
                    line[x, 0], line[x, 1], line[x, 2] = v0, v1, v2
            else:
                v = np.float32(0.0)
                for j in range(kx):
                    v += xw[x, j] * row[xi[x, j]]
                v = min(max(m0 * v + t0, 0.0), 255.0) * s0 + u0
                line[x, 0] = min(max(v + 0.5, 0.0), 255.0) if rounded else v


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


def fused_resample(img, params, size: tuple[int, int] | None, float_output: bool):
    """The DALI DataNode of the kernel over ``img`` (HWC uint8 on the CPU) with per-sample ``params``, to
    ``size`` (h, w; None keeps each image's size)."""
    from nvidia.dali import fn, types

    run = run_float32 if float_output else run_uint8
    op = _operator_class()(run_fn=run.address, setup_fn=_setup(*(map(int, size) if size else (0, 0))),
                           in_types=[types.UINT8, types.FLOAT], ins_ndim=[3, 1],
                           out_types=[types.FLOAT if float_output else types.UINT8], outs_ndim=[3], device="cpu")
    return fn.reshape(op(img, params), layout="HWC")  # numba_function sets no layout; the ops after it need one
