"""Adapters for external learned-sparse engines, for a side-by-side benchmark on the same quantised vectors.

Every adapter has the `Engine` interface: `build(docs, workdir, threads)` indexes a `SparseBatch` whose weights
are integer impacts (0..255) stored as float32 into workdir and opens it; `open(workdir)` opens what an earlier
`build` with the same `build_options()` wrote there (the benchmark reuses indexes this way); `search(queries, k, threads)` returns, per query, the row
numbers of `docs` (doc_idx) ranked best first; `size_bytes()` is the on-disk index size. Terms are the string
form of the term ids ("t123", or "123" for Seismic, which addresses components by id).

How each engine sees the query (recall@10 is the caller's measure against our exact results):

- `scipy`  exact, float64 query weights as given: `docs_csr @ q`, ties broken by doc_idx.
- `pisa`   exact over integer query weights: PISA (pyterrier-pisa) "quantized" scorer = sum of
           query_weight * impact; the query is `round(w * query_scale)` (query terms that round to 0 are
           dropped; pyterrier-pisa repeats a term `weight` times, which is how PISA takes a query weight).
           Algorithm: `block_max_wand` by default (exact top-k), `maxscore` etc. selectable.
- `lucene` exact over integer query weights: Anserini's SimpleImpactSearcher (the Java class behind
           pyserini's LuceneImpactSearcher), score = sum of query_weight * impact, the query is
           `round(w * query_scale)` as for PISA (Lucene impact queries take integers only).
- `bmp`    Block-Max Pruning (Rust). Float query weights are passed as they are; BMP quantises the query
           internally (scores come back ~32/max(q) times the true ones, i.e. the query is rescaled to max 32
           and rounded), so ranking is approximate even at alpha=beta=1 (recall@10 0.97 on the test corpus).
           With few blocks it misses hits and returns fewer than k: 20 docs at bsize 32 return nothing, 50
           docs give recall 0.62; from a few hundred docs on it behaves.
- `seismic` approximate by design (pruned, clustered posting lists with summaries); float32 query weights as
           given. Knobs: build `n_postings`, `centroid_fraction`, `summary_energy`, `doc_cut`; search
           `query_cut` (heaviest query terms kept; more = higher recall) and `heap_factor` (a block is skipped
           when its summary score is below heap_factor * the k-th best: LOWER = more blocks, higher recall;
           measured on the test corpus at query_cut 20: 0.7 -> 0.988, 0.8 -> 0.98, 1.0 -> 0.96).
           `batch_search` returns hits in arbitrary order: sorted here by (score desc, doc_idx asc).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from lsr.index.lucene import lucene_query, quantize_query, term_token
from lsr.index import LsrError
from lsr.index.sparse import SparseBatch


@runtime_checkable
class Engine(Protocol):
    name: str
    mode: str  # "exact" or "approximate"

    def build(self, docs: SparseBatch, workdir: Path, threads: int) -> None: ...

    def build_options(self) -> dict: ...  # what shapes the index (search-only knobs left out)

    def open(self, workdir: Path) -> None: ...  # open an index that `build` wrote into workdir

    def search(self, queries: SparseBatch, k: int, threads: int) -> list[np.ndarray]: ...

    def size_bytes(self) -> int: ...


# -- helpers -----------------------------------------------------------------------------------------
def _dir_size(path: Path, exclude: tuple[str, ...] = ()) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name not in exclude)


def _fresh_dir(path: Path) -> Path:
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _int_impacts(docs: SparseBatch) -> np.ndarray:
    impacts = np.rint(docs.weights).astype(np.int64)
    if len(impacts) and (impacts.min() < 0 or not np.allclose(impacts, docs.weights)):
        raise LsrError("engines take integer impacts >= 0 (quantise the documents first)")
    return impacts


def _rank(doc_idx: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Order hits by (score desc, doc_idx asc), keep the first k."""
    doc_idx = np.asarray(doc_idx, dtype=np.int64)
    order = np.lexsort((doc_idx, -np.asarray(scores, dtype=np.float64)))
    return doc_idx[order][:k]


def _term_dicts(docs: SparseBatch, impacts: np.ndarray):
    """Per document, in row order: {term string: integer impact}, zero impacts left out."""
    for i in range(len(docs)):
        lo, hi = docs.indptr[i], docs.indptr[i + 1]
        yield {term_token(t): int(w) for t, w in zip(docs.term_ids[lo:hi], impacts[lo:hi]) if w > 0}


# -- scipy: brute force ------------------------------------------------------------------------------
class ScipyEngine:
    """Exact baseline: a sparse matrix-vector product per query, top-k by argpartition + sort."""

    name = "scipy"
    mode = "exact"
    threaded = False  # one matrix-vector product per query

    def __init__(self) -> None:
        self._docs: sp.csr_matrix | None = None
        self._path: Path | None = None

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        sp.save_npz(_fresh_dir(Path(workdir)) / "docs.npz", docs.to_scipy(), compressed=False)
        self.open(workdir)

    def build_options(self) -> dict:
        return {}

    def open(self, workdir: Path) -> None:
        self._path = Path(workdir) / "docs.npz"
        self._docs = sp.load_npz(self._path).tocsr().astype(np.float64)

    def search(self, queries: SparseBatch, k: int, threads: int = 1) -> list[np.ndarray]:
        if self._docs is None:
            raise LsrError("scipy engine: build() first")
        out = []
        for i in range(len(queries)):
            terms, weights = queries.row(i)
            q = np.zeros(self._docs.shape[1], dtype=np.float64)
            np.add.at(q, terms.astype(np.int64), weights.astype(np.float64))
            scores = self._docs @ q
            cand = np.flatnonzero(scores > 0)
            if len(cand) > k:
                cand = cand[np.argpartition(-scores[cand], k - 1)[:k]]
                kth = scores[cand].min()  # keep every tie at the k-th score, then break ties by doc_idx
                cand = np.flatnonzero(scores >= kth)
            out.append(_rank(cand, scores[cand], k))
        return out

    def size_bytes(self) -> int:
        return _dir_size(self._path) if self._path else 0


# -- PISA (pyterrier-pisa) ---------------------------------------------------------------------------
class PisaEngine:
    """PISA through pyterrier-pisa: documents indexed as pre-computed impacts (`toks` dicts, stemmer none, no
    stopwords, `scale=1` so impacts go in unchanged), retrieved with the `quantized` scorer (dot product) and
    query-weighted integer queries."""

    name = "pisa"
    mode = "exact"

    def __init__(self, query_scale: float = 100.0, query_algorithm: str = "block_max_wand",
                 index_encoding: str = "block_simdbp") -> None:
        self.query_scale = float(query_scale)
        self.query_algorithm = query_algorithm
        self.index_encoding = index_encoding
        self._index = None
        self._path: Path | None = None
        self._retrievers: dict[tuple[int, int], object] = {}

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        from pyterrier_pisa import PisaIndex  # PISA's C++ progress goes to stderr (its log_level() is broken in 0.4.9)

        impacts = _int_impacts(docs)
        self._path = _fresh_dir(Path(workdir)) / "pisa"

        def gen():
            for i, toks in enumerate(_term_dicts(docs, impacts)):
                yield {"docno": str(i), "toks": {t: float(w) for t, w in toks.items()}}

        index = PisaIndex(str(self._path), stemmer="none", stops="none", index_encoding=self.index_encoding,
                          threads=max(1, threads))
        index.toks_indexer(scale=1.0).index(gen())
        self.open(workdir)

    def build_options(self) -> dict:
        return {"index_encoding": self.index_encoding}

    def open(self, workdir: Path) -> None:
        from pyterrier_pisa import PisaIndex

        self._path = Path(workdir) / "pisa"
        self._index = PisaIndex(str(self._path), stemmer="none", stops="none", index_encoding=self.index_encoding)
        self._retrievers = {}
        self._retriever(10, 1)  # compresses the index and builds the block-max (wand) data if not yet done

    def _retriever(self, k: int, threads: int):
        key = (k, max(1, threads))
        if key not in self._retrievers:
            self._retrievers[key] = self._index.quantized(num_results=k, threads=max(1, threads),
                                                          query_algorithm=self.query_algorithm,
                                                          query_weighted=True, toks_scale=1.0)
        return self._retrievers[key]

    def search(self, queries: SparseBatch, k: int, threads: int = 1) -> list[np.ndarray]:
        import pandas as pd

        if self._index is None:
            raise LsrError("pisa engine: build() first")
        rows = []
        for i in range(len(queries)):
            terms, weights = queries.row(i)
            qw = quantize_query(weights, self.query_scale)
            rows.append({"qid": str(i), "query_toks": {term_token(t): float(w) for t, w in zip(terms, qw) if w > 0}})
        res = self._retriever(k, threads)(pd.DataFrame(rows, columns=["qid", "query_toks"]))
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(len(queries))]
        for qid, group in res.groupby("qid", sort=False):
            out[int(qid)] = _rank(group["docno"].astype(np.int64).to_numpy(), group["score"].to_numpy(), k)
        return out

    def size_bytes(self) -> int:
        # the compressed index, block-max (wand) data and binary lexicons; not the build inputs (the uncompressed
        # `inv.*` postings and the text lexicons `fwd.documents` / `fwd.terms`)
        build_inputs = ("inv.docs", "inv.freqs", "inv.sizes", "fwd.documents", "fwd.terms")
        return _dir_size(self._path, exclude=build_inputs) if self._path else 0


# -- BMP ---------------------------------------------------------------------------------------------
class BmpEngine:
    """Block-Max Pruning (bmp): documents as u8 impacts through `bmp.Indexer`, queried with `Searcher.search`.
    `alpha` < 1 prunes blocks more aggressively, `beta` < 1 drops light query terms (both 1.0 = BMP's
    'exact' setting, still over its internally quantised query)."""

    name = "bmp"
    mode = "approximate"
    threaded = False  # bmp.Searcher.search takes one query and no thread count

    def __init__(self, bsize: int = 32, alpha: float = 1.0, beta: float = 1.0, compress_range: bool = False) -> None:
        self.bsize, self.alpha, self.beta, self.compress_range = int(bsize), float(alpha), float(beta), compress_range
        self._searcher = None
        self._path: Path | None = None

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        from bmp import Indexer

        impacts = _int_impacts(docs)
        if len(impacts) and impacts.max() > 255:
            raise LsrError("bmp takes u8 impacts (0..255)")
        self._path = _fresh_dir(Path(workdir)) / "index.bmp"
        indexer = Indexer(str(self._path), self.bsize, self.compress_range)
        for i, vector in enumerate(_term_dicts(docs, impacts)):
            indexer.add_document(str(i), vector)
        indexer.finish()
        self.open(workdir)

    def build_options(self) -> dict:
        return {"bsize": self.bsize, "compress_range": self.compress_range}

    def open(self, workdir: Path) -> None:
        from bmp import Searcher

        self._path = Path(workdir) / "index.bmp"
        self._searcher = Searcher(str(self._path))

    def search(self, queries: SparseBatch, k: int, threads: int = 1) -> list[np.ndarray]:
        if self._searcher is None:
            raise LsrError("bmp engine: build() first")
        out = []
        for i in range(len(queries)):
            terms, weights = queries.row(i)
            q = {term_token(t): float(w) for t, w in zip(terms, weights) if w > 0}
            if not q:
                out.append(np.zeros(0, dtype=np.int64))
                continue
            docnos, scores = self._searcher.search(q, k, self.alpha, self.beta)
            out.append(_rank(np.array([int(d) for d in docnos], dtype=np.int64), np.asarray(scores), k))
        return out

    def size_bytes(self) -> int:
        return _dir_size(self._path) if self._path else 0


# -- Seismic -----------------------------------------------------------------------------------------
class SeismicEngine:
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
        out = _fresh_dir(Path(workdir))
        self._index.save(str(out / "seismic"))  # writes seismic.index.seismic
        self._path = out

    def build_options(self) -> dict:
        return dict(self.build_args)

    def open(self, workdir: Path) -> None:
        import seismic

        self._path = Path(workdir)
        self._index = seismic.SeismicIndex.load(str(self._path / "seismic.index.seismic"))

    def search(self, queries: SparseBatch, k: int, threads: int = 1) -> list[np.ndarray]:
        import seismic

        if self._index is None:
            raise LsrError("seismic engine: build() first")
        str_type = seismic.get_seismic_string()
        keep = [i for i in range(len(queries)) if queries.indptr[i + 1] > queries.indptr[i]]
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(len(queries))]
        if not keep:
            return out
        comps = [np.array([str(t) for t in queries.row(i)[0]], dtype=str_type) for i in keep]
        vals = [queries.row(i)[1].astype(np.float32) for i in keep]
        results = self._index.batch_search(np.array([str(i) for i in keep], dtype=str_type), comps, vals, k,
                                           self.query_cut, self.heap_factor, num_threads=max(1, threads))
        for hits in results:  # one list per query, (query_id, score, doc_id) in arbitrary order
            if not hits:
                continue
            qi = int(hits[0][0])
            out[qi] = _rank(np.array([int(h[2]) for h in hits], dtype=np.int64),
                            np.array([h[1] for h in hits], dtype=np.float64), k)
        return out

    def size_bytes(self) -> int:
        return _dir_size(self._path) if self._path else 0


# -- Lucene (Anserini impact index through pyserini) -------------------------------------------------
class LuceneEngine:
    """Lucene impact search: the index the Lucene backend writes (`lsr.index.lucene.write_lucene_index`), searched
    by SimpleImpactSearcher (the Java searcher under pyserini's LuceneImpactSearcher) with integer query weights
    `round(w * query_scale)` (Lucene's exact top-k over that integer query)."""

    name = "lucene"
    mode = "exact"

    def __init__(self, query_scale: float = 100.0) -> None:
        self.query_scale = float(query_scale)
        self._searcher = None
        self._path: Path | None = None

    def build(self, docs: SparseBatch, workdir: Path, threads: int = 1) -> None:
        from lsr.index.lucene import write_lucene_index

        _int_impacts(docs)
        write_lucene_index(_fresh_dir(Path(workdir)), docs.to_scipy(), [str(i) for i in range(len(docs))],
                           threads=threads, name="index")
        self.open(workdir)

    def build_options(self) -> dict:
        return {}

    def open(self, workdir: Path) -> None:
        from lsr.index.lucene import prepare_jvm

        prepare_jvm()
        from pyserini.pyclass import autoclass

        self.close()
        self._path = Path(workdir) / "index"
        self._searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(str(self._path))

    def search(self, queries: SparseBatch, k: int, threads: int = 1) -> list[np.ndarray]:
        from pyserini.pyclass import JArrayList

        if self._searcher is None:
            raise LsrError("lucene engine: build() first")
        jqueries, jqids, asked = JArrayList(), JArrayList(), []
        for i in range(len(queries)):
            jq = lucene_query(*queries.row(i), scale=self.query_scale)
            if jq.size():
                jqueries.add(jq)
                jqids.add(str(i))
                asked.append(i)
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(len(queries))]
        if not asked:
            return out
        results = self._searcher.batch_search(jqueries, jqids, int(k), int(max(1, threads)))
        for entry in results.entrySet().toArray():
            hits = entry.getValue()
            out[int(entry.getKey())] = _rank(np.array([int(h.docid) for h in hits], dtype=np.int64),
                                             np.array([h.score for h in hits], dtype=np.float64), k)
        return out

    def size_bytes(self) -> int:
        return _dir_size(self._path) if self._path else 0

    def close(self) -> None:
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None


ENGINES = {"scipy": ScipyEngine, "pisa": PisaEngine, "bmp": BmpEngine, "seismic": SeismicEngine,
           "lucene": LuceneEngine}


def make_engine(name: str, **kwargs) -> Engine:
    try:
        return ENGINES[name](**kwargs)
    except KeyError:
        raise LsrError(f"unknown engine {name!r}; choose from {sorted(ENGINES)}") from None
