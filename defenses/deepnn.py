"""DeepNN: deep k-nearest neighbours (Papernot & McDaniel, 2018), RMC's variant and the conformal DkNN.

RMC's variant (paper section 4): the K nearest neighbours of x in the deepest conv layer's feature
space among the clean training set D; the prediction is the mean of the neighbours' output vectors.
K defaults to DkNN's k = 75 (the RMC paper gives K only for RMC).
``mode="conformal"``: the original DkNN's conformal prediction on one layer, with the last
``calibration`` fraction of D held out to calibrate the nonconformity scores.
"""

from __future__ import annotations

import torch

from bench.core.errors import BenchError
from bench.core.methods import register_defense as register
from defenses.neighbors import NeighbourDefense


@register("deepnn")
class DeepNN(NeighbourDefense):
    """Mean of the K nearest clean training examples' outputs (or conformal DkNN)."""

    uses_adversarial_database = False
    dataset_defaults = {"digits": {"k": 32}, "mnist": {"k": 75}, "cifar10": {"k": 75}}

    def __init__(self, k: int = 75, mode: str = "mean", calibration: float = 0.1, **kw) -> None:
        super().__init__(k=k, **kw)
        if mode not in ("mean", "conformal"):
            raise BenchError(f"deepnn mode must be 'mean' or 'conformal', got {mode!r}")
        self.mode, self.calibration = mode, float(calibration)

    def prepare(self, model, train_set=None):
        super().prepare(model, train_set)
        self._row_probs = self.database_probs()
        if self.mode == "conformal":
            n = len(self.database.y)
            n_cal = max(1, int(n * self.calibration))
            self._fit = torch.arange(n - n_cal)
            self._row_probs = self._row_probs[self._fit]  # the index searches the fit part only
            self.index = self.make_index(self.database.features[self._fit])
            cal_idx = self.index.search(self.database.features[n - n_cal :], self.k)[1]
            cal_labels = self.database.y[n - n_cal :]
            votes = self._votes(cal_idx)
            self._cal_scores = self.k - votes.gather(1, cal_labels[:, None]).squeeze(1)
        return self

    def row_labels(self) -> torch.Tensor:
        return self.database.y[self._fit] if self.mode == "conformal" else self.database.y

    def _votes(self, idx: torch.Tensor) -> torch.Tensor:
        labels = self.row_labels().to(idx.device)[idx]
        return torch.nn.functional.one_hot(labels, self._row_probs.shape[1]).sum(1)

    def score_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Mean of the rows' outputs, or conformal p-values per candidate label."""
        if self.mode == "mean":
            return super().score_rows(rows)
        alpha = self.k - self._votes(rows)  # (B, C) nonconformity per candidate label
        cal = self._cal_scores.to(rows.device)
        return (cal[None, None, :] >= alpha[:, :, None]).float().mean(2)
