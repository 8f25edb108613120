"""Dense targets on DALI: a batch of samples moved by their transforms in one DALI pipeline run, pixels and masks
by ``fn.warp_affine`` (a semantic class map by its nearest pixel) and polygon vertices, box corners and keypoints by
``fn.coord_transform``, on the GPU when one is present (``augforge.device.choose_device``) and on DALI's CPU ops
otherwise.

The transforms are drawn on the host (``augforge.augment.dense_ops.DenseAugment.geometry``), so every backend
moves a sample by the same matrix; the frame policy then judges what DALI moved
(``augforge.augment.target_geometry.apply`` with the ``Parts`` made here). ``DenseAugment.batch`` uses it.
DALI and the CPU path agree (tests/test_check_op.py): boxes and keypoints within a pixel, masks by IoU >= 0.98,
pixels within the bilinear kernels' rounding.
"""

from __future__ import annotations

import numpy as np

from augforge.augment.target_geometry import Parts, mask_stack, parts_points, split_points
from augforge.datasets.targets import IGNORE, Instances

INPUTS = ("images", "masks", "semantic", "points", "matrix", "size")


class DaliMover:
    """One built DALI pipeline that moves up to ``batch_size`` samples a run on ``device`` ('cpu' or 'gpu');
    ``fill``: the image's border value."""

    def __init__(self, batch_size: int, device: str = "cpu", fill: float = 0.0, threads: int = 1) -> None:
        from nvidia.dali import fn, pipeline_def, types

        self.device, self.batch_size, self.fill = device, batch_size, float(fill)

        @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=0 if device == "gpu" else None,
                      exec_dynamic=True, prefetch_queue_depth=1)
        def pipeline():
            images, masks, semantic, points, matrix, size = (
                fn.external_source(name=name, layout=layout)
                for name, layout in zip(INPUTS, ("HWC", "HWC", "HWC", None, None, None)))
            if device == "gpu":
                images, masks, semantic, points = images.gpu(), masks.gpu(), semantic.gpu(), points.gpu()
            moved = [fn.warp_affine(x, matrix=matrix, size=size, inverse_map=False, fill_value=value,
                                    interp_type=interp, device=device)
                     for x, value, interp in ((images, fill, types.INTERP_LINEAR), (masks, 0.0, types.INTERP_LINEAR),
                                              (semantic, float(IGNORE), types.INTERP_NN))]
            return (*moved, fn.coord_transform(points, MT=matrix, device=device))

        self.pipeline = pipeline()
        self.pipeline.build()

    def move(self, images: list[np.ndarray], instances: list[Instances], matrices: list[np.ndarray],
             sizes: list[tuple[int, int]], semantics: list | None = None) -> list[Parts]:
        """The ``Parts`` of each sample (``images``: HWC uint8; ``sizes``: output (w, h); ``semantics``: their
        class-index maps, in a semantic set) after its matrix."""
        semantics = semantics or [None] * len(images)
        if not 0 < len(images) <= self.batch_size:
            raise ValueError(f"DaliMover moves 1 to {self.batch_size} samples a run, got {len(images)}")
        stacks = [mask_stack(inst, image.shape[1], image.shape[0]) for image, inst in zip(images, instances)]
        feeds = {
            "images": [np.ascontiguousarray(image) for image in images],
            # DALI needs a channel: a sample without mask-only instances warps one empty plane
            "masks": [s if s.shape[2] else np.zeros(s.shape[:2] + (1,), np.float32) for s, _ in stacks],
            "semantic": [np.zeros((1, 1, 1), np.uint8) if m is None else np.ascontiguousarray(m[:, :, None])
                         for m in semantics],
            "points": [parts_points(inst).astype(np.float32) for inst in instances],
            "matrix": [np.ascontiguousarray(m[:2], dtype=np.float32) for m in matrices],
            "size": [np.array([h, w], dtype=np.float32) for w, h in sizes],
        }
        for name, data in feeds.items():
            self.pipeline.feed_input(name, data)
        outputs = [out.as_cpu() if self.device == "gpu" else out for out in self.pipeline.run()]
        parts = []
        for k, inst in enumerate(instances):
            image, masks, semantic, points = (np.asarray(out[k]) for out in outputs)
            rings, corners, keypoints = split_points(inst, points.astype(np.float64))
            warped: list = [None] * len(inst)
            for c, i in enumerate(stacks[k][1]):
                warped[i] = masks[:, :, c]
            parts.append(Parts(image, rings, warped, corners, keypoints,
                               None if semantics[k] is None else semantic[:, :, 0]))
        return parts
