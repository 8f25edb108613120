"""Image pipelines on NVIDIA DALI: a declarative op list compiled into one DALI pipeline.

The ops themselves, with their parameters, are the table of ``augforge.augment.image_ops``. Every op takes
a probability ``p``; below 1 it runs inside a DALI conditional, so it applies to a random subset of each
batch.

Devices: ``cpu`` runs DALI in CPU-only mode (``device_id=None``); ``gpu`` decodes with the
``mixed`` decoder and runs every op on the GPU; ``auto`` picks ``gpu`` when a CUDA device is
present. The op table, with each parameter, is in docs/recipes.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augforge.augment.image_ops import OPS
from augforge.device import choose_device
from augforge.errors import AugforgeError, first_line


def resolve_device(device) -> str:
    """DALI's device for ``device`` (auto, cpu, gpu/cuda, or an ``augforge.device.Device``): 'gpu' or 'cpu'.
    'auto' is 'gpu' when a CUDA device is present; the decision is ``augforge.device.choose_device``'s."""
    return choose_device(device).dali


@dataclass
class Context:
    """What every op's graph needs to know: where it runs."""

    device: str  # "cpu" or "gpu"
    channels: int = 3  # 1 for grey images
    fuse: bool = True  # on the CPU, runs of resize/flip/colour/normalize as one pass of the fused kernel

    @property
    def op_device(self) -> str:
        """The ``device`` argument of DALI ops."""
        return "gpu" if self.device == "gpu" else "cpu"


def apply_ops(fn, types, img, ops, ctx: Context, resize: tuple | None = None):
    """Chain ``ops`` on the DataNode ``img``; an op with p < 1 runs in a DALI conditional (flips draw their
    own coin). ``resize`` ((h, w), antialias) is a resize still owed by the decoder's fused crop.

    On the CPU, a run of resize (leading the run), flips, one ``color`` and ``normalize`` is one pass of
    the kernel in ``augforge.augment.fused_cpu`` (see ``fused_run``); on the GPU, DALI's own ops run.
    (Its helpers that only build the graph are kept out of DALI's AutoGraph, whose conversion of a function
    costs about 0.15 s at every first pipeline build of a process.)"""
    ops = list(ops)
    fuse = ctx.device == "cpu" and ctx.fuse
    i = 0
    while i < len(ops) or resize is not None:
        fused = fused_run(ops, i, resize) if fuse else None
        if fused is not None:
            from augforge.augment.fused_cpu import fused_pass  # lazy: numba and DALI's plugin

            img, resize = fused_pass(fn, types, img, ops[i : i + fused], resize, ctx), None
            i += fused
        elif resize is not None:
            img, resize = _resize_to(fn, img, *resize, ctx), None
        else:
            img = _maybe(fn, types, img, ops[i], ctx)
            i += 1
    return img


def _resize_to(fn, img, size, antialias: bool, ctx):
    return fn.resize(img, device=ctx.op_device, size=list(size), antialias=antialias)


#: ops the fused CPU kernel takes on, and those of them worth a pass of their own (flips alone stay DALI's)
_FUSABLE, _SLOW = ("resize", "hflip", "vflip", "color", "normalize"), ("resize", "color", "normalize")


def fused_run(ops: list, start: int, resize) -> int | None:
    """How many ops from ``start`` the fused CPU kernel does with the resize owed by the decoder (if any):
    resize (first in the run, none owed), flips, one color, normalize, each with p = 1 but flips and color.
    None when the pass would have nothing slow to do (flips alone stay DALI's)."""
    n = 0
    for op in ops[start:]:
        if op.name not in _FUSABLE or (op.p < 1.0 and op.name not in ("hflip", "vflip", "color")):
            break
        if op.name == "resize" and (n or resize is not None or op.params["keep_aspect"]):
            break
        if op.name == "color" and any(o.name == "color" for o in ops[start : start + n]):
            break
        n += 1
    slow = resize is not None or any(op.name in _SLOW for op in ops[start : start + n])
    return n if slow else None


def _maybe(fn, types, img, op, ctx):
    spec = OPS[op.name]
    if op.p <= 0.0:
        return img
    if spec.own_coin:
        return spec.build(fn, types, img, {**op.params, "p": op.p}, ctx)
    if op.p >= 1.0:
        return spec.build(fn, types, img, op.params, ctx)
    if fn.random.coin_flip(probability=op.p, dtype=types.BOOL):
        out = spec.build(fn, types, img, op.params, ctx)
    else:
        out = img
    return out


def decode(fn, types, encoded, color: str, ctx: Context, first=None):
    """Decode encoded images (``mixed`` on a GPU). A leading random_resized_crop with p = 1 is fused into the
    decoder (``decoders.image_random_crop``): only the crop window is decoded, and its resize is owed to
    ``apply_ops``. Returns (images, ops consumed, owed resize ((h, w), antialias) or None)."""
    out_type = types.GRAY if color == "gray" else types.RGB
    device = "mixed" if ctx.device == "gpu" else "cpu"
    if first is not None and first.name == "random_resized_crop" and first.p >= 1.0:
        img = fn.decoders.image_random_crop(encoded, device=device, output_type=out_type,
                                            random_area=list(first.params["scale"]),
                                            random_aspect_ratio=list(first.params["ratio"]))
        return img, 1, (tuple(first.params["size"]), bool(first.params["antialias"]))
    return fn.decoders.image(encoded, device=device, output_type=out_type), 0, None


class ImagePipeline:
    """What every image pipeline is given and says of its outputs (DALI's ``ImageAugmenter`` and the torch
    one, ``augforge.augment.torch_pipeline``): the ops, colour, device, seed, batch size and threads, and
    ``chw``, whether batches come out as float NCHW (after ``normalize``) rather than uint8 NHWC.
    Subclasses give ``batch_tensor``; ``augment_batches`` is built on it."""

    def __init__(self, ops, *, color: str = "rgb", device: str = "auto", seed: int = 0, batch_size: int = 64,
                 threads: int = 2, decode_only: bool = False, decoded: bool = False, source=None,
                 source_workers: int = 0, fuse: bool = True) -> None:
        self.ops = tuple(ops)
        #: on the CPU, runs of resize, flips, colour and normalize are one pass of ``fused_cpu``'s kernel;
        #: False runs DALI's own ops for them (as on the GPU)
        self.fuse = fuse
        self.color = color
        self.device = resolve_device(device)
        self.seed = int(seed) % (2**31 - 1)
        self.batch_size = batch_size
        self.threads = threads
        self.decode_only = decode_only
        #: inputs are HWC uint8 pixel arrays (raw shards), not encoded images
        self.decoded = decoded
        #: normalize leaves float HWC pixels in DALI; they are handed over as CHW
        self.chw = bool(self.ops) and OPS[self.ops[-1].name].float_output and not decode_only
        #: a picklable callable(BatchInfo) -> list of arrays, run by ``source_workers`` processes through
        #: DALI's parallel external_source (``next_batch``); None: batches are fed (``batch_tensor``)
        self.source = source
        self.source_workers = source_workers

    def batch_tensor(self, batch: list):
        """One batch (at most ``batch_size`` images) through the pipeline, as one torch tensor."""
        raise NotImplementedError

    def augment_batches(self, encoded: list):
        """Like ``augment``, one batch at a time as a torch tensor (images of one shape, e.g. after a crop).

        After ``normalize`` the batch is float32 NCHW (in ``torch.channels_last`` memory format from DALI).
        On a GPU the tensor is already on the device."""
        for start in range(0, len(encoded), self.batch_size):
            yield self.batch_tensor(encoded[start : start + self.batch_size])


class ImageAugmenter(ImagePipeline):
    """Runs a list of ops over encoded images through one DALI pipeline, in order.

    ``seed`` fixes every random draw: the same images fed in the same batches give the same
    outputs. ``augment(encoded)`` returns HWC uint8 arrays (CHW float32 after ``normalize``).
    With ``decode_only`` the ops are skipped (images are only decoded).
    """

    def __init__(self, ops, **options) -> None:
        super().__init__(ops, **options)
        for op in self.ops:
            if op.name == "rand_augment" and float(op.params.get("mstd", 0.0)) > 0:
                raise AugforgeError(f"{op.where}: rand_augment with mstd {op.params['mstd']:g}: DALI's RandAugment "
                                    "takes one magnitude; magnitude noise runs on the torch backend "
                                    "(AUGFORGE_IMAGE_BACKEND=torch), or drop mstd")
        self._pipe = None

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        ctx = Context(self.device, 1 if self.color == "gray" else 3, self.fuse)
        ops, color, decode_only, decoded = self.ops, self.color, self.decode_only, self.decoded

        source, parallel = self.source, {}
        if source is not None:
            import torch

            # forked workers cannot use a CUDA context the parent already holds, nor a source that says it
            # needs a fresh process (one reading an object store: its client's threads do not survive a fork)
            cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
            start = "spawn" if cuda or getattr(source, "start_method", None) == "spawn" else "fork"
            parallel = dict(py_num_workers=max(1, self.source_workers), py_start_method=start)

        def inputs(**layout):
            if source is None:
                return fn.external_source(name="encoded", dtype=types.UINT8, no_copy=False, **layout)
            return fn.external_source(source=source, parallel=True, batch=True, batch_info=True,
                                      dtype=types.UINT8, prefetch_queue_depth=2, **layout)

        @pipeline_def(batch_size=self.batch_size, num_threads=self.threads,
                      device_id=0 if self.device == "gpu" else None, seed=self.seed, enable_conditionals=True,
                      prefetch_queue_depth=1, exec_dynamic=True, **parallel)  # outputs stay valid after next run
        def pipeline():
            if decoded:
                images = inputs(ndim=3, layout="HWC")
                return apply_ops(fn, types, images.gpu() if ctx.device == "gpu" else images, ops, ctx)
            encoded = inputs(ndim=1)
            if decode_only:
                return decode(fn, types, encoded, color, ctx)[0]
            images, used, resize = decode(fn, types, encoded, color, ctx, ops[0] if ops else None)
            return apply_ops(fn, types, images, ops[used:], ctx, resize)

        import warnings

        with warnings.catch_warnings():  # DALI's auto_aug calls its own deprecated aliases: nothing a user can change
            shown = warnings.showwarning  # (DALI resets the filters around its notice, so it is dropped on its way out)

            def show(message, category, *args, **kwargs):
                if not (category is DeprecationWarning and "is now deprecated" in str(message)):
                    shown(message, category, *args, **kwargs)

            warnings.showwarning = show
            pipe = pipeline()
            pipe.build()
        return pipe

    def _execute(self, batch: list):
        """One DALI iteration over ``batch`` (encoded images or pixels): the output TensorList, where DALI left it."""
        if self._pipe is None:
            self._pipe = self._build()
        arrays = [np.frombuffer(e, dtype=np.uint8) if isinstance(e, (bytes, bytearray)) else e for e in batch]
        self._pipe.feed_input("encoded", arrays)
        try:
            (result,) = self._pipe.run()
        except RuntimeError as exc:
            raise AugforgeError(f"DALI could not process a batch: {first_line(exc)}") from None
        return result

    def _run(self, batch: list):
        """One DALI iteration over ``batch``: the output TensorList, on the CPU."""
        result = self._execute(batch)
        return result.as_cpu() if self.device == "gpu" else result

    def augment(self, encoded: list) -> list[np.ndarray]:
        """Decode and augment ``encoded`` (a list of bytes or uint8 arrays); outputs in the same order."""
        out: list[np.ndarray] = []
        for start in range(0, len(encoded), self.batch_size):
            result = self._run(encoded[start : start + self.batch_size])
            if self.chw:
                out.extend(np.ascontiguousarray(np.array(result[i]).transpose(2, 0, 1)) for i in range(len(result)))
            else:
                out.extend(np.array(result[i]) for i in range(len(result)))
        return out

    def batch_tensor(self, batch: list):
        """One batch (at most ``batch_size`` images) through the pipeline, as one torch tensor."""
        return self._tensor(self._execute(batch))

    def next_batch(self):
        """With a ``source``: the next batch its workers read, as ``batch_tensor`` gives it; None at the end of
        the source's epoch (the pipeline is then reset, and the next call starts the source's next epoch)."""
        if self._pipe is None:
            self._pipe = self._build()
        try:
            (result,) = self._pipe.run()
        except StopIteration:
            self._pipe.reset()
            return None
        except RuntimeError as exc:
            raise AugforgeError(f"DALI could not process a batch: {first_line(exc)}") from None
        return self._tensor(result)

    def _tensor(self, result):
        """A dense DALI output as one torch tensor (on the GPU when the pipeline runs there)."""
        import torch

        if not result.is_dense_tensor():
            raise AugforgeError("the ops give images of different sizes; end them with resize or a crop to "
                                "batch them as one tensor")
        if self.device == "gpu":  # stays on the device: copied into a torch CUDA tensor
            from nvidia.dali.plugin.pytorch import feed_ndarray

            dense = result.as_tensor()
            dtype = torch.float32 if self.chw else torch.uint8
            out = torch.empty(dense.shape(), dtype=dtype, device="cuda")
            feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream())
        else:
            # a view of DALI's output, no copy: the dynamic executor never reuses memory that is still referenced
            out = torch.from_numpy(np.asarray(result.as_tensor()))
        # float pixels: NHWC memory seen as NCHW, i.e. torch's channels_last format (no copy)
        return out.permute(0, 3, 1, 2) if self.chw else out

    def close(self) -> None:
        """Release the pipeline (and its threads)."""
        self._pipe = None
