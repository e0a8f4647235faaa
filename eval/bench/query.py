"""`lsr bench query`: our query processor against PISA, BMP, Seismic, Lucene impact search and a scipy brute
force, on the same 8-bit quantised document vectors, in one run.

Corpora (`NAME[:MODEL]`, MODEL the encoder whose vectors the corpus comes from or copies):
- the real sets, `scifact` and `nfcorpus` (their documents encoded once, cached);
- unclustered synthetic corpora of any size, `100k`, `1M`, drawn by `lsr.eval.bench.synthetic.synthesize`
  from scifact + nfcorpus (every term drawn independently: no topics);
- topical synthetic corpora, `topical-100k`, `topical-1M`, `topical-10M`, drawn by
  `lsr.eval.bench.synthetic.topical_chunks` from topics learned on the same documents (`TOPICS` topics,
  seed 0), generated and cached a chunk at a time (a folder of chunk files), with topical queries beside them.
MODEL is splade-tiny unless named (`topical-1M:lsr-ifree-tiny`: lsr-ifree-tiny's statistics).
Queries: the real encoded queries of scifact test and nfcorpus dev, and for a topical corpus also synthetic
queries drawn from its topics (rows say which, in `queries`). Every row: build time, index bytes per posting,
single-query mean and p99 latency (one call per query), QPS (one batch call), recall@10 against our exact
results; `mean_ms`, `p99_ms` and `qps` time the whole adapter (our query conversion and result parsing
included), `engine_ms`, `engine_p99_ms` and `engine_qps` the engine's own call only (see `Engine.run`).
Every results file describes each corpus it measured (`corpora`: generator, seed, topics, source vectors).
"""
from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lsr.index import IndexReader, IndexWriter, LsrError, Quantization, Searcher, SparseBatch
from lsr.index.reorder import BLOCK_SIZE as REORDER_BLOCK_SIZE, reorder_index
from lsr.index.search import keeps_exact
from lsr.index.storage import FORMAT_VERSION

from lsr.eval.engines import ENGINES, make_engine

from .measure import MemorySampler
from .results import atomic_write, write_json

QUERY_SETS = (("scifact", "test"), ("nfcorpus", "dev"))
TRAIN_QUERY_SETS = (("scifact", "train"), ("nfcorpus", "train"))  # what topical queries copy their statistics from
DEFAULT_MODEL = "splade-tiny"  # the source of every corpus not named otherwise (and of today's caches)
TOPICS, TOPICAL_SEED, TOPICAL_QUERIES, TOPICAL_CHUNK = 512, 0, 200, 250_000
CORPORA = ("scifact", "nfcorpus")  # the default corpora: the real sets
ENGINE_NAMES = ("lsr", *ENGINES)  # the default: every engine (ours first: the recall reference)
# what --engine takes: the engines, and "milvus-inverted", Milvus without its SPARSE_WAND collection (a second
# build of every document; at 100k it answered 4x slower than the inverted index), and one of Seismic's published
# configurations alone ("seismic:recall_95": each is its own index, minutes to build at 1M), or one PISA algorithm
ENGINE_CHOICES = (*ENGINE_NAMES, "milvus-inverted", "seismic:recall_90", "seismic:recall_95", "seismic:recall_99",
                  "pisa:maxscore", "pisa:block_max_wand", "lsr:impact", "lsr:blockmax")
# the impact algorithm's settings (index/impact_order.py): postings read per query (fixed numbers, so its work
# per query does not grow with the corpus) and candidates scored exactly; from a probe on the topical 1M corpus,
# and one more (2M, 4,000) set before the 10M run, in case 10x the documents needed twice the budget
IMPACT_CONFIGS = tuple({"algorithm": "impact", "budget": b, "rescore": c}
                       for b, c in ((250_000, 500), (500_000, 500), (500_000, 2000), (1_000_000, 2000),
                                    (2_000_000, 4000)))
# block-max over an index reordered by `index.reorder.cluster_order`: exact at 1, approximate below (BMP's alpha);
# blocks of 16 documents (`lsr index reorder`'s default since this comparison) and of 32 (the writer's default)
BLOCKMAX_CONFIGS = tuple({"algorithm": "blockmax", "reorder": True, "block_size": b, "prune_factor": f}
                         for b in (16, 32) for f in (1.0, 0.95, 0.9, 0.85, 0.8, 0.7))
CACHE, WORKDIR = "runs/bench-cache", "runs/bench-indexes"
# a topical corpus past this many postings is never held whole (10M documents of lsr-ifree-tiny: 1.3B postings,
# 10 GB of vectors): only our engine runs on it, indexed a chunk at a time by a writer that spills runs, into
# format 3 with the forward index (what the approximate modes read)
WHOLE_POSTINGS = 400_000_000
SCALE_FORMAT = {"format_version": 3, "forward_index": True}


def default_threads() -> list[int]:
    """1 and all cores."""
    return sorted({1, os.cpu_count() or 1})


def _cache_name(name: str, model: str) -> str:
    """splade-tiny keeps the cache's first names (`scifact-docs`); other models add theirs."""
    if model == DEFAULT_MODEL:
        return name
    stem, kind = name.rsplit("-", 1)
    return f"{stem}-{model.replace('/', '--')}-{kind}"


def _encode_cached(cache: Path, name: str, texts_fn, queries: bool, model: str = DEFAULT_MODEL) -> SparseBatch:
    path = cache / f"{_cache_name(name, model)}.npz"
    if path.is_file():
        return SparseBatch.load_npz(path)
    from lsr.encoders import load_sparse_encoder, resolve_model

    encoder = load_sparse_encoder(resolve_model(model), show_progress=True)
    texts = texts_fn()
    vectors = encoder.encode_queries(texts) if queries else encoder.encode_documents(texts)
    cache.mkdir(parents=True, exist_ok=True)
    vectors.save_npz(path)
    return vectors


def real_vectors(dataset: str, data_dir: str | Path | None, cache: Path, model: str = DEFAULT_MODEL) -> SparseBatch:
    from lsr.eval.beir import load_corpus

    return _encode_cached(cache, f"{dataset}-docs", lambda: [d.contents for d in
                                                             load_corpus(dataset, data_dir).corpus.values()], False,
                          model)


def query_vectors(data_dir: str | Path | None, cache: Path, model: str = DEFAULT_MODEL,
                  sets: tuple[tuple[str, str], ...] = QUERY_SETS) -> SparseBatch:
    from lsr.eval.beir import load_beir

    return SparseBatch.concat([_encode_cached(cache, f"{d}-{s}-queries", lambda d=d, s=s: list(
        load_beir(d, s, data_dir).queries.values()), True, model) for d, s in sets])


@dataclass(frozen=True)
class CorpusName:
    """`NAME[:MODEL]`: a real set, an unclustered size (`1M`) or a topical size (`topical-1M`), and its source."""

    text: str
    kind: str  # "real", "synthetic" or "topical"
    size: int | None
    dataset: str | None
    model: str

    @classmethod
    def parse(cls, text: str) -> CorpusName:
        name, _, model = text.partition(":")
        model = model or DEFAULT_MODEL
        if name.startswith("topical-"):
            size = parse_size(name[len("topical-"):])
            if size is None:
                raise LsrError(f"corpus {text!r}: topical-SIZE takes a size such as 100k or 1M")
            return cls(text, "topical", size, None, model)
        size = parse_size(name)
        return cls(text, "real" if size is None else "synthetic", size, name if size is None else None, model)


def parse_size(name: str) -> int | None:
    """'1M' -> 1_000_000, '100k' -> 100_000; None for a dataset name."""
    units = {"k": 1_000, "K": 1_000, "M": 1_000_000}
    if name[-1:] in units and name[:-1].isdigit():
        return int(name[:-1]) * units[name[-1]]
    return None


def _source_vectors(model: str, data_dir, cache: Path) -> SparseBatch:
    return SparseBatch.concat([real_vectors(d, data_dir, cache, model) for d, _ in QUERY_SETS])


def _source_record(model: str, cache: Path) -> dict[str, Any]:
    return {"model": model, "documents": [f"{d} corpus" for d, _ in QUERY_SETS],
            "files": [f"{_cache_name(f'{d}-docs', model)}.npz" for d, _ in QUERY_SETS]}


def topical_folder(corpus: CorpusName, cache: Path) -> Path:
    model = corpus.model.replace("/", "--")
    return cache / f"topical-{corpus.text.split(':')[0][len('topical-'):]}-{model}-t{TOPICS}-s{TOPICAL_SEED}"


def topical_model(model: str, data_dir, cache: Path):
    """The topics of `model`'s scifact + nfcorpus document vectors, with its train queries' statistics."""
    from .synthetic import fit_topics

    train = query_vectors(data_dir, cache, model, TRAIN_QUERY_SETS)
    return fit_topics(_source_vectors(model, data_dir, cache), TOPICS, train_queries=train, seed=TOPICAL_SEED)


def write_topical_corpus(corpus: CorpusName, data_dir, cache: Path, log=print) -> Path:
    """Generate a topical corpus into its cache folder a chunk at a time (one `chunk-NNNNN.npz` each, at most
    one chunk in memory), its topical queries (`queries.npz`, `query_topics.npy`) and `corpus.json` (the
    description; written last, so a folder without it is incomplete and generated again)."""
    import scipy.sparse as sp

    from .synthetic import topical_chunks, topical_queries

    folder = topical_folder(corpus, cache)
    if (folder / "corpus.json").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    larger = _larger_topical(corpus, cache)
    if larger is not None:
        return _cut_topical(corpus, larger, folder, start, log)
    model = topical_model(corpus.model, data_dir, cache)
    log(f"{corpus.text}: {model.num_topics} topics fitted in {time.perf_counter() - start:.1f} s")
    nnz, df = 0, np.zeros(model.vocab_size, dtype=np.int64)
    for i, chunk in enumerate(topical_chunks(model, corpus.size, TOPICAL_SEED, TOPICAL_CHUNK)):
        sp.save_npz(folder / f"chunk-{i:05d}.npz", chunk.to_scipy(), compressed=False)
        nnz += chunk.nnz
        df += np.bincount(chunk.term_ids, minlength=model.vocab_size)
        log(f"  chunk {i}: {len(chunk):,} documents ({time.perf_counter() - start:.0f} s)")
    queries, topics = topical_queries(model, TOPICAL_QUERIES, seed=TOPICAL_SEED)
    queries.save_npz(folder / "queries.npz")
    np.save(folder / "query_topics.npy", topics)
    real_df = model.global_df
    description = {
        "kind": "topical", "generator": "lsr.eval.bench.synthetic.topical_chunks", "seed": TOPICAL_SEED,
        "num_docs": corpus.size, "num_postings": int(nnz), "chunk_docs": TOPICAL_CHUNK,
        "topics": model.settings, "source": _source_record(corpus.model, cache),
        "queries": {"real": [f"{d} {s}" for d, s in QUERY_SETS], "topical": TOPICAL_QUERIES,
                    "topical_from": [f"{d} {s}" for d, s in TRAIN_QUERY_SETS]},
        "statistics": {"mean_nnz": nnz / corpus.size, "real_mean_nnz": float(model.lengths.mean()),
                       "df_correlation": float(np.corrcoef(real_df, df / corpus.size)[0, 1])},
        "generated_s": round(time.perf_counter() - start, 1)}
    atomic_write(folder / "corpus.json", json.dumps(description, indent=2).encode())
    return folder


def _larger_topical(corpus: CorpusName, cache: Path) -> Path | None:
    """A complete cached topical corpus of the same model, topics and seed with more documents, if any."""
    pattern = topical_folder(corpus, cache).name.replace(f"topical-{corpus.text.split(':')[0][len('topical-'):]}-",
                                                         "topical-*-", 1)
    for other in sorted(cache.glob(pattern)):
        try:
            description = json.loads((other / "corpus.json").read_text())
        except (OSError, ValueError):
            continue
        if description.get("num_docs", 0) > corpus.size and description.get("chunk_docs") == TOPICAL_CHUNK:
            return other
    return None


def _cut_topical(corpus: CorpusName, larger: Path, folder: Path, start: float, log) -> Path:
    """The first documents of a larger topical corpus: each document is drawn from its own seed, so they are
    the smaller corpus exactly (`topical_chunks`), and the topics and queries are the same; this saves fitting
    the topics again (minutes)."""
    import scipy.sparse as sp

    source = json.loads((larger / "corpus.json").read_text())
    nnz, left = 0, corpus.size
    for i in range(-(-corpus.size // TOPICAL_CHUNK)):
        chunk = sp.load_npz(larger / f"chunk-{i:05d}.npz").tocsr()[:min(left, TOPICAL_CHUNK)]
        sp.save_npz(folder / f"chunk-{i:05d}.npz", chunk, compressed=False)
        nnz += chunk.nnz
        left -= chunk.shape[0]
    for name in ("queries.npz", "query_topics.npy"):
        shutil.copyfile(larger / name, folder / name)
    description = {**source, "num_docs": corpus.size, "num_postings": int(nnz), "cut_from": larger.name,
                   "statistics": {"mean_nnz": nnz / corpus.size,
                                  "real_mean_nnz": source["statistics"]["real_mean_nnz"]},
                   "generated_s": round(time.perf_counter() - start, 1)}
    atomic_write(folder / "corpus.json", json.dumps(description, indent=2).encode())
    log(f"{corpus.text}: the first {corpus.size:,} documents of {larger.name}")
    return folder


def iter_corpus_chunks(name: str, data_dir, cache: Path):
    """A topical corpus' cached chunks, one SparseBatch at a time (generated first if need be)."""
    folder = write_topical_corpus(CorpusName.parse(name), data_dir, cache)
    for path in sorted(folder.glob("chunk-*.npz")):
        yield SparseBatch.load_npz(path)


def corpus_description(name: str, data_dir, cache: Path) -> dict[str, Any]:
    """What a corpus is, for the results file: generator, seed, topics, source vectors."""
    corpus = CorpusName.parse(name)
    if corpus.kind == "real":
        return {"kind": "real", "dataset": corpus.dataset, "model": corpus.model,
                "file": f"{_cache_name(f'{corpus.dataset}-docs', corpus.model)}.npz"}
    if corpus.kind == "synthetic":
        return {"kind": "synthetic (unclustered)", "generator": "lsr.eval.bench.synthetic.synthesize", "seed": 0,
                "num_docs": corpus.size, "source": _source_record(corpus.model, cache)}
    return json.loads((write_topical_corpus(corpus, data_dir, cache) / "corpus.json").read_text())


def corpus_queries(name: str, data_dir, cache: Path) -> dict[str, SparseBatch]:
    """The query sets a corpus is measured with: the real encoded queries of its model, and topical queries
    for a topical corpus."""
    corpus = CorpusName.parse(name)
    sets = {"real": query_vectors(data_dir, cache, corpus.model)}
    if corpus.kind == "topical":
        sets["topical"] = SparseBatch.load_npz(write_topical_corpus(corpus, data_dir, cache) / "queries.npz")
    return sets


def corpus_vectors(name: str, data_dir, cache: Path) -> SparseBatch:
    corpus = CorpusName.parse(name)
    if corpus.kind == "real":
        return real_vectors(corpus.dataset, data_dir, cache, corpus.model)
    if corpus.kind == "topical":
        return SparseBatch.concat(list(iter_corpus_chunks(name, data_dir, cache)))
    suffix = "" if corpus.model == DEFAULT_MODEL else f"-{corpus.model.replace('/', '--')}"
    path = cache / f"synthetic-{name.split(':')[0]}{suffix}.npz"
    if path.is_file():
        return SparseBatch.load_npz(path)
    from .synthetic import synthesize

    docs = synthesize(_source_vectors(corpus.model, data_dir, cache), corpus.size, seed=0)
    import scipy.sparse as sp

    sp.save_npz(path, docs.to_scipy(), compressed=False)
    return docs


def quantised(docs: SparseBatch, bits: int = 8, quantization: Quantization | None = None) -> SparseBatch:
    """The documents as integer impacts (stored as float32), the vectors every engine is given; the scale fitted
    to their largest weight unless given (a corpus read chunk by chunk shares one)."""
    quant = quantization or Quantization.fit(float(docs.weights.max()), bits)
    impacts = quant.quantize(docs.weights).astype(np.float32)
    return SparseBatch.from_scipy(type(docs.to_scipy())((impacts, docs.term_ids, docs.indptr),
                                                        shape=(len(docs), docs.vocab_size)))


class ChunkedCorpus:
    """A topical corpus too large to hold whole: its cached chunks, quantised one at a time with one scale
    (the whole corpus' largest weight, found in a first pass, as `quantised` fits it)."""

    def __init__(self, folder: Path, log=print) -> None:
        self.folder = Path(folder)
        self.description = json.loads((self.folder / "corpus.json").read_text())
        self.paths = sorted(self.folder.glob("chunk-*.npz"))
        self.num_docs, self.nnz = int(self.description["num_docs"]), int(self.description["num_postings"])
        start, largest, vocab = time.perf_counter(), 0.0, 0
        for path in self.paths:
            chunk = SparseBatch.load_npz(path)
            largest, vocab = max(largest, float(chunk.weights.max())), chunk.vocab_size
        self.vocab_size, self.quantization = vocab, Quantization.fit(largest, 8)
        log(f"  {self.folder.name}: {len(self.paths)} chunks, largest weight {largest:.4f} "
            f"({time.perf_counter() - start:.0f} s)")

    def __len__(self) -> int:
        return self.num_docs

    def chunks(self):
        for path in self.paths:
            yield quantised(SparseBatch.load_npz(path), quantization=self.quantization)

    def key(self) -> str:
        """What identifies the documents: the corpus is drawn from its description (seeded), so that and the
        scale name it."""
        text = json.dumps([{k: v for k, v in self.description.items() if k != "generated_s"},
                           self.quantization.to_dict()], sort_keys=True)
        return f"{self.num_docs}:{self.nnz}:{hashlib.sha1(text.encode()).hexdigest()}"


def bench_documents(corpus: str, data_dir, cache: Path, log=print) -> SparseBatch | ChunkedCorpus:
    """The quantised documents of a corpus: whole, or chunk by chunk past `WHOLE_POSTINGS` postings."""
    if CorpusName.parse(corpus).kind == "topical":
        description = corpus_description(corpus, data_dir, cache)
        if description["num_postings"] > WHOLE_POSTINGS:
            return ChunkedCorpus(write_topical_corpus(CorpusName.parse(corpus), data_dir, cache), log)
    return quantised(corpus_vectors(corpus, data_dir, cache))


class LsrEngine:
    """Our index and Searcher behind the engines' interface."""

    name = "lsr"

    def __init__(self, algorithm: str = "exhaustive", max_query_terms: int | None = None, prune_factor: float = 1.0,
                 budget: int | None = None, rescore: int | None = None, reorder: bool = False,
                 block_size: int = REORDER_BLOCK_SIZE, layout: dict | None = None):
        self.options = {"algorithm": algorithm, "max_query_terms": max_query_terms, "prune_factor": prune_factor,
                        "budget": budget, "rescore": rescore}
        self.mode = "exact" if keeps_exact(prune_factor, budget, max_query_terms) else "approximate"
        self.layout = dict(layout or {"format_version": FORMAT_VERSION})  # IndexWriter's format options
        if reorder and self.layout.get("format_version") == 3:  # blockmax reads the block maxima: written with it
            self.layout["forward_index"] = True
        self.reorder = bool(reorder)  # the documents in `cluster_order`: its own folder; hits map back in `collect`
        self.block_size = block_size  # reorder: the reordered index's block size
        self.file_order: Path | None = None  # reorder: an index of the same documents and layout to reorder, if built
        self._searcher: Searcher | None = None
        self._original: np.ndarray | None = None  # per doc_idx of a reordered index, the corpus' own doc_idx

    def build(self, docs: SparseBatch | ChunkedCorpus, workdir: Path, threads: int = 1) -> None:
        shutil.rmtree(workdir, ignore_errors=True)
        if self.reorder and self.file_order is not None:  # the run's exact configuration built it: reorder that
            reorder_index(self.file_order, workdir, block_size=self.block_size, log=print)
            self.open(workdir)
            return
        target = workdir.with_name(f"{workdir.name}.file-order") if self.reorder else workdir
        if self.reorder:  # a copy a killed run left
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(docs, ChunkedCorpus):  # integer impacts already: the writer keeps them (scale 1)
            with IndexWriter(target, vocab_size=docs.vocab_size, bits=8, quantization=Quantization(8, 1.0),
                             log=print, **self.layout) as writer:
                first = 0
                for chunk in tqdm(docs.chunks(), total=len(docs.paths), desc="indexing chunks", unit="chunk"):
                    writer.add(chunk, [str(i) for i in range(first, first + len(chunk))])
                    first += len(chunk)
        else:
            with IndexWriter(target, vocab_size=docs.vocab_size, bits=8, **self.layout) as writer:
                writer.add(docs, [str(i) for i in range(len(docs))])
        if self.reorder:
            try:
                reorder_index(target, workdir, block_size=self.block_size, log=print)
            finally:
                shutil.rmtree(target, ignore_errors=True)
        self.open(workdir)

    def build_options(self) -> dict:
        reorder = {"reorder": "cluster", "block_size": self.block_size}
        return {"bits": 8, **self.layout, **(reorder if self.reorder else {})}

    def open(self, workdir: Path) -> None:
        self._path = Path(workdir)
        reader = IndexReader(workdir, verify_checksums=False)
        self._original = np.fromiter(map(int, reader.doc_ids), np.int64, reader.num_docs) if self.reorder else None
        self._searcher = Searcher(reader, **self.options)

    def search(self, queries: SparseBatch, k: int, threads: int = 1) -> list[np.ndarray]:
        return self.collect(self.run(self.prepare(queries, k), k, threads), queries, k)

    def prepare(self, queries: SparseBatch, k: int) -> SparseBatch:
        return queries  # the Searcher takes the SparseBatch as it is

    def run(self, queries: SparseBatch, k: int, threads: int = 1) -> list:
        assert self._searcher is not None
        return self._searcher.search_batch_vectors(queries, k=k, threads=threads)

    def collect(self, raw: list, prepared: SparseBatch, k: int) -> list[np.ndarray]:
        if self._original is not None:
            return [self._original[idx] for idx, _ in raw]
        return [idx for idx, _ in raw]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._path.iterdir())


# Seismic's own best configurations for SPLADE (splade-cocondenser on MS MARCO v1, 8.8M passages, memory budget
# 1.5x the forward index; TusKANNy/seismic experiments/best_configs/msmarco-v1/splade-cocondenser/
# mem_budget_1.5/recall_{90,95,99}.toml; kmeans-doc-cut 15 in all three, knn 0)
SEISMIC_PUBLISHED = {
    "recall_90": {"n_postings": 2000, "centroid_fraction": 0.2, "summary_energy": 0.4, "max_fraction": 6.0,
                  "min_cluster_size": 2, "doc_cut": 15, "query_cut": 4, "heap_factor": 0.9},
    "recall_95": {"n_postings": 2000, "centroid_fraction": 0.2, "summary_energy": 0.5, "max_fraction": 4.0,
                  "min_cluster_size": 2, "doc_cut": 15, "query_cut": 10, "heap_factor": 0.9},
    "recall_99": {"n_postings": 3000, "centroid_fraction": 0.1, "summary_energy": 0.4, "max_fraction": 4.0,
                  "min_cluster_size": 10, "doc_cut": 15, "query_cut": 10, "heap_factor": 0.7},
}


def engine_configs(names: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The engines of one run: ours exact and approximate, and the others with their approximate knobs."""
    configs: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        if name == "lsr":  # exact (exhaustive first: the reference), then query-term pruning at recall ~0.99, ~0.96
            configs += [("lsr", {}), ("lsr", {"algorithm": "maxscore"})]
            configs += [("lsr", {"max_query_terms": m}) for m in (64, 40)]
            configs += [("lsr", dict(c)) for c in IMPACT_CONFIGS]
        elif name == "lsr:impact":  # exact (the recall reference), then the impact algorithm's settings
            configs += [("lsr", {}), *(("lsr", dict(c)) for c in IMPACT_CONFIGS)]
        elif name == "lsr:blockmax":  # exact in file order (the reference), then block-max over the reordered index
            configs += [("lsr", {}), *(("lsr", dict(c)) for c in BLOCKMAX_CONFIGS)]
        elif name == "pisa":  # MaxScore measured 7x faster than block-max WAND on these vectors (1M, 20 queries)
            configs += [("pisa", {"query_algorithm": a}) for a in ("maxscore", "block_max_wand")]
        elif name == "seismic":
            configs += [("seismic", dict(c)) for c in SEISMIC_PUBLISHED.values()]
        elif name.startswith("pisa:"):  # one algorithm (block-max WAND took 0.87 s a query at 1M)
            configs.append(("pisa", {"query_algorithm": name.split(":", 1)[1]}))
        elif name.startswith("seismic:"):
            configs.append(("seismic", dict(SEISMIC_PUBLISHED[name.split(":", 1)[1]])))
        elif name in ("milvus", "milvus-inverted"):  # exact, then drop ratios, then SPARSE_WAND (its own collection)
            configs += [("milvus", {}), ("milvus", {"drop_ratio_search": 0.2}), ("milvus", {"drop_ratio_search": 0.4})]
            if name == "milvus":
                configs += [("milvus", {"index_type": "SPARSE_WAND"}),
                            ("milvus", {"index_type": "SPARSE_WAND", "drop_ratio_search": 0.2})]
        else:
            configs.append((name, {}))
    return [c for i, c in enumerate(configs) if c not in configs[:i]]  # once each ("lsr" with "lsr:impact")


@dataclass
class Row:
    engine: str
    mode: str
    corpus: str
    threads: int
    mean_ms: float
    p99_ms: float
    qps: float
    recall_at_10: float
    build_s: float
    bytes_per_posting: float
    options: dict[str, Any] = field(default_factory=dict)
    index_reused: bool = False  # True: build_s was measured when an earlier run (or configuration) built it
    queries: str = "real"  # the query set: "real" (encoded scifact test + nfcorpus dev) or "topical"
    num_queries: int = 0
    build_options: dict[str, Any] = field(default_factory=dict)  # the index as built (ours: its format)
    # peak memory (MB, `measure.MemorySampler`: RSS with mapped file pages, and anonymous) of the build, on record
    # with it, and of opening the engine's index in this run (a reused index: the open alone)
    build_memory_mb: dict[str, float | None] = field(default_factory=dict)
    open_memory_mb: dict[str, float] = field(default_factory=dict)
    engine_ms: float = 0.0  # the engine's own call (Engine.run) per query, our glue left out; mean_ms has it
    engine_p99_ms: float = 0.0
    engine_qps: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["recall@10"] = d.pop("recall_at_10")
        return d


def _recall(got: list[np.ndarray], ref: list[np.ndarray], k: int) -> float:
    return float(np.mean([len(set(g[:k].tolist()) & set(r[:k].tolist())) / max(1, min(k, len(r)))
                          for g, r in zip(got, ref) if len(r)]))


def fingerprint(docs: SparseBatch) -> str:
    h = hashlib.sha1()
    for a in (docs.indptr, docs.term_ids, docs.weights):
        h.update(np.ascontiguousarray(a).data)
    return f"{len(docs)}:{docs.nnz}:{h.hexdigest()}"


BUILD_RECORD = "lsr-bench-build.json"


def open_or_build(engine, docs: SparseBatch, docs_key: str, workdir: Path, corpus: str, threads: int,
                  rebuild: bool = False, fresh: set[Path] | None = None) -> tuple[Path, float, bool]:
    """Open the index an earlier build of the same engine, build options and documents left in workdir (its
    build time is on record beside it, in FOLDER.lsr-bench-build.json: an index folder holds only the engine's
    files), else build it and record that. `rebuild` builds anew unless the folder is in `fresh` (built earlier
    in this run), which gains the folder. Returns (folder, build seconds, reused)."""
    options = engine.build_options()
    key = hashlib.sha1(json.dumps([engine.name, options], sort_keys=True).encode()).hexdigest()[:8]
    path = workdir / f"{corpus}-{engine.name}-{key}"
    record_path = workdir / f"{path.name}.{BUILD_RECORD}"
    fresh = set() if fresh is None else fresh
    if (not rebuild or path in fresh) and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("docs") == docs_key and record.get("options") == options:
            engine.open(path)
            return path, float(record["build_s"]), True
    start = time.perf_counter()
    with MemorySampler() as memory:
        engine.build(docs, path, threads=threads)
    build_s = time.perf_counter() - start
    atomic_write(record_path, json.dumps({"docs": docs_key, "options": options, "build_s": build_s, "threads": threads,
                                          "peak_rss_mb": memory.peak_rss_mb, "peak_anon_mb": memory.peak_anon_mb,
                                          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
    fresh.add(path)
    return path, build_s, False


def build_record(path: Path) -> dict[str, Any]:
    return json.loads((path.parent / f"{path.name}.{BUILD_RECORD}").read_text())


def bench_query(corpora: list[str] | None = None, engines: list[str] | None = None, threads: list[int] | None = None,
                *, k: int = 10, data_dir: str | Path | None = None, cache: str | Path = CACHE,
                workdir: str | Path = WORKDIR, max_queries: int | None = None,
                rebuild: bool = False, build_only: bool = False, index_format: int = FORMAT_VERSION,
                log=print) -> list[Row]:
    """One row per engine configuration and thread count (defaults: CORPORA, ENGINE_NAMES, default_threads()).
    Indexes are kept in workdir and reused by later runs on the same documents (with the build time measured
    when they were built) unless `rebuild`. Our index is written in `index_format` (3: with the forward index,
    `SCALE_FORMAT`, what a corpus indexed chunk by chunk always gets)."""
    if index_format not in (2, 3):
        raise LsrError(f"index_format must be 2 or 3, got {index_format}")
    corpora, engines = list(corpora or CORPORA), list(engines or ENGINE_NAMES)
    threads = list(threads or default_threads())
    cache, workdir = Path(cache), Path(workdir)
    rows: list[Row] = []
    for corpus in corpora:
        query_sets = corpus_queries(corpus, data_dir, cache)
        if max_queries:
            query_sets = {q: v.select(list(range(min(max_queries, len(v))))) for q, v in query_sets.items()}
        docs = bench_documents(corpus, data_dir, cache, log)
        chunked = isinstance(docs, ChunkedCorpus)
        log(f"{corpus}: {len(docs):,} documents, {docs.nnz:,} postings; queries "
            + ", ".join(f"{len(v)} {q}" for q, v in query_sets.items()))
        reference: dict[str, list[np.ndarray]] = {}  # per query set: our exhaustive top k
        docs_key = docs.key() if chunked else fingerprint(docs)
        fresh: set[Path] = set()  # built in this run: later configurations reuse them
        file_order: dict[str, Path] = {}  # our indexes in file order, by layout: what a reordered one is made from
        for name, options in engine_configs(engines):
            if chunked and name != "lsr":
                log(f"  {name}: not run ({docs.nnz:,} postings: only our engine indexes a corpus chunk by chunk)")
                continue
            layout = SCALE_FORMAT if chunked or index_format == 3 else {"format_version": index_format}
            engine = LsrEngine(**options, layout=layout) if name == "lsr" else make_engine(name, **options)
            if name == "lsr":
                engine.file_order = file_order.get(json.dumps(engine.layout, sort_keys=True)) if engine.reorder else None
            try:
                with MemorySampler() as memory:
                    path, build_s, reused = open_or_build(engine, docs, docs_key, workdir, corpus.replace(":", "@"),
                                                          max(threads), rebuild, fresh)
                opened = {"peak_rss_mb": memory.peak_rss_mb, "peak_anon_mb": memory.peak_anon_mb}
            except (ImportError, LsrError) as e:
                log(f"  {name}: not run ({e})")
                continue
            if name == "lsr" and not engine.reorder:
                file_order[json.dumps(engine.layout, sort_keys=True)] = path
            bytes_per_posting = engine.size_bytes() / max(docs.nnz, 1)
            log(f"  {name}: index {'reused' if reused else 'built'} at {path} (build {build_s:.1f} s, "
                f"{bytes_per_posting:.2f} B/posting)")
            if build_only:
                if hasattr(engine, "close"):
                    engine.close()
                continue
            # an engine whose Python API runs queries one after another on one thread gets one row
            for n_threads in threads if getattr(engine, "threaded", True) else sorted(threads)[:1]:
                for qset, queries in query_sets.items():
                    timing = time_engine(engine, queries, k, n_threads)
                    results = timing.pop("results")
                    if qset not in reference:  # the first config is ours, exact
                        reference[qset] = results
                    row = Row(name, engine.mode, corpus, n_threads, recall_at_10=_recall(results, reference[qset], k),
                              build_s=build_s, bytes_per_posting=bytes_per_posting, options=dict(options),
                              index_reused=reused, queries=qset, num_queries=len(queries),
                              build_options=engine.build_options(),
                              build_memory_mb={k: build_record(path).get(k) for k in ("peak_rss_mb", "peak_anon_mb")},
                              open_memory_mb=opened, **timing)
                    rows.append(row)
                    log(format_row(row))
            if hasattr(engine, "close"):
                engine.close()
            del engine
            gc.collect()  # at 1M documents an engine holds gigabytes: free it before the next one loads
    return rows


def time_engine(engine, queries: SparseBatch, k: int, threads: int) -> dict[str, Any]:
    """One call per query, then one batch call: each timed whole (the adapter's `prepare`, the engine's `run`,
    the adapter's `collect`) and the engine's `run` alone."""
    one = [queries.select([i]) for i in range(len(queries))]
    engine.search(one[0], k=k, threads=threads)  # warm-up (JIT, JVM, caches)
    whole, own, results = [], [], []
    for q in one:
        t0 = time.perf_counter()
        prepared = engine.prepare(q, k)
        t1 = time.perf_counter()
        raw = engine.run(prepared, k, threads)
        t2 = time.perf_counter()
        results.append(engine.collect(raw, prepared, k)[0])
        t3 = time.perf_counter()
        whole.append((t3 - t0) * 1e3)
        own.append((t2 - t1) * 1e3)
    t0 = time.perf_counter()
    prepared = engine.prepare(queries, k)
    t1 = time.perf_counter()
    raw = engine.run(prepared, k, threads)
    t2 = time.perf_counter()
    engine.collect(raw, prepared, k)
    t3 = time.perf_counter()
    return {"mean_ms": float(np.mean(whole)), "p99_ms": float(np.percentile(whole, 99)),
            "qps": len(queries) / (t3 - t0), "engine_ms": float(np.mean(own)),
            "engine_p99_ms": float(np.percentile(own, 99)), "engine_qps": len(queries) / (t2 - t1),
            "results": results}


def format_row(row: Row) -> str:
    return (f"  {row.engine:8} {row.mode:11} {row.queries:7} threads={row.threads} mean {row.mean_ms:8.2f} ms "
            f"(engine {row.engine_ms:8.2f})  p99 "
            f"{row.p99_ms:8.2f} ms  {row.qps:8.1f} QPS  recall@10 {row.recall_at_10:.3f}  build "
            f"{row.build_s:6.1f} s  {row.bytes_per_posting:5.2f} B/posting  {row.options or ''}")


def write_results(rows: list[Row], json_path: str | Path, plot_path: str | Path | None = None, *,
                  corpora: dict[str, dict] | None = None) -> None:
    """The rows as one JSON file (replaced whole), with the machine and what each corpus is (`corpora`, from
    `corpus_description`), and a latency-recall plot if asked."""
    doc = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count()},
           "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "corpora": corpora or {},
           "results": [r.to_json() for r in rows]}
    write_json(json_path, doc)
    if plot_path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = sorted({(r.corpus, r.queries) for r in rows})
        fig, axes = plt.subplots(1, len(panels) or 1, figsize=(6 * max(1, len(panels)), 4), squeeze=False)
        for ax, (corpus, qset) in zip(axes[0], panels):
            for engine in sorted({r.engine for r in rows}):
                pts = [(r.recall_at_10, r.engine_ms) for r in rows if (r.corpus, r.queries) == (corpus, qset)
                       and r.engine == engine and r.threads == 1]
                if pts:
                    ax.scatter(*zip(*pts), label=engine)
            ax.set(title=f"{corpus}, {qset} queries, 1 thread", xlabel="recall@10 vs exact",
                   ylabel="engine's own mean latency (ms)", yscale="log")
            ax.legend()
        fig.tight_layout()
        image = io.BytesIO()
        fig.savefig(image, format=Path(plot_path).suffix.lstrip(".") or "png", dpi=120)
        plt.close(fig)
        atomic_write(plot_path, image.getvalue())
