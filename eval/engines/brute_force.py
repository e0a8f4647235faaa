"""The exact baseline (the `scipy` engine of `lsr bench query`): the index's reference search,
`lsr.index.brute_force_search`, over the documents' impact matrix."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from lsr.index import LsrError, brute_force_search
from lsr.index.sparse import SparseBatch

from .common import Staged, dir_size, fresh_dir


class _ImpactMatrix:
    """What `brute_force_search` reads of an IndexReader, over a documents x terms matrix of impacts: scores
    come back on the impact scale (scale 1)."""

    quantization = SimpleNamespace(scale=1.0)

    def __init__(self, docs: sp.csr_matrix) -> None:
        self._docs = docs
        self.vocab_size = docs.shape[1]

    def doc_matrix(self) -> sp.csr_matrix:
        return self._docs


class ScipyEngine(Staged):
    """Exact baseline: the reference brute force (a sparse matrix-vector product and a full sort per query)."""

    name = "scipy"
    mode = "exact"
    threaded = False  # one matrix-vector product per query

    def __init__(self) -> None:
        self._docs: _ImpactMatrix | None = None
        self._path: Path | None = None

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        sp.save_npz(fresh_dir(Path(workdir)) / "docs.npz", docs.to_scipy(), compressed=False)
        self.open(workdir)

    def build_options(self) -> dict:
        return {}

    def open(self, workdir: Path) -> None:
        self._path = Path(workdir) / "docs.npz"
        self._docs = _ImpactMatrix(sp.load_npz(self._path).tocsr())

    def prepare(self, queries: SparseBatch, k: int) -> list:
        return [queries.row(i) for i in range(len(queries))]

    def run(self, prepared: list, k: int, threads: int = 1) -> list[np.ndarray]:
        if self._docs is None:
            raise LsrError("scipy engine: build() first")
        return [brute_force_search(self._docs, terms, weights, k=k)[0] for terms, weights in prepared]

    def collect(self, raw: list[np.ndarray], prepared: list, k: int) -> list[np.ndarray]:
        return raw

    def size_bytes(self) -> int:
        return dir_size(self._path) if self._path else 0
