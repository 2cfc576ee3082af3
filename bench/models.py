"""Moved to :mod:`bench.core.models` (the foundation layer); ``bench.models`` stays importable as the same module."""

import sys

from bench.core import models as _moved

sys.modules[__name__] = _moved
