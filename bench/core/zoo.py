"""Model source ``robustbench:<Name>``: a RobustBench model-zoo entry (Croce et al., NeurIPS 2021 D&B).

It downloads weights on first use (into ``<cache>/robustbench``), so it works online; offline it
fails with one line. The architecture comes from robustbench's zoo, not from bench.core.models.
robustbench (and timm's Hugging Face loader) call ``torch.load`` without ``weights_only``: during
``load_robustbench`` their ``torch`` is one whose ``load`` always passes ``weights_only=True``, so a
checkpoint that asks to run code is refused.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core.compat import import_robustbench
from bench.core.errors import BenchError

PREFIX = "robustbench:"
#: Modules whose module-level ``torch`` name loads checkpoints on load_robustbench's path.
LOADER_MODULES = ("robustbench.utils", "timm.models._hub")


class _WeightsOnlyTorch:
    """``torch`` with ``load`` forced to ``weights_only=True``; everything else is torch's own."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return torch.load(f, *args, **kwargs)
        except Exception as exc:  # refused pickles and corrupt files raise several types
            raise BenchError(f"cannot load checkpoint {f} safely (weights_only=True): {_reason(exc)[:200]}; "
                             "delete it to download it again") from None


def _reason(exc: Exception) -> str:
    """The line of a torch.load error that says what was wrong, not its advice to drop weights_only."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    if not lines[0].startswith("Weights only load failed"):
        return lines[0]
    return next((line for line in lines[1:] if not line.startswith(("Please file", "Check the documentation"))),
                lines[0])


@contextmanager
def weights_only_loads(modules: tuple[str, ...] = LOADER_MODULES) -> Iterator[None]:
    """Within the block, ``torch.load`` as called from ``modules`` (imported here) uses ``weights_only=True``."""
    patched = [m for m in map(importlib.import_module, modules) if hasattr(m, "torch")]
    originals = [m.torch for m in patched]
    for m in patched:
        m.torch = _WeightsOnlyTorch()
    try:
        yield
    finally:
        for m, original in zip(patched, originals):
            m.torch = original


def is_zoo_name(name: str) -> bool:
    return name.startswith(PREFIX)


def load_robustbench(name: str, dataset: str = "cifar10", threat: str = "Linf",
                     model_dir: str | Path = ".bench-cache/robustbench") -> nn.Module:
    """Load ``name`` (with or without the ``robustbench:`` prefix) from the RobustBench zoo."""
    import_robustbench()
    from robustbench.utils import load_model

    model_name = name.removeprefix(PREFIX)
    try:
        with weights_only_loads():
            model = load_model(model_name=model_name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)
    except BenchError:
        raise
    except (KeyError, ValueError) as exc:
        raise BenchError(f"robustbench has no {dataset}/{threat} model {model_name!r} ({exc})") from None
    except Exception as exc:  # requests/gdown raise many types when offline
        where = f"{model_dir}/{dataset}/{threat}/{model_name}.pt"
        raise BenchError(f"cannot download robustbench model {model_name!r} ({type(exc).__name__}); "
                         f"are you offline? Put its checkpoint at {where}") from None
    return model.eval()
