"""Seismic through pyseismic-lsr (the `seismic` engine of `lsr bench query`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.index import LsrError
from lsr.index.sparse import SparseBatch

from .common import Staged, dir_size, fresh_dir, rank


class SeismicEngine(Staged):
    """Seismic (pyseismic-lsr): documents added by integer component id (`add_documents_by_id`, queries name
    component 42 as "42"), float32 impacts as given; approximate search with `query_cut` / `heap_factor`."""

    name = "seismic"
    mode = "approximate"

    def __init__(self, query_cut: int = 20, heap_factor: float = 0.8, n_postings: int = 3500,
                 centroid_fraction: float = 0.1, summary_energy: float = 0.4, doc_cut: int = 15,
                 min_cluster_size: int = 2, max_fraction: float = 1.5) -> None:
        self.query_cut, self.heap_factor = int(query_cut), float(heap_factor)
        self.build_args = dict(n_postings=int(n_postings), centroid_fraction=float(centroid_fraction),
                               summary_energy=float(summary_energy), doc_cut=int(doc_cut),
                               min_cluster_size=int(min_cluster_size), max_fraction=float(max_fraction))
        self._index = None
        self._path: Path | None = None

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        import seismic

        if docs.vocab_size > 65535:
            raise LsrError("seismic: SeismicIndex takes at most 65,535 components (SeismicIndexLV not wired)")
        dataset = seismic.SeismicDataset(dim=docs.vocab_size)
        dataset.add_documents_by_id([str(i) for i in range(len(docs))], docs.term_ids.astype(np.int64),
                                    docs.weights.astype(np.float32), docs.indptr.astype(np.int64))
        self._index = seismic.SeismicIndex.build_from_dataset(dataset, num_threads=max(1, threads),
                                                              **self.build_args)
        out = fresh_dir(Path(workdir))
        self._index.save(str(out / "seismic"))  # writes seismic.index.seismic
        self._path = out

    def build_options(self) -> dict:
        return dict(self.build_args)

    def open(self, workdir: Path) -> None:
        import seismic

        self._path = Path(workdir)
        self._index = seismic.SeismicIndex.load(str(self._path / "seismic.index.seismic"))

    def prepare(self, queries: SparseBatch, k: int) -> tuple:
        import seismic

        str_type = seismic.get_seismic_string()
        keep = [i for i in range(len(queries)) if queries.indptr[i + 1] > queries.indptr[i]]
        comps = [np.array([str(t) for t in queries.row(i)[0]], dtype=str_type) for i in keep]
        vals = [queries.row(i)[1].astype(np.float32) for i in keep]
        return len(queries), np.array([str(i) for i in keep], dtype=str_type), comps, vals

    def run(self, prepared: tuple, k: int, threads: int = 1) -> list:
        if self._index is None:
            raise LsrError("seismic engine: build() first")
        _, qids, comps, vals = prepared
        if not len(qids):
            return []
        return self._index.batch_search(qids, comps, vals, k, self.query_cut, self.heap_factor,
                                        num_threads=max(1, threads))

    def collect(self, raw: list, prepared: tuple, k: int) -> list[np.ndarray]:
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(prepared[0])]
        for hits in raw:  # one list per query, (query_id, score, doc_id) in arbitrary order
            if not hits:
                continue
            out[int(hits[0][0])] = rank(np.array([int(h[2]) for h in hits], dtype=np.int64),
                                        np.array([h[1] for h in hits], dtype=np.float64), k)
        return out

    def size_bytes(self) -> int:
        return dir_size(self._path) if self._path else 0
