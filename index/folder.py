"""Writing an index folder as a whole: the sparse index and the parts that travel with it (a Lucene index, the
dense store, the documents' text), staged in a hidden sibling folder, covered by one `meta.json`, opened and
checked like any index, then published in one rename (`files.StagedFolder`); and verifying one.

A kill at any point leaves the target as it was (absent, or the previous complete index), plus a hidden
leftover that the next build of the same target removes and reports. `--overwrite` replaces only a folder that
is an lsr index.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from .dense import DenseStore, has_dense_store, write_dense_files
from .documents import read_documents
from .errors import LsrError
from .files import StagedFolder, check_writable_target, failpoint, write_file
from .quantize import Quantization
from . import runs
from .runs import RunStore, forward_matrix, invert, write_postings
from .sparse import SparseBatch
from .storage import (COVERAGE, DEFAULT_BLOCK_SIZE, DOC_IDS, FORMAT, FORMAT_VERSION, META, READ_VERSIONS,
                      IndexReader, _meta_checksum, _read_meta, check_files, file_record, folder_files, is_lsr_index,
                      uncovered_dirs)

Log = Callable[[str], None]


def check_folder(path: Path, *, verify_checksums: bool = True) -> IndexReader:
    """Open every part of an index folder (the sparse index, the dense store, the documents) with every check,
    the structural pass over all postings included; the reader on success."""
    reader = IndexReader(path, verify_checksums=verify_checksums, scan=True)
    if has_dense_store(path):
        DenseStore(path, verify_checksums=False, backend="numpy",  # hashed with the rest of the folder
                   doc_ids=reader.doc_ids)
    read_documents(path, reader.doc_ids)
    return reader


Part = Callable[[Path, sp.csr_matrix, list[str]], Any]


class IndexWriter:
    """Collects document vectors, then writes the index folder in one atomic step, in bounded memory.

    >>> with IndexWriter(out, vocab_size=30522, info={"model": "splade-tiny"}) as writer:
    ...     writer.add(batch, doc_ids)

    `parts` are callables `part(folder, impacts, doc_ids)` that write more files into the staged folder before
    the meta covers them all (the Lucene index, the dense store, `docs.jsonl`); one may return a record for
    the meta (`merge_record`) and have a `discard()` that undoes what it wrote elsewhere if the build fails. The target is checked when the
    writer is made (before any encoding): an existing folder is replaced only with `overwrite` and only if it
    is an lsr index. `quantization` fixes the scale (weights above its range clip to the largest impact);
    by default it is fitted to the largest weight.

    `format_version` 3 writes the doc ids compressed (`codec.py`) and, unless `forward_index`,
    neither the forward index nor the block maxima (what only the blockmax algorithm reads); 2 writes the
    plain layout (the default, `storage.FORMAT_VERSION`: plain arrays, always with both).

    Memory does not grow with the corpus: every `run_postings` postings the batches so far are inverted and
    spilled to a hidden folder beside the target, and `commit` merges the runs into the index's files a group
    of terms at a time (`runs.py`); with a fixed `quantization` the runs hold impacts (5 bytes a posting on
    disk, each way), else weights (8). The parts are given the forward matrix whole, in memory.
    """

    def __init__(self, path: str | Path, *, vocab_size: int, bits: int = 8, info: dict[str, Any] | None = None,
                 overwrite: bool = False, block_size: int = DEFAULT_BLOCK_SIZE, parts: Sequence[Part] = (),
                 log: Callable[[str], None] | None = None, quantization: Quantization | None = None,
                 format_version: int = FORMAT_VERSION, forward_index: bool | None = None,
                 run_postings: int | None = None) -> None:
        if format_version not in READ_VERSIONS:
            raise LsrError(f"index format_version must be one of {READ_VERSIONS}, got {format_version}")
        if format_version == 2 and forward_index is False:
            raise LsrError("format 2 always holds the forward index")
        self.format_version = int(format_version)
        self.forward_index = format_version == 2 or bool(forward_index)
        if block_size < 1:
            raise LsrError(f"block_size must be positive, got {block_size}")
        self.block_size = int(block_size)
        self.path = Path(path)
        self.vocab_size = int(vocab_size)
        self.bits = bits
        self.info = dict(info or {})
        self.overwrite = overwrite
        self.parts = list(parts)
        self.log = log
        self.run_postings = runs.RUN_POSTINGS if run_postings is None else int(run_postings)
        if self.run_postings < 1:
            raise LsrError(f"run_postings must be positive, got {run_postings}")
        self._pending: list[SparseBatch] = []  # batches since the last run
        self._pending_postings = 0
        self._run_docs = 0  # documents in the spilled runs
        self._max_weight = 0.0
        self._doc_ids: list[str] = []
        Quantization.fit(1.0, bits)  # validates bits early
        if quantization is not None and quantization.bits != bits:
            raise LsrError(f"IndexWriter: quantization has {quantization.bits} bits, the index {bits}")
        self.quantization = quantization  # fixed (the shards of one index share one), else fitted at commit
        check_writable_target(self.path, is_lsr_index if overwrite else None)
        self._runs = RunStore(self.path, log)

    def add(self, batch: SparseBatch, doc_ids: Sequence[str]) -> None:
        if len(batch) != len(doc_ids):
            raise LsrError(f"IndexWriter.add: {len(batch)} vectors but {len(doc_ids)} doc_ids")
        if batch.vocab_size != self.vocab_size:
            raise LsrError(f"IndexWriter.add: vocabulary {batch.vocab_size} != index vocabulary {self.vocab_size}")
        if batch.nnz and batch.weights.min() < 0:
            raise LsrError("IndexWriter.add: impact indexes need non-negative weights")
        self._pending.append(batch)
        self._pending_postings += batch.nnz
        if batch.nnz:
            self._max_weight = max(self._max_weight, float(batch.weights.max()))
        self._doc_ids.extend(str(d) for d in doc_ids)
        if self._pending_postings >= self.run_postings:  # spill a run: memory stays bounded at any corpus size
            self._runs.spill(invert(self._pending, self._run_docs, self.quantization))
            failpoint("run-spilled")
            self._run_docs = len(self._doc_ids)
            self._pending, self._pending_postings = [], 0

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._runs.discard()

    def commit(self) -> Path:
        """Write and publish the folder; the spilled runs are removed whatever happens."""
        try:
            return self._commit()
        finally:
            self._runs.discard()

    def _commit(self) -> Path:
        if not self._doc_ids:
            raise LsrError("cannot build an index over an empty corpus")
        if len(set(self._doc_ids)) != len(self._doc_ids):
            seen: set[str] = set()
            dup = next(d for d in self._doc_ids if d in seen or seen.add(d))
            raise LsrError(f"duplicate doc_id {dup!r}: every document needs its own id")
        quant = self.quantization or Quantization.fit(self._max_weight if self._max_weight > 0 else 1.0, self.bits)
        num_docs = len(self._doc_ids)
        meta = {
            "format": FORMAT,
            "format_version": self.format_version,
            "num_docs": num_docs,
            "vocab_size": self.vocab_size,
            "num_postings": 0,
            "num_blockmax": 0,
            "block_size": self.block_size,
            "quantization": quant.to_dict(),
            "max_weight": self._max_weight,
            "info": self.info,
        }
        if self.format_version != 2:
            meta["forward_index"] = self.forward_index
        stage = None
        try:
            inverted = self._runs.load()
            if self._pending:
                inverted.append(invert(self._pending, self._run_docs, self.quantization))
                self._pending = []
            stage = StagedFolder(self.path, replace=is_lsr_index if self.overwrite else None, log=self.log)
            if self.log and self._runs.count:
                self.log(f"merging {len(inverted)} runs of {num_docs:,} documents into {self.path}")
            meta.update(write_postings(stage.path, inverted, vocab_size=self.vocab_size, num_docs=num_docs,
                                       quantization=quant, format_version=self.format_version,
                                       forward_index=self.forward_index, block_size=self.block_size))
            write_file(stage.path / DOC_IDS, json.dumps(self._doc_ids).encode())
            failpoint("sparse-written")
            if self.parts:
                forward = forward_matrix(inverted, quant, self.vocab_size)
                for part in self.parts:
                    merge_record(meta, part(stage.path, forward, self._doc_ids))
            failpoint("parts-written")
            write_meta(stage.path, meta)
            del inverted
            check_folder(stage.path)  # the staged folder opens and passes every check before it is published
            stage.publish()
        except BaseException:
            if stage is not None:
                stage.discard()
            for part in self.parts:  # a part that wrote outside the folder (a collection on a server) undoes it
                getattr(part, "discard", lambda: None)()
            raise
        return self.path


def merge_record(meta: dict, record: Any) -> None:
    """What a part returns for the meta (a Milvus collection's record): `info` keys merged into the meta's
    info, `uncovered` subfolders (an engine's own files, checked by the part's record) added to the meta's."""
    if not isinstance(record, dict):
        return
    meta["info"] = {**meta.get("info", {}), **record.get("info", {})}
    if record.get("uncovered"):
        meta["uncovered"] = sorted({*meta.get("uncovered", []), *record["uncovered"]})


def write_meta(folder: Path, meta: dict) -> dict:
    """Write `meta.json` covering every file now in `folder` (sizes, SHA-256, xxh3) but the `uncovered`
    subfolders it names, checksummed itself."""
    meta = {k: v for k, v in meta.items() if k not in ("files", "meta_sha256", "coverage", "created")}
    meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta["coverage"] = COVERAGE
    meta["files"] = {name: file_record(folder / name) for name in folder_files(folder, uncovered_dirs(meta))}
    meta["meta_sha256"] = _meta_checksum(meta)
    write_file(folder / META, json.dumps(meta, indent=2).encode())
    return meta


def amend_index(path: str | Path, add: Callable[[Path], Any], *, log: Callable[[str], None] | None = None) -> Path:
    """Add or replace parts of an existing index folder atomically: the folder is staged as hard links of its
    files (nothing is copied, and files are never written in place; an engine's uncovered subfolder is linked
    too), `add(staged)` writes the new files (unlinking a file before rewriting it) and may return a record for
    the meta as a part does, the meta is rewritten over all files, checked, and published."""
    path = Path(path)
    reader = IndexReader(path)
    stage = StagedFolder(path, replace=is_lsr_index, log=log)
    try:
        for name in folder_files(path):
            dst = stage.path / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path / name, dst)
            except OSError:
                shutil.copy2(path / name, dst)
        meta = dict(reader.meta)
        merge_record(meta, add(stage.path))
        write_meta(stage.path, meta)
        check_folder(stage.path)
        stage.publish()
    except BaseException:
        stage.discard()
        raise
    return path




def add_dense_store(index_dir: str | Path, vectors: np.ndarray, *, info: dict[str, Any] | None = None,
                    overwrite: bool = False) -> Path:
    """Add the dense vectors of an existing index's documents (row i = doc_idx i) to its folder, atomically."""
    path = Path(index_dir)
    if IndexReader(path).info.get("backend") == "milvus":
        raise LsrError(f"{path} ranks through Milvus, whose collection takes the dense vectors at build time: "
                       "rebuild it with --dense (or build the lsr index with --dense, then `lsr export milvus`)")
    if has_dense_store(path) and not overwrite:
        raise LsrError(f"{path} already has a dense store (pass overwrite to replace it)")
    return amend_index(path, lambda staged: write_dense_files(staged, vectors, info))


def verify_index(path: str | Path) -> dict[str, Any]:
    """Full verification (`lsr index verify`): SHA-256 of every file, every structural check of the sparse
    index, and the other parts read and checked (dense store, documents); IndexFormatError on the first
    problem. Returns what was checked."""
    path = Path(path)
    meta = _read_meta(path)
    check_files(path, meta, digest="sha256")
    reader = check_folder(path, verify_checksums=False)
    checked = {"files": len(meta["files"]), "bytes": sum(r["bytes"] for r in meta["files"].values()),
               "num_docs": reader.num_docs, "num_postings": reader.meta["num_postings"]}
    uncovered = [] if meta.get("coverage") == COVERAGE else [n for n in folder_files(path, uncovered_dirs(meta))
                                                             if n not in meta["files"]]
    checked["not_covered"] = uncovered
    if reader.info.get("backend") == "milvus":  # the collection's rows against the record the meta keeps
        from .milvus import MilvusCollection

        MilvusCollection(reader, path).close()
        checked["milvus"] = reader.info["milvus"]["collection"]
    return checked


# -- export --------------------------------------------------------------------------------------------------
def export_to_milvus(index_dir: str | Path, *, uri: str | None = None, collection: str | None = None,
                     batch_size: int = 1_000, sparse_index: str = "SPARSE_INVERTED_INDEX",
                     progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """`lsr export milvus`: stream an existing index's forward index (and dense store) into a new collection,
    then re-publish the folder (atomically, its files hard-linked) recording the Milvus backend, so search,
    serve and eval on it rank through Milvus. Returns the recorded `info.milvus`."""
    from .milvus import LITE_FILE, MILVUS_DIR, build_collection_name, milvus_record, resolve_uri, write_collection

    path = Path(index_dir)
    try:
        sharded = json.loads((path / "meta.json").read_text(encoding="utf-8")).get("format") == "lsr-sharded-index"
    except (OSError, ValueError, AttributeError):
        sharded = False
    if sharded:
        raise LsrError(f"{path} is a sharded index: export it with shards.export_any_to_milvus (`lsr export milvus`)")
    reader = IndexReader(path)
    if reader.info.get("backend", "lsr") == "milvus":
        raise LsrError(f"{path} already ranks through Milvus ({milvus_record(reader)['collection']!r})")
    build_collection_name(collection, True)
    dense = DenseStore(path, verify_checksums=False, backend="numpy", doc_ids=reader.doc_ids).vectors \
        if has_dense_store(path) else None

    def add(staged: Path) -> dict[str, Any]:
        embedded = uri is None
        recorded = LITE_FILE if embedded else uri
        name = build_collection_name(collection, embedded)
        matrix = reader.doc_matrix()
        record = write_collection(resolve_uri(staged, recorded), name, indptr=matrix.indptr,
                                  term_ids=matrix.indices, impacts=matrix.data,
                                  doc_ids=reader.doc_ids, dense=dense, sparse_index=sparse_index,
                                  batch_size=batch_size, progress=progress)
        record["uri"] = recorded
        if log:
            log(f"exported {reader.num_docs:,} documents into Milvus collection {name!r} at {recorded}")
        return {"info": {"backend": "milvus", "milvus": record}, **({"uncovered": [MILVUS_DIR]} if embedded else {})}

    amend_index(path, add, log=log)
    return IndexReader(path).info["milvus"]
