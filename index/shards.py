"""Sharded indexes: one folder holding a manifest and one lsr index per consecutive range of documents, searched
as one index.

Layout:

    DIR/meta.json         format "lsr-sharded-index": num_docs, vocab_size, quantization, info (model, ...),
                          and per shard its name, document range [doc_start, doc_end) and the SHA-256 of its
                          meta.json (which covers every file of the shard: a chain of checksums)
    DIR/shards/00000/     a complete lsr index (meta.json, postings, doc_ids.json, docs.jsonl, dense store)
    DIR/shards/00001/     ...

Global doc_idx is the corpus order: shard s holds documents [doc_start, doc_end) with local doc_idx
`global - doc_start`. Every shard has the same vocabulary, quantisation (one scale: scores stay comparable),
model and parts (dense store of one model, documents), which the manifest is checked against when the folder
opens; a shard that fails its own checks makes the folder refuse to open, naming the shard.

Search (`ShardSet`): every shard returns its own exact top k by (score descending, local doc_idx ascending),
and the lists are merged by (score descending, global doc_idx ascending), so the result equals a single index
over the same documents exactly: same hits, same order, same scores (a document's score only depends on its
own postings and the shared scale). A plain index folder is a `ShardSet` of one shard, so the search service
has one code path. Shards are searched in parallel threads in one process (`LocalShard`), or on Ray actors
(`lsr.index.ray_shards`), behind the same `ShardHandle` interface.

Writing (`ShardedWriter`): each shard is written by `IndexWriter` with the shared quantisation into the staged
folder; the manifest is written last, the whole folder opened with every check, then published in one rename,
as a plain build is. `merge_indexes` folds plain or sharded indexes into one sharded folder (shards hard-linked,
nothing re-encoded) or re-shards them into N new shards.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from .dense import DenseStore, dense_part, has_dense_store, read_dense_meta
from .documents import StoredDocument, documents_part, read_documents
from .errors import IndexFormatError, LsrError
from .files import StagedFolder, check_writable_target, failpoint, write_file
from .folder import IndexWriter, check_folder
from .hits import ranking_order
from .lucene import index_backend
from .quantize import Quantization
from .search import SearchOptions
from .shard import LocalShard, ShardHandle
from .sparse import SparseBatch
from .storage import META, SHARDED_FORMAT, IndexReader, _meta_checksum, is_lsr_index, read_checked_meta
from .termstats import STATS_KEY, CollectionStats, collection_stats_part, read_collection_stats

SHARDED_VERSION = 1
SHARDS_DIR = "shards"
Log = Callable[[str], None]


def shard_name(i: int) -> str:
    return f"{SHARDS_DIR}/{i:05d}"


def shard_ranges(num_docs: int, shards: int) -> list[tuple[int, int]]:
    """`shards` consecutive document ranges covering [0, num_docs), sizes differing by at most one."""
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise LsrError(f"--shards must be a positive integer, got {shards!r}")
    if shards > num_docs:
        raise LsrError(f"--shards {shards} is more than the {num_docs} documents (every shard needs one)")
    bounds = np.linspace(0, num_docs, shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def is_sharded_index(path: str | Path) -> bool:
    try:
        meta = json.loads((Path(path) / META).read_text(encoding="utf-8")[:1 << 20])
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("format") == SHARDED_FORMAT


@dataclass(frozen=True)
class ShardRecord:
    name: str
    doc_start: int
    doc_end: int
    meta_sha256: str


def read_manifest(path: Path) -> tuple[dict, list[ShardRecord]]:
    """The checked manifest of a sharded folder and its shard records (IndexFormatError naming the problem)."""
    if not path.is_dir():
        raise IndexFormatError(f"{path}: no such index folder")
    meta = read_checked_meta(path, META, fmt=SHARDED_FORMAT, version=SHARDED_VERSION, what="sharded index",
                             missing="not an lsr index, or one whose write never finished")
    shards = meta.get("shards")
    ok = (isinstance(meta.get("num_docs"), int) and isinstance(meta.get("vocab_size"), int)
          and isinstance(meta.get("quantization"), dict) and isinstance(meta.get("info"), dict)
          and isinstance(shards, list) and shards)
    records: list[ShardRecord] = []
    for s in shards if ok else []:
        if not (isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("doc_start"), int)
                and isinstance(s.get("doc_end"), int) and isinstance(s.get("meta_sha256"), str)):
            ok = False
            break
        records.append(ShardRecord(s["name"], s["doc_start"], s["doc_end"], s["meta_sha256"]))
    if not ok:
        raise IndexFormatError(f"{path}: {META}: missing or mistyped fields (corrupted sharded index)")
    expected = 0
    for i, r in enumerate(records):
        if r.name != shard_name(i) or r.doc_start != expected or r.doc_end <= r.doc_start:
            raise IndexFormatError(f"{path}: {META}: shard {r.name!r} covers documents [{r.doc_start}, {r.doc_end}), "
                                   f"expected a non-empty range from {expected} (overlapping or missing ranges)")
        expected = r.doc_end
    if expected != meta["num_docs"]:
        raise IndexFormatError(f"{path}: {META}: the shards cover {expected} documents, the manifest says "
                               f"{meta['num_docs']}")
    return meta, records


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _agreement(reader: IndexReader, path: Path) -> dict[str, Any]:
    """What every shard of one index must share."""
    dense = read_dense_meta(path) if has_dense_store(path) else None
    return {"vocab_size": reader.vocab_size, "quantization": reader.meta["quantization"],
            "block_size": reader.block_size, "model": reader.info.get("model"),
            "max_length": reader.info.get("max_length"), "backend": index_backend(reader),
            "dense": None if dense is None else {"model": dense["info"].get("model"), "dim": dense["dim"]},
            "documents": (path / "docs.jsonl").is_file()}


def _check_agree(first: dict[str, Any], other: dict[str, Any], where: str) -> None:
    for key, value in first.items():
        if other[key] != value:
            raise LsrError(f"{where}its {key} is {other[key]!r}, the other shards' {value!r} (shards of one index "
                           "need the same model, quantisation and parts)")


# -- search over shards ------------------------------------------------------------------------------------
class ShardSet:
    """The shards of one index as one: global doc_idx = shard start + local doc_idx; every top k is each shard's
    top k merged by (score descending, global doc_idx ascending). Thread-safe."""

    def __init__(self, path: Path, meta: dict, handles: Sequence[ShardHandle], starts: Sequence[int],
                 doc_ids: list[str], documents: dict[str, StoredDocument], dense_info: dict | None,
                 dense_dim: int | None, dense_backend: str | None, size_bytes: int, postings_per_term: np.ndarray,
                 engine: str = "local") -> None:
        self.path = path
        self.meta = meta  # num_docs, vocab_size, num_postings, quantization, info (the manifest's or the index's)
        self.handles = list(handles)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.doc_ids = doc_ids
        self.documents = documents
        self.dense_info = dense_info
        self.dense_dim = dense_dim
        self.dense_backend = dense_backend
        self._size_bytes = size_bytes
        self.postings_per_term = postings_per_term
        self.engine = engine
        self._index = {d: i for i, d in enumerate(doc_ids)}
        self._ends = np.append(self.starts[1:], len(doc_ids))

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def num_shards(self) -> int:
        return len(self.starts)

    @property
    def info(self) -> dict[str, Any]:
        return self.meta.get("info", {})

    @property
    def has_dense(self) -> bool:
        return self.dense_info is not None

    def size_bytes(self) -> int:
        return self._size_bytes

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._index

    def rows(self, doc_ids: Sequence[str]) -> np.ndarray:
        return np.array([self._index[d] for d in doc_ids], dtype=np.int64)

    def _top_k(self, method: str, k: int, *args: Any) -> tuple[np.ndarray, np.ndarray]:
        futures = [h.submit(method, *args, k) for h in self.handles]
        parts = [f.result() for f in futures]
        if len(parts) == 1:
            return parts[0]
        idx = np.concatenate([p[0] + s for p, s in zip(parts, self.starts)])
        scores = np.concatenate([p[1] for p in parts])
        order = ranking_order(idx, scores)[:k]
        return idx[order], scores[order]

    def sparse(self, terms: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._top_k("sparse", k, terms, weights)

    def dense(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._top_k("dense_search", k, vector)

    def hybrid(self, terms: np.ndarray, weights: np.ndarray, vector: np.ndarray, k: int, fusion: str,
               alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """The fused top k, fused in the backend (Milvus's hybrid search) over one shard: fused scores of
        different collections do not merge into one ranking."""
        if self.num_shards != 1:
            raise LsrError(f"{self.path}: fusion in the backend runs over one collection; this index has "
                           f"{self.num_shards} shards (fuse in lsr)")
        return self._top_k("hybrid", k, terms, weights, vector, fusion, alpha)

    def _gather(self, method: str, rows: np.ndarray) -> list[Any]:
        """Per shard holding some of `rows` (global), `method(local rows)`; with the positions they fill."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(self.handles) == 1 or not len(rows):
            return [(np.arange(len(rows)), self.handles[0].submit(method, rows).result())]
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        jobs = []
        for s in np.unique(shard):
            where = np.flatnonzero(shard == s)
            jobs.append((where, self.handles[s].submit(method, rows[where] - self.starts[s])))
        return [(where, future.result()) for where, future in jobs]

    def feedback_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Feedback vectors of global rows, in the order asked, each from the shard that holds it."""
        parts = self._gather("feedback_rows", rows)
        if len(parts) == 1:
            return parts[0][1]
        order = np.concatenate([where for where, _ in parts])
        stacked = sp.vstack([m for _, m in parts], format="csr")
        return stacked[np.argsort(order, kind="stable")]

    def dense_rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), int(self.dense_dim or 0)), dtype=np.float32)
        for where, vectors in self._gather("dense_rows", rows):
            out[where] = vectors
        return out

    def close(self) -> None:
        """Give back the threads and what the shards hold outside this process (idempotent)."""
        for h in self.handles:
            pool = getattr(h, "_pool", None)
            if pool is not None:
                pool.shutdown(wait=False)
                h._pool = None
            if hasattr(h, "close"):
                h.close()
        self.handles = []


def _plain_meta(reader: IndexReader) -> dict[str, Any]:
    keys = ("num_docs", "vocab_size", "num_postings", "quantization", "info", "format", "format_version")
    return {k: reader.meta[k] for k in keys if k in reader.meta}


def open_shards(path: str | Path, *, verify_checksums: bool = True, dense_backend: str = "auto",
                threads: int | None = None, engine: str = "local", ray_address: str | None = None,
                search_options: SearchOptions = SearchOptions()) -> ShardSet:
    """An index folder, plain or sharded, opened for search. `engine="ray"` places the shards on Ray actors
    (this process keeps the doc ids and documents); "local" searches them in parallel threads.
    `search_options`: how each shard's sparse list is searched (`open_searcher`)."""
    path = Path(path)
    if not is_sharded_index(path):
        if engine == "ray":
            raise LsrError(f"{path}: --engine ray serves a sharded index (build one with --shards N, or "
                           "`lsr index merge OUT DIR --shards N`)")
        shard = LocalShard(path, verify_checksums=verify_checksums, dense_backend=dense_backend,
                           search_options=search_options)
        r = shard.reader
        return ShardSet(path, _plain_meta(r), [shard], [0], r.doc_ids, read_documents(path, r.doc_ids),
                        shard.dense.info if shard.dense else None, shard.dense.dim if shard.dense else None,
                        shard.dense.backend if shard.dense else None, shard.size_bytes(),
                        np.diff(np.asarray(r.offsets)))
    meta, records = read_manifest(path)
    readers, doc_ids, documents, first = [], [], {}, None
    for r in records:
        folder = path / r.name
        try:
            reader = IndexReader(folder, verify_checksums=verify_checksums) if engine == "local" else None
            if _sha256(folder / META) != r.meta_sha256:
                raise IndexFormatError(f"{folder / META}: not the meta.json the manifest records (replaced shard)")
            reader = reader or IndexReader(folder, verify_checksums=False, scan=False)
            if reader.num_docs != r.doc_end - r.doc_start:
                raise IndexFormatError(f"holds {reader.num_docs} documents, the manifest says "
                                       f"{r.doc_end - r.doc_start}")
            agreement = _agreement(reader, folder)
            if first is None:
                first = agreement
                if (agreement["vocab_size"] != meta["vocab_size"]
                        or agreement["quantization"] != meta["quantization"]):
                    raise IndexFormatError("its vocabulary or quantisation is not the manifest's")
            _check_agree(first, agreement, "")
            docs = read_documents(folder, reader.doc_ids)
        except LsrError as e:
            raise IndexFormatError(f"{path}: shard {r.name}: {e}") from None
        readers.append(reader)
        doc_ids.extend(reader.doc_ids)
        documents.update(docs)
    if len(set(doc_ids)) != len(doc_ids):
        raise IndexFormatError(f"{path}: two shards hold the same doc_id")
    starts = [r.doc_start for r in records]
    postings = np.sum([np.diff(np.asarray(rd.offsets)) for rd in readers], axis=0)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    dense = first["dense"] if first else None
    dense_meta = read_dense_meta(path / records[0].name) if dense else None
    if engine == "ray":
        from .ray_shards import ray_handles

        handles = ray_handles([path / r.name for r in records], address=ray_address, dense_backend=dense_backend,
                              verify_checksums=verify_checksums, search_options=search_options)
        backend = "ray"
    else:
        handles = [LocalShard(path / r.name, reader=rd, dense_backend=dense_backend,
                              verify_checksums=verify_checksums, search_options=search_options)
                   for r, rd in zip(records, readers)]
        pool = ThreadPoolExecutor(max_workers=threads or min(len(handles), os.cpu_count() or 1),
                                  thread_name_prefix="lsr-shard")
        for h in handles:
            h._pool = pool
        backend = handles[0].dense.backend if handles[0].dense else None
    return ShardSet(path, meta, handles, starts, doc_ids, documents, dense_meta["info"] if dense_meta else None,
                    dense["dim"] if dense else None, backend if dense else None, size, postings, engine=engine)


# -- writing -----------------------------------------------------------------------------------------------
def write_manifest(folder: Path, info: dict[str, Any]) -> dict:
    """The manifest over the shards now under `folder/shards` (their ranges follow their order); checks that
    the shards agree."""
    names = sorted(p.relative_to(folder).as_posix() for p in (folder / SHARDS_DIR).iterdir() if p.is_dir())
    shards, start, first, total, postings = [], 0, None, 0, 0
    for i, name in enumerate(names):
        if name != shard_name(i):
            raise LsrError(f"{folder}: unexpected shard folder {name!r}")
        reader = IndexReader(folder / name, verify_checksums=False, scan=False)
        agreement = _agreement(reader, folder / name)
        first = first or agreement
        _check_agree(first, agreement, f"shard {name}: ")
        shards.append({"name": name, "doc_start": start, "doc_end": start + reader.num_docs,
                       "meta_sha256": _sha256(folder / name / META)})
        start += reader.num_docs
        postings += int(reader.meta["num_postings"])
        total = start
    if not shards:
        raise LsrError("cannot write a sharded index of no shards")
    meta = {"format": SHARDED_FORMAT, "format_version": SHARDED_VERSION, "num_docs": total,
            "vocab_size": first["vocab_size"], "num_postings": postings, "quantization": first["quantization"],
            "info": {**info, "model": first["model"], "backend": first["backend"], "shards": len(shards)},
            "shards": shards, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta["meta_sha256"] = _meta_checksum(meta)
    write_file(folder / META, json.dumps(meta, indent=2).encode())
    return meta


class ShardedWriter:
    """Writes a sharded index folder whole: `write_shard` once per range (any order), then `commit`.

    >>> with ShardedWriter(out, num_docs=n, shards=4) as writer:
    ...     for i, (start, end) in enumerate(writer.ranges):
    ...         writer.write_shard(i, batch, doc_ids[start:end], vocab_size=v, quantization=q, info=info)
    """

    def __init__(self, path: str | Path, *, num_docs: int, shards: int, overwrite: bool = False,
                 log: Log | None = None) -> None:
        self.path = Path(path)
        self.ranges = shard_ranges(num_docs, shards)
        check_writable_target(self.path, is_lsr_index if overwrite else None)
        self.overwrite = overwrite
        self.log = log
        self._stage: StagedFolder | None = None

    @property
    def staged(self) -> Path:
        if self._stage is None:
            self._stage = StagedFolder(self.path, replace=is_lsr_index if self.overwrite else None, log=self.log)
            (self._stage.path / SHARDS_DIR).mkdir()
        return self._stage.path

    def write_shard(self, i: int, batch: SparseBatch, doc_ids: Sequence[str], *, vocab_size: int,
                    quantization: Quantization, info: dict[str, Any], parts: Sequence = ()) -> Path:
        start, end = self.ranges[i]
        if len(doc_ids) != end - start:
            raise LsrError(f"shard {i} holds documents [{start}, {end}); got {len(doc_ids)}")
        writer = IndexWriter(self.staged / shard_name(i), vocab_size=vocab_size, bits=quantization.bits,
                             info=info, quantization=quantization, parts=parts)
        writer.add(batch, doc_ids)
        path = writer.commit()
        failpoint("shard-written")
        return path

    def commit(self, info: dict[str, Any]) -> Path:
        written = {p.name for p in (self.staged / SHARDS_DIR).iterdir()}
        missing = [i for i in range(len(self.ranges)) if shard_name(i).split("/")[1] not in written]
        if missing:
            raise LsrError(f"shard {missing[0]} was never written")
        write_manifest(self.staged, info)
        open_shards(self.staged, verify_checksums=True).close()  # every shard and the manifest, checked
        assert self._stage is not None
        self._stage.publish()
        return self.path

    def discard(self) -> None:
        if self._stage is not None:
            self._stage.discard()

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()


def index_shards(path: Path) -> list[Path]:
    """The lsr index folders an index is made of: itself (plain) or its shards (sharded, checked manifest)."""
    if is_sharded_index(path):
        _, records = read_manifest(path)
        return [path / r.name for r in records]
    if not is_lsr_index(path):
        raise LsrError(f"{path}: not an lsr index")
    return [path]


def merge_indexes(out: str | Path, inputs: Sequence[str | Path], *, shards: int | None = None,
                  overwrite: bool = False, log: Log | None = None) -> dict[str, Any]:
    """Fold plain or sharded indexes (in the order given: their documents follow one another) into one sharded
    folder. Without `shards`, every input shard becomes a shard of the output as it is (hard links, nothing
    rewritten); with it, the documents are re-cut into `shards` even ranges, rewritten with the shared
    quantisation (impacts unchanged). The inputs must agree on model, quantisation and parts (build new ones
    with `--quantization-from` an existing index), and hold distinct doc_ids."""
    out = Path(out)
    if not inputs:
        raise LsrError("lsr index merge needs at least one input index")
    sources = [s for path in inputs for s in index_shards(Path(path))]
    readers = [check_folder(s) for s in sources]
    first = _agreement(readers[0], sources[0])
    if first["backend"] != "lsr":
        raise LsrError(f"{sources[0]}: a {first['backend']} index; merge folds lsr-backend indexes (export the "
                       "merged index to another backend afterwards)")
    for s, r in zip(sources[1:], readers[1:]):
        _check_agree(first, _agreement(r, s), f"{s}: ")
    all_ids = [d for r in readers for d in r.doc_ids]
    if len(set(all_ids)) != len(all_ids):
        seen: set[str] = set()
        dup = next(d for d in all_ids if d in seen or seen.add(d))
        raise LsrError(f"doc_id {dup!r} is in more than one input (merge indexes of distinct documents)")
    info = {k: v for k, v in readers[0].info.items() if k != "build"}
    info["merged_from"] = [str(Path(p)) for p in inputs]
    n_out = shards or len(sources)
    writer = ShardedWriter(out, num_docs=len(all_ids), shards=n_out, overwrite=overwrite, log=log)
    with writer:
        if shards is None:  # every shard keeps its own files, collection statistics included
            for i, src in enumerate(sources):
                _link_tree(src, writer.staged / shard_name(i))
        else:
            _reshard(writer, sources, readers, _merged_stats(inputs))
        writer.commit(info)
    return {"num_docs": len(all_ids), "shards": n_out, "inputs": len(inputs), "input_shards": len(sources)}


def _link_tree(src: Path, dst: Path) -> None:
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)


def _merged_stats(inputs: Sequence[str | Path]) -> CollectionStats | None:
    """The collection statistics of the merged documents: the inputs' summed (each input's, plain or sharded,
    cover its whole collection), or None unless every input has them."""
    stats = [read_collection_stats(index_shards(Path(p))[0]) for p in inputs]
    if not stats or any(s is None or len(s.df) != len(stats[0].df) for s in stats):
        return None
    return CollectionStats(sum(s.df for s in stats), sum(s.num_docs for s in stats))


def _reshard(writer: ShardedWriter, sources: list[Path], readers: list[IndexReader],
             stats: CollectionStats | None) -> None:
    quant = readers[0].quantization
    info = {k: v for k, v in readers[0].info.items() if k != STATS_KEY}  # re-recorded by the part, if any
    # weights = impacts / scale re-quantise to the same impacts (the error is far below half a level)
    matrix = sp.vstack([r.doc_matrix() for r in readers], format="csr")
    docs = SparseBatch(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32),
                       (matrix.data.astype(np.float64) / quant.scale).astype(np.float32), readers[0].vocab_size)
    doc_ids = [d for r in readers for d in r.doc_ids]
    has_docs = (sources[0] / "docs.jsonl").is_file()
    texts = [t for s, r in zip(sources, readers) for t in read_documents(s, r.doc_ids).values()] if has_docs else []
    vectors = dense_meta = None
    if has_dense_store(sources[0]):
        stores = [DenseStore(s, backend="numpy", doc_ids=r.doc_ids, verify_checksums=False)
                  for s, r in zip(sources, readers)]
        vectors = np.concatenate([np.asarray(st.vectors) for st in stores])
        dense_meta = stores[0].info
    for i, (start, end) in enumerate(writer.ranges):
        parts = [collection_stats_part(stats)] if stats is not None else []
        if vectors is not None:
            parts.append(dense_part(vectors[start:end], dense_meta))
        if has_docs:
            parts.append(documents_part(texts[start:end]))
        writer.write_shard(i, docs.select(np.arange(start, end)), doc_ids[start:end],
                           vocab_size=readers[0].vocab_size, quantization=quant, info=info, parts=parts)


def export_any_to_milvus(path: str | Path, *, uri: str | None = None, collection: str | None = None,
                         log: Log | None = None, **options: Any) -> list[dict[str, Any]]:
    """`lsr export milvus` of a plain or a sharded folder (`folder.export_to_milvus` per shard; `options` are
    its batch_size, sparse_index, progress). A sharded folder is staged whole (hard links), every staged shard
    exported into a collection of its own (by default a Milvus Lite file inside each shard; on a server,
    COLLECTION_sNNNNN with a build-unique suffix), the manifest rewritten over the new shard metas, checked, and
    published in one rename: a failure leaves the folder as it was and drops the collections made on a server.
    Returns each shard's recorded `info.milvus`."""
    from .folder import export_to_milvus
    from .milvus import DEFAULT_COLLECTION, drop_collection, is_local, resolve_uri

    path = Path(path)
    if not is_sharded_index(path):
        return [export_to_milvus(path, uri=uri, collection=collection, log=log, **options)]
    meta, records = read_manifest(path)
    if meta["info"].get("backend", "lsr") != "lsr":
        raise LsrError(f"{path} already ranks through {meta['info']['backend']}")
    stage = StagedFolder(path, replace=is_sharded_index, log=log)
    made: list[dict[str, Any]] = []
    try:
        _link_tree(path, stage.path)
        for i, r in enumerate(records):
            name = collection or DEFAULT_COLLECTION
            shard_collection = name if uri is None else f"{name}_s{i:05d}"
            made.append(export_to_milvus(stage.path / r.name, uri=uri, collection=shard_collection, log=log,
                                         **options))
            failpoint("shard-exported")
        info = {k: v for k, v in meta["info"].items() if k not in ("model", "backend", "shards")}
        (stage.path / META).unlink()
        write_manifest(stage.path, info)
        open_shards(stage.path).close()  # every shard's collection and the new manifest, checked
        stage.publish()
    except BaseException:
        stage.discard()  # Milvus Lite files inside the shards go with it; collections on a server are dropped
        for record in made:
            if not is_local(record["uri"]):
                drop_collection(resolve_uri(path, record["uri"]), record["collection"])
        raise
    return made


def verify_any(path: str | Path) -> dict[str, Any]:
    """`lsr index verify` of a plain or sharded folder: every shard fully verified (`verify_index`), then the
    manifest's chain of checksums and agreement (`open_shards`); what was checked, summed over the shards."""
    from .folder import verify_index

    path = Path(path)
    if not is_sharded_index(path):
        return verify_index(path)
    _, records = read_manifest(path)
    total = {"files": 1, "bytes": (path / META).stat().st_size, "num_docs": 0, "num_postings": 0,
             "not_covered": [], "shards": len(records)}
    for r in records:
        try:
            checked = verify_index(path / r.name)
        except LsrError as e:
            raise IndexFormatError(f"{path}: shard {r.name}: {e}") from None
        for key in ("files", "bytes", "num_docs", "num_postings"):
            total[key] += checked[key]
        total["not_covered"] += [f"{r.name}/{n}" for n in checked["not_covered"]]
    open_shards(path, verify_checksums=False).close()
    return total
