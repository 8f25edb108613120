"""Augmentation: image ops compiled into DALI pipelines."""

from augforge.augment.image import ImageAugmenter, resolve_device
from augforge.augment.image_ops import OPS, check_image_op
from augforge.augment.ops import OpDef, OpSpec, Param, check_op

__all__ = ["OPS", "ImageAugmenter", "OpDef", "OpSpec", "Param", "check_image_op", "check_op", "resolve_device"]
