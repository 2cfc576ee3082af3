"""Exact L2 nearest-neighbour search over feature vectors with faiss (IndexFlatL2).

On GPU when CUDA and faiss-gpu are both present, on CPU otherwise. Entries can be added and
replaced (RMC+ rewrites adversarial examples of D' in place).
"""

from __future__ import annotations

import numpy as np
import torch

from bench.core.optional import require_faiss


def faiss_module():
    """faiss (faiss-cpu or faiss-gpu, the ``cpu`` or ``gpu`` extra), or one line naming both extras."""
    return require_faiss()


class KnnIndex:
    """``search(queries, k) -> (squared distances, indices)``, nearest first, as torch tensors."""

    def __init__(self, features: torch.Tensor, use_gpu: bool | None = None) -> None:
        faiss = faiss_module()
        self._xb = np.ascontiguousarray(features.detach().cpu().numpy().astype(np.float32))
        self.dim = self._xb.shape[1]
        cpu_index = faiss.IndexFlatL2(self.dim)
        want_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
        self.on_gpu = bool(want_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0)
        if self.on_gpu:
            self._res = faiss.StandardGpuResources()
            self.index = faiss.index_cpu_to_gpu(self._res, 0, cpu_index)
        else:
            self.index = cpu_index
        self.index.add(self._xb)

    def __len__(self) -> int:
        return self.index.ntotal

    #: Extra rows fetched so that ties at the k-th distance are broken by row id, not by faiss's
    #: heap order (which depends on its thread count).
    TIE_MARGIN = 8

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = np.ascontiguousarray(queries.detach().cpu().numpy().astype(np.float32))
        k = min(k, len(self))
        dist, idx = self.index.search(q, min(k + self.TIE_MARGIN, len(self)))
        order = np.lexsort((idx, dist), axis=1)[:, :k]  # by distance, then by row id
        dist, idx = np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)
        return torch.from_numpy(np.ascontiguousarray(dist)), torch.from_numpy(np.ascontiguousarray(idx)).long()

    def add(self, features: torch.Tensor) -> None:
        new = np.ascontiguousarray(features.detach().cpu().numpy().astype(np.float32))
        self._xb = np.concatenate([self._xb, new])
        self.index.add(new)

    def replace(self, ids: torch.Tensor, features: torch.Tensor) -> None:
        """Overwrite the vectors at ``ids`` (a flat index has no update: it is rebuilt, O(N))."""
        self._xb[ids.cpu().numpy()] = features.detach().cpu().numpy().astype(np.float32)
        self.index.reset()
        self.index.add(self._xb)

    def vectors(self) -> torch.Tensor:
        return torch.from_numpy(self._xb.copy())


def brute_force_search(database: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference exact search in torch (squared L2), for tests and benchmarks."""
    d = torch.cdist(queries.float(), database.float()).pow(2)
    dist, idx = d.topk(min(k, database.shape[0]), dim=1, largest=False)
    return dist, idx
