"""Deprecated: the models moved to ``augforge.models`` (this path re-exports its public names for one
release)."""

import warnings

from augforge.models import *  # noqa: F401,F403
from augforge.models import __all__  # noqa: F401

warnings.warn("augforge.train.models is deprecated; import augforge.models", DeprecationWarning, stacklevel=2)
