"""Shared base of the nearest-neighbour runtime defenses: a database, its features, a faiss index."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.core.contracts import NeighbourScorer, RuntimeDefense
from bench.core.data import Dataset
from bench.core.errors import BenchError
from bench.core.models import layer_features
from defenses.database import Database, build_database, clean_features
from defenses.index import build_index, check_params
from defenses.knn_index import KnnIndex


class NeighbourDefense(RuntimeDefense, NeighbourScorer):
    """Searches the fixed model's deep features (``model.features``) of a database (D or D'); implements
    the declared scoring interface (``NeighbourScorer``) that pgd-nn attacks through."""

    #: True: the database is D' (D plus adversarial copies); False: the clean training set D.
    uses_adversarial_database = True
    needs_train_set = True

    def __init__(self, k: int = 64, copies: int = 1, db_attacks: list[str] | tuple[str, ...] = ("pgd",),
                 db_params: dict[str, Any] | None = None, seed: int = 0, cache_dir: str | None = None,
                 features: str | None = None, index: str = "flat", nlist: int | None = None, m: int | None = None,
                 nprobe: int | None = None, refine: int | None = None, database: str = "memory",
                 shard_size: int = 4096) -> None:
        """``features``: the model's feature layer to search (None: its default, the deepest one;
        ImageNet ResNets also offer ``conv_5_1``, the RMC paper's choice). ``index``: ``"flat"`` (exact,
        the default) or ``"ivfpq"`` with ``nlist`` cells, ``m`` bytes per vector, ``nprobe`` cells
        searched and ``refine`` x K candidates re-ranked exactly (see defenses/index.py). ``database``:
        ``"memory"`` (the default) or ``"disk"``: D' as uint8 / float16 shards of ``shard_size`` rows, built
        by a resumable job and read row by row (defenses/dprime.py). ``db_attacks``: the D' attacks
        (RMC paper Table 6), or, in a grid, ``"per-attack"``: each cell's D' is made with the cell's own
        attack and budgets, adaptive cells fall back to PGD (bench.spec.dprime resolves it per cell)."""
        if isinstance(db_attacks, str):
            raise BenchError(f"db_attacks = {db_attacks!r}: a grid resolves \"per-attack\" for each cell; "
                             "give the defense itself a list of attack names, e.g. db_attacks = [\"pgd\"]")
        if int(k) < 1:
            raise BenchError(f"k must be at least 1, got {k}")
        check_params(index, nlist=nlist, m=m, nprobe=nprobe, refine=refine)
        if database not in ("memory", "disk"):
            raise BenchError(f"database must be 'memory' or 'disk', got {database!r}")
        if int(shard_size) < 1:
            raise BenchError(f"shard_size must be at least 1, got {shard_size}")
        self.database_kind, self.shard_size = database, int(shard_size)
        self.index_kind = index
        self.index_params = {k_: v for k_, v in {"nlist": nlist, "m": m, "nprobe": nprobe, "refine": refine}.items()
                             if v is not None}
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
        if self.database_kind == "disk":
            from defenses.dprime import build_disk_database

            adv = self.uses_adversarial_database
            self.database = build_disk_database(model, train_set, self.copies if adv else 0, self.db_attacks,
                                                self.db_params, self.seed, self._cache_dir, layer=self.features,
                                                shard_size=self.shard_size, quantise_clean=adv)
        elif self.uses_adversarial_database:
            self.database = build_database(model, train_set, self.copies, self.db_attacks, self.db_params,
                                           self.seed, self._cache_dir, layer=self.features)
        else:
            feats = clean_features(model, train_set, self.features, quantised=False, cache_dir=self._cache_dir)
            self.database = Database(train_set.x, train_set.y, torch.zeros(len(train_set), dtype=torch.bool), feats)
        on_disk = getattr(self.database, "feature_rows", None)
        self.index = (self.make_index(vectors=on_disk) if on_disk is not None and self.index_kind == "ivfpq"
                      else self.make_index(self.database.features))
        self.database_changed()
        return self

    def make_index(self, features: torch.Tensor | None = None, vectors: Any = None) -> KnnIndex:
        """The grid's index (``index``, ``nlist``, ``m``, ``nprobe``, ``refine``) over ``features`` (or, for
        ivfpq, over on-disk ``vectors``: the float16 feature shards, never loaded whole)."""
        return build_index(features, self.index_kind, seed=self.seed, vectors=vectors, **self.index_params)

    @torch.no_grad()
    def neighbours(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Indices into the database of the k nearest neighbours of each x, nearest first."""
        feats = self.embed(x.to(self.device))
        return self.index.search(feats, k or self.k)[1]

    def embed(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """The searched features of x: ``model.features`` at the ``features`` layer."""
        return layer_features(model or self.model, x, self.features)

    # -- the declared scoring contract (bench.core.contracts.NeighbourScorer; predict and pgd-nn share it)
    def row_features(self) -> torch.Tensor:
        """The stored features of every row the index searches."""
        return self.index.vectors()

    def search_rows(self, features: torch.Tensor, m: int) -> torch.Tensor:
        """Indices of the m nearest index rows to each of ``features``, nearest first."""
        return self.index.search(features, m)[1]

    def row_image_shape(self) -> tuple[int, ...]:
        return tuple(self.database.x.shape[1:])

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
