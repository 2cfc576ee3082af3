"""Moved to :mod:`bench.core.data` (the foundation layer); ``bench.data`` stays importable as the same module."""

import sys

from bench.core import data as _moved

sys.modules[__name__] = _moved
