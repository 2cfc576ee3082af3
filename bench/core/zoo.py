"""Model source ``robustbench:<Name>``: a RobustBench model-zoo entry (Croce et al., NeurIPS 2021 D&B).

It downloads weights on first use (into ``<cache>/robustbench``), so it works online; offline it
fails with one line. The architecture comes from robustbench's zoo, not from bench.core.models.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from bench.core.compat import import_robustbench
from bench.core.errors import BenchError

PREFIX = "robustbench:"


def is_zoo_name(name: str) -> bool:
    return name.startswith(PREFIX)


def load_robustbench(name: str, dataset: str = "cifar10", threat: str = "Linf",
                     model_dir: str | Path = ".bench-cache/robustbench") -> nn.Module:
    """Load ``name`` (with or without the ``robustbench:`` prefix) from the RobustBench zoo."""
    import_robustbench()
    from robustbench.utils import load_model

    model_name = name.removeprefix(PREFIX)
    try:
        model = load_model(model_name=model_name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)
    except (KeyError, ValueError) as exc:
        raise BenchError(f"robustbench has no {dataset}/{threat} model {model_name!r} ({exc})") from None
    except Exception as exc:  # requests/gdown raise many types when offline
        where = f"{model_dir}/{dataset}/{threat}/{model_name}.pt"
        raise BenchError(f"cannot download robustbench model {model_name!r} ({type(exc).__name__}); "
                         f"are you offline? Put its checkpoint at {where}") from None
    return model.eval()
