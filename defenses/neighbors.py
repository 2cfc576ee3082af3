"""Shared base of the nearest-neighbour runtime defenses: a database, its features, a faiss index."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.core.data import Dataset
from bench.core.errors import BenchError
from bench.core.models import layer_features
from defenses.base import RuntimeDefense
from defenses.database import Database, build_database, compute_features
from defenses.knn_index import KnnIndex


class NeighbourDefense(RuntimeDefense):
    """Searches the fixed model's deep features (``model.features``) of a database (D or D')."""

    #: True: the database is D' (D plus adversarial copies); False: the clean training set D.
    uses_adversarial_database = True
    needs_train_set = True

    def __init__(self, k: int = 64, copies: int = 1, db_attacks: list[str] | tuple[str, ...] = ("pgd",),
                 db_params: dict[str, Any] | None = None, seed: int = 0, cache_dir: str | None = None,
                 features: str | None = None) -> None:
        """``features``: the model's feature layer to search (None: its default, the deepest one;
        ImageNet ResNets also offer ``conv_5_1``, the RMC paper's choice)."""
        if int(k) < 1:
            raise BenchError(f"k must be at least 1, got {k}")
        self.features = features
        self.k, self.copies, self.seed = int(k), int(copies), int(seed)
        self.db_attacks, self.db_params = list(db_attacks), dict(db_params or {})
        self._cache_dir = cache_dir

    def prepare(self, model: nn.Module, train_set: Dataset | None = None) -> NeighbourDefense:
        if train_set is None:
            raise BenchError(f"{type(self).__name__} needs the training set to build its database")
        super().prepare(model, train_set)
        self.train_set = train_set
        if self.features is not None:
            layer_features(model, train_set.x[:1].to(self.device), self.features)  # one line if it has none
        if self.uses_adversarial_database:
            self.database = build_database(model, train_set, self.copies, self.db_attacks, self.db_params,
                                           self.seed, self._cache_dir, layer=self.features)
        else:
            feats = compute_features(model, train_set.x, layer=self.features)
            self.database = Database(train_set.x, train_set.y, torch.zeros(len(train_set), dtype=torch.bool), feats)
        self.index = KnnIndex(self.database.features)
        self.database_changed()
        return self

    @torch.no_grad()
    def neighbours(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Indices into the database of the k nearest neighbours of each x, nearest first."""
        feats = self.embed(x.to(self.device))
        return self.index.search(feats, k or self.k)[1]

    def embed(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """The searched features of x: ``model.features`` at the ``features`` layer."""
        return layer_features(model or self.model, x, self.features)

    # -- the declared scoring contract (predict and pgd-nn share it) ----------------------------
    def row_probs(self) -> torch.Tensor:
        """The fixed model's softmax output on each row the index searches (row i = index row i),
        computed once per state of the database. A defense that rewrites its database (RMC+ writes
        D') calls ``database_changed`` after every write; recomputing on every call instead cost one
        forward pass over all of D' per PGD-NN step (N' = 5|D| images at paper scale)."""
        if getattr(self, "_row_probs", None) is None:
            self._row_probs = self.database_probs()
        return self._row_probs

    def database_changed(self) -> None:
        """Forget what was derived from the database's images (``row_probs``): they were rewritten."""
        self._row_probs = None

    def row_labels(self) -> torch.Tensor:
        """The label of each row the index searches."""
        return self.database.y

    def score_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Class scores (B, C) from each input's K nearest index rows (B, K), nearest first; the
        prediction is their log. Default: the mean of the rows' outputs. Differentiable attacks
        (pgd-nn) score their exact top-K rows with this very method."""
        return self.row_probs().to(rows.device)[rows].mean(1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_rows(self.neighbours(x)).clamp_min(1e-12).log()

    @torch.no_grad()
    def database_probs(self, model: nn.Module | None = None, batch_size: int = 512) -> torch.Tensor:
        """Softmax outputs of the (fixed) model on every database image."""
        m = model or self.model
        xs = self.database.x
        return torch.cat([m(xs[i : i + batch_size].to(self.device)).softmax(1).cpu()
                          for i in range(0, len(xs), batch_size)])
