"""Adapters for external learned-sparse engines (one module each), for a side-by-side benchmark on the same quantised vectors.

Every adapter has the `Engine` interface: `build(docs, workdir, threads)` indexes a `SparseBatch` whose weights
are integer impacts (0..255) stored as float32 into workdir and opens it; `open(workdir)` opens what an earlier
`build` with the same `build_options()` wrote there (the benchmark reuses indexes this way);
`search(queries, k, threads)` returns, per query, the row numbers of `docs` (doc_idx) ranked best first; `size_bytes()` is the on-disk index size.
`search` is three steps, which `lsr bench query` times apart: `prepare(queries, k)` (our glue: the queries as the
engine's API takes them, e.g. PISA's (index, {term: weight}) list, Lucene's Java query maps, Seismic's string
arrays), `run(prepared, k, threads)` (the engine's own call: its `engine_ms`) and `collect(raw, prepared, k)`
(our glue: its answer as ranked doc_idx arrays); `mean_ms` times all three. Terms are the string
form of the term ids ("t123", or "123" for Seismic, which addresses components by id).

How each engine sees the query (recall@10 is the caller's measure against our exact results):

- `scipy`  exact, float64 query weights as given: the index's reference `lsr.index.brute_force_search`
           (`docs_csr @ q`, a full sort, ties broken by doc_idx) over the documents' matrix.
- `pisa`   exact over integer query weights: PISA (pyterrier-pisa) "quantized" scorer = sum of
           query_weight * impact; the query is `round(w * query_scale)` (query terms that round to 0 are
           dropped; pyterrier-pisa repeats a term `weight` times, which is how PISA takes a query weight).
           Algorithm: `block_max_wand` by default (exact top-k), `maxscore` etc. selectable. Queries go to
           `_pisathon.retrieve`, the C++ batch call under pyterrier-pisa's transform, without its pandas frames.
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

- `milvus` Milvus Lite 2.5 (the Milvus C++ core) through pymilvus, the collection `lsr index build --backend
           milvus` writes: float32 query weights, integer impacts; `SPARSE_INVERTED_INDEX` with drop ratio 0 is
           exact, `drop_ratio_search` > 0 (the smallest query weights ignored) approximate, `SPARSE_WAND` its own
           build. One client call at a time (one row per configuration).

Modules: `common` (the `Engine` protocol and the helpers every adapter shares), `brute_force` (scipy), `pisa`,
`bmp`, `seismic`, `lucene`, `milvus`. Each imports its engine's package only when it builds or opens an index.
"""
from __future__ import annotations

from lsr.index import LsrError
from lsr.index.lucene import quantize_query

from .bmp import BmpEngine
from .brute_force import ScipyEngine
from .common import Engine
from .lucene import LuceneEngine
from .milvus import MilvusEngine
from .pisa import PisaEngine
from .seismic import SeismicEngine

__all__ = ["ENGINES", "BmpEngine", "Engine", "LsrError", "LuceneEngine", "MilvusEngine", "PisaEngine", "ScipyEngine",
           "SeismicEngine", "make_engine", "quantize_query"]

ENGINES = {"scipy": ScipyEngine, "pisa": PisaEngine, "bmp": BmpEngine, "seismic": SeismicEngine,
           "lucene": LuceneEngine, "milvus": MilvusEngine}


def make_engine(name: str, **kwargs) -> Engine:
    try:
        return ENGINES[name](**kwargs)
    except KeyError:
        raise LsrError(f"unknown engine {name!r}; choose from {sorted(ENGINES)}") from None
