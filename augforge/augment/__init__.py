"""Augmentation: image ops compiled into DALI pipelines."""

from augforge.augment.image import OPS, ImageAugmenter, check_op, resolve_device

__all__ = ["OPS", "ImageAugmenter", "check_op", "resolve_device"]
