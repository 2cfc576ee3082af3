"""Moved to :mod:`bench.core.compat` (the foundation layer); ``bench.compat`` stays importable as the same module."""

import sys

from bench.core import compat as _moved

sys.modules[__name__] = _moved
