"""The scoring interface of nearest-neighbour defenses (DeepNN, WebNN, RMC, RMC+), which defense-aware
attacks on the K-NN step (PGD-NN, PGD-NN2: RMC paper section 5.1, supplement C.1) differentiate through.

A defense implementing :class:`NeighbourScorer` predicts by searching a database of rows (images with
stored features) for the K nearest rows of an input's features and scoring the classes from those rows;
an attack sees the rows only through these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class NeighbourScorer(ABC):
    """What a K-NN defense declares to attacks: its features, its rows, its search and its scoring."""

    #: How many nearest rows a prediction reads.
    k: int

    @abstractmethod
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The searched features of images x (differentiable in x)."""

    @abstractmethod
    def row_features(self) -> torch.Tensor:
        """(N, d) the stored features of every row the search covers (row i = search row i)."""

    @abstractmethod
    def search_rows(self, features: torch.Tensor, m: int) -> torch.Tensor:
        """(B, m) indices of the m nearest rows to each of ``features`` (B, d), nearest first."""

    @abstractmethod
    def row_probs(self) -> torch.Tensor:
        """(N, C) the fixed model's softmax output on each row."""

    @abstractmethod
    def row_labels(self) -> torch.Tensor:
        """(N,) the stored label of each row."""

    @abstractmethod
    def score_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, C) class scores from each input's K nearest rows (B, K); the prediction is their log."""

    @abstractmethod
    def row_image_shape(self) -> tuple[int, ...]:
        """The shape (C, H, W) of the images the rows were computed from: what inputs must match."""
