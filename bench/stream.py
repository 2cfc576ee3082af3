"""Moved to :mod:`bench.core.stream` (the foundation layer); ``bench.stream`` stays importable as the same module."""

import sys

from bench.core import stream as _moved

sys.modules[__name__] = _moved
