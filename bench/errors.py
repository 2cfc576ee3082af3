"""Moved to :mod:`bench.core.errors` (the foundation layer); ``bench.errors`` stays importable as the same module."""

import sys

from bench.core import errors as _moved

sys.modules[__name__] = _moved
