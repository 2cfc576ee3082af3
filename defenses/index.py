"""The one place the nearest-neighbour defenses build their faiss index: exact or IVF-PQ.

``index = "flat"`` (the default): exact L2 search (``IndexFlatL2``, ``defenses.knn_index.KnnIndex``).
``index = "ivfpq"``: an inverted file of ``nlist`` k-means cells whose residuals are product-quantised
into ``m`` bytes per vector (Jegou, Douze, Schmid, "Product quantization for nearest neighbor search",
TPAMI 2011); a query scans the ``nprobe`` nearest cells, takes the ``refine`` x K best by PQ distance and
re-ranks them by exact distance on the stored vectors (in memory, or float16 shards on disk), so the
top K is ordered by true distance. Defaults chosen by bench/benchmarks/index_scale.py
(results/benchmarks/index_scale_1m.json): recall@1,024 >= 0.95 on clustered synthetic 2,048-d features
(not on a harder, overlapping mixture: results/benchmarks/index_scale_latent0.5.json).
On GPU when CUDA and faiss-gpu are both present (the flat and the IVF-PQ index), on CPU otherwise.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from bench.core.errors import BenchError
from defenses.knn_index import KnnIndex, faiss_module

INDEX_KINDS = ("flat", "ivfpq")
#: nprobe and refine: recall@1,024 0.975 at N = 1,000,000, nlist 1,024 (0.988 at 100,000, nlist 256) on
#: the clustered synthetic set of results/benchmarks/index_scale_1m.json (index_scale.json)
DEFAULT_NPROBE = 32
DEFAULT_REFINE = 4
#: most bytes per vector the automatic ``m`` picks (the benchmark's 2,048-d choice)
DEFAULT_M = 64


def default_nlist(n: int) -> int:
    """About sqrt(N) cells (the measured runs: nlist 256 at 100,000 and 1,024 at 1,000,000), at most N / 39
    so k-means has 39 points a cell. faiss suggests 4-16 sqrt(N), but k-means costs ~nlist^2 (39 x nlist
    training points x nlist centroids) and, with the exact re-ranking of refine x K rows dominating a
    query, the longer lists scanned by fewer cells cost little."""
    return max(1, min(int(math.sqrt(n)), n // 39 if n >= 39 else 1))


def default_m(dim: int) -> int:
    """The largest divisor of ``dim`` that is at most DEFAULT_M."""
    return max(d for d in range(1, min(dim, DEFAULT_M) + 1) if dim % d == 0)


def check_params(index: str, n: int | None = None, dim: int | None = None, nlist: int | None = None,
                 m: int | None = None, nprobe: int | None = None, refine: int | None = None) -> None:
    """One BenchError line per bad setting (unknown kind, m not dividing the dim, nlist > points, ...)."""
    if index not in INDEX_KINDS:
        raise BenchError(f"index must be one of {', '.join(INDEX_KINDS)}, got {index!r}")
    if index == "flat":
        given = [k for k, v in {"nlist": nlist, "m": m, "nprobe": nprobe, "refine": refine}.items() if v is not None]
        if given:
            raise BenchError(f"{', '.join(given)} only apply to index = \"ivfpq\"; drop them or set index = \"ivfpq\"")
        return
    for name, v in (("nlist", nlist), ("m", m), ("nprobe", nprobe), ("refine", refine)):
        if v is not None and int(v) < 1:
            raise BenchError(f"ivfpq {name} must be at least 1, got {v}")
    if dim is not None and m is not None and dim % int(m):
        raise BenchError(f"ivfpq m = {m} must divide the feature dimension {dim}; try m = {default_m(dim)}")
    if n is not None and nlist is not None and int(nlist) > n:
        raise BenchError(f"ivfpq nlist = {nlist} exceeds the {n} database points; use nlist <= {n} "
                         f"(e.g. {default_nlist(n)})")


class IvfPqIndex(KnnIndex):
    """IVF-PQ with exact re-ranking; the same interface as ``KnnIndex`` (search / add / replace / vectors).

    ``vectors``: the stored vectors used for re-ranking, anything indexable by a numpy id array (a float32
    array in memory, or ``defenses.dprime.FeatureShards`` on disk); ``train_size`` caps the points k-means
    and the PQ codebooks are trained on (a seeded sample), ``train_iters`` their k-means iterations."""

    def __init__(self, features: torch.Tensor | None = None, use_gpu: bool | None = None, nlist: int | None = None,
                 m: int | None = None, nprobe: int | None = None, refine: int | None = None,
                 vectors: Any = None, train_size: int = 100_000, seed: int = 0, add_chunk: int = 65_536,
                 train_iters: int = 10) -> None:
        faiss = faiss_module()
        if vectors is None:
            vectors = np.ascontiguousarray(features.detach().cpu().numpy().astype(np.float32))
        self._xb = vectors
        n, self.dim = int(vectors.shape[0]), int(vectors.shape[1])
        check_params("ivfpq", n, self.dim, nlist, m, nprobe, refine)
        self.nlist = int(nlist) if nlist is not None else default_nlist(n)
        self.m = int(m) if m is not None else default_m(self.dim)
        self.nprobe = int(nprobe) if nprobe is not None else DEFAULT_NPROBE
        self.refine = int(refine) if refine is not None else DEFAULT_REFINE
        quantizer = faiss.IndexFlatL2(self.dim)
        # 8-bit codes (256 centroids per sub-quantiser) need 256 training points; fewer (CI-sized D'): fewer bits
        self.nbits = 8 if n >= 256 else max(1, int(math.log2(n)))
        cpu_index = faiss.IndexIVFPQ(quantizer, self.dim, self.nlist, self.m, self.nbits)
        # 10 k-means iterations (faiss: 25): the exact re-ranking absorbs the coarser codebooks
        cpu_index.cp.seed, cpu_index.cp.niter = seed, train_iters
        cpu_index.pq.cp.seed, cpu_index.pq.cp.niter = seed, train_iters
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, train_size), replace=False))
        train = np.ascontiguousarray(np.asarray(vectors[sample], dtype=np.float32))
        want_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
        self.on_gpu = bool(want_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0)
        self.index = cpu_index
        if self.on_gpu:
            self._res = faiss.StandardGpuResources()
            co = faiss.GpuClonerOptions()
            co.useFloat16 = True  # GPU IVF-PQ needs float16 lookup tables beyond m = 48 bytes
            try:
                self.index = faiss.index_cpu_to_gpu(self._res, 0, cpu_index, co)
            except RuntimeError:  # an m the GPU kernels lack: stay exact on CPU rather than fail
                self.on_gpu = False
        t0 = time.perf_counter()
        self.index.train(train)
        t1 = time.perf_counter()
        self.index.nprobe = min(self.nprobe, self.nlist)
        self.add_chunk = add_chunk
        self._add_rows(0, n)
        self.timings = {"train_s": t1 - t0, "add_s": time.perf_counter() - t1, "train_points": len(train)}

    def _add_rows(self, start: int, stop: int) -> None:
        for i in range(start, stop, self.add_chunk):
            j = min(stop, i + self.add_chunk)
            self.index.add(np.ascontiguousarray(np.asarray(self._xb[i:j], dtype=np.float32)))

    def _exact(self, q: np.ndarray, ids: np.ndarray, block_bytes: int = 1 << 27) -> np.ndarray:
        """Squared L2 distances of each query to its candidate rows (-1 = none: +inf), a few queries at a
        time so the fetched rows stay under ``block_bytes``."""
        out = np.empty(ids.shape, dtype=np.float32)
        step = max(1, block_bytes // max(1, ids.shape[1] * self.dim * 4))
        for a in range(0, len(q), step):
            b = min(len(q), a + step)
            valid = ids[a:b] >= 0
            flat = np.where(valid, ids[a:b], 0).reshape(-1)
            order = np.argsort(flat, kind="stable")  # sorted reads: sequential on a memory-mapped shard
            rows = np.empty((flat.size, self.dim), dtype=np.float32)
            rows[order] = np.asarray(self._xb[flat[order]], dtype=np.float32)
            rows = rows.reshape(b - a, ids.shape[1], self.dim)
            d = (rows**2).sum(2) - 2 * np.einsum("qkd,qd->qk", rows, q[a:b]) + (q[a:b] ** 2).sum(1)[:, None]
            out[a:b] = np.where(valid, np.maximum(d, 0), np.inf)
        return out

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = np.ascontiguousarray(queries.detach().cpu().numpy().astype(np.float32))
        n = len(self)
        k = min(k, n)
        cand = min(n, self.refine * k + self.TIE_MARGIN)
        _, ids = self.index.search(q, cand)
        dist = self._exact(q, ids)
        short = (ids >= 0).sum(1) < k  # the probed cells held fewer than k points: search those exactly
        if short.any():
            full = np.arange(n)
            for r in np.nonzero(short)[0]:
                d = self._exact(q[r : r + 1], full[None])[0]
                top = np.argpartition(d, min(cand, n) - 1)[:cand]
                ids_r = np.full(ids.shape[1], -1, dtype=ids.dtype)
                ids_r[: len(top)] = top
                ids[r] = ids_r
                dist[r] = np.where(ids_r >= 0, d[np.maximum(ids_r, 0)], np.inf)
        order = np.lexsort((ids, dist), axis=1)[:, :k]  # by exact distance, then by row id
        dist, ids = np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)
        return torch.from_numpy(np.ascontiguousarray(dist)), torch.from_numpy(np.ascontiguousarray(ids)).long()

    def add(self, features: torch.Tensor) -> None:
        if not isinstance(self._xb, np.ndarray):
            raise BenchError("adding to an ivfpq index over on-disk features is not supported; rebuild the shards")
        n = len(self._xb)
        self._xb = np.concatenate([self._xb, features.detach().cpu().numpy().astype(np.float32)])
        self._add_rows(n, len(self._xb))

    def replace(self, ids: torch.Tensor, features: torch.Tensor) -> None:
        """Overwrite the vectors at ``ids``: re-encoded with the trained codebooks (no retraining)."""
        self._xb[ids.cpu().numpy()] = features.detach().cpu().numpy().astype(np.float32)
        self.index.reset()
        self._add_rows(0, len(self._xb))

    def vectors(self) -> torch.Tensor:
        return torch.from_numpy(np.array(self._xb[: len(self)], dtype=np.float32))


def build_index(features: torch.Tensor | None = None, index: str = "flat", nlist: int | None = None,
                m: int | None = None, nprobe: int | None = None, refine: int | None = None,
                use_gpu: bool | None = None, vectors: Any = None, seed: int = 0) -> KnnIndex:
    """The index a nearest-neighbour defense searches: ``"flat"`` (exact) or ``"ivfpq"`` (see module doc).
    ``vectors`` (ivfpq only): on-disk feature rows to index and re-rank with, instead of ``features``."""
    if index == "flat":
        check_params(index, nlist=nlist, m=m, nprobe=nprobe, refine=refine)
        if features is None:
            features = torch.from_numpy(np.asarray(vectors[: len(vectors)], dtype=np.float32))
        return KnnIndex(features, use_gpu=use_gpu)
    check_params(index)
    return IvfPqIndex(features, use_gpu=use_gpu, nlist=nlist, m=m, nprobe=nprobe, refine=refine,
                      vectors=vectors, seed=seed)
