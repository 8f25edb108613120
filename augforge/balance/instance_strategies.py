"""The strategies that balance a detection or segmentation set by its instances or image-level labels, rather
than its rows: repeat-factor sampling, copy-paste and ML-ROS. One function tells them from a row chain."""

from __future__ import annotations

from augforge.balance.copy_paste import parse_copy_paste
from augforge.balance.ml_ros import parse_ml_ros
from augforge.balance.repeat_factor import parse_repeat_factor

#: the instance strategies and how each is written
USAGE = {"repeat_factor": "repeat_factor[:t]", "copy_paste": "copy_paste:N", "ml_ros": "ml_ros[:P]"}


def instance_strategy(strategy: str | None) -> str | None:
    """The name of the instance strategy ``strategy`` is, or None for a row chain (or none); a malformed
    instance strategy is one line."""
    for name, parse in (("repeat_factor", parse_repeat_factor), ("copy_paste", parse_copy_paste),
                        ("ml_ros", parse_ml_ros)):
        if parse(strategy) is not None:
            return name
    return None
