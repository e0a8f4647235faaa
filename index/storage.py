"""The index on disk: per-term postings of quantised impacts as plain numpy arrays, plus a versioned
`meta.json` that records the quantisation, the encoder, and a checksum of every file.

Writes are atomic: everything goes to a temporary sibling folder which is renamed into place only once
complete, so a reader never sees a half-written index. Opening an index checks the format version, the
file sizes and checksums and the array invariants, and raises `IndexFormatError` on any mismatch.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numba
import numpy as np
import scipy.sparse as sp

from .errors import IndexFormatError, LsrError
from .quantize import Quantization
from .sparse import SparseBatch

FORMAT = "lsr-index"
FORMAT_VERSION = 2
META = "meta.json"
DEFAULT_BLOCK_SIZE = 32  # documents per block of the block-max bounds
# term-major postings: term t's postings are [offsets[t], offsets[t+1]), doc_idx ascending within a term
OFFSETS, DOC_IDX, IMPACTS = "postings_offsets.npy", "postings_doc_idx.npy", "postings_impacts.npy"
# doc-major forward index: document d's terms are [indptr[d], indptr[d+1]), term_id ascending
FWD_INDPTR, FWD_TERMS, FWD_IMPACTS = "forward_indptr.npy", "forward_term_ids.npy", "forward_impacts.npy"
# block-max bounds: for term t, the blocks holding it and the largest impact of t in each, block ascending
BM_OFFSETS, BM_BLOCKS, BM_IMPACTS = "blockmax_offsets.npy", "blockmax_blocks.npy", "blockmax_impacts.npy"
DOC_IDS = "doc_ids.json"  # list[str], doc_idx -> doc_id
ARRAY_FILES = (OFFSETS, DOC_IDX, IMPACTS, FWD_INDPTR, FWD_TERMS, FWD_IMPACTS, BM_OFFSETS, BM_BLOCKS, BM_IMPACTS)
DATA_FILES = (*ARRAY_FILES, DOC_IDS)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _meta_checksum(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


ID_DTYPES = (np.dtype(np.uint16), np.dtype(np.int32))  # doc, term and block ids: the narrowest that holds them


def id_dtype(count: int) -> np.dtype:
    """uint16 for ids below 65,536 (a BERT vocabulary, the block ids of up to 2M documents), else int32."""
    return ID_DTYPES[0] if count <= 1 << 16 else ID_DTYPES[1]


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


class IndexWriter:
    """Collects document vectors, then writes the inverted index in one atomic step.

    >>> with IndexWriter(out, vocab_size=30522, info={"model": "splade-tiny"}) as writer:
    ...     writer.add(batch, doc_ids)
    """

    def __init__(self, path: str | Path, *, vocab_size: int, bits: int = 8, info: dict[str, Any] | None = None,
                 overwrite: bool = False, block_size: int = DEFAULT_BLOCK_SIZE,
                 companion: Callable[[Path, sp.csr_matrix, list[str]], Any] | None = None) -> None:
        """`companion(folder, impacts, doc_ids)`, if given, writes another engine's index of the same integer
        impacts (documents x terms) into the folder before it is swapped into place (the Lucene backend)."""
        if block_size < 1:
            raise LsrError(f"block_size must be positive, got {block_size}")
        self.block_size = int(block_size)
        self.path = Path(path)
        self.vocab_size = int(vocab_size)
        self.bits = bits
        self.info = dict(info or {})
        self.overwrite = overwrite
        self.companion = companion
        self._batches: list[SparseBatch] = []
        self._doc_ids: list[str] = []
        if self.path.exists() and not overwrite:
            raise LsrError(f"{self.path} already exists (pass overwrite to replace it)")
        Quantization.fit(1.0, bits)  # validates bits early

    def add(self, batch: SparseBatch, doc_ids: Sequence[str]) -> None:
        if len(batch) != len(doc_ids):
            raise LsrError(f"IndexWriter.add: {len(batch)} vectors but {len(doc_ids)} doc_ids")
        if batch.vocab_size != self.vocab_size:
            raise LsrError(f"IndexWriter.add: vocabulary {batch.vocab_size} != index vocabulary {self.vocab_size}")
        if batch.nnz and batch.weights.min() < 0:
            raise LsrError("IndexWriter.add: impact indexes need non-negative weights")
        self._batches.append(batch)
        self._doc_ids.extend(str(d) for d in doc_ids)

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()

    def commit(self) -> Path:
        if not self._doc_ids:
            raise LsrError("cannot build an index over an empty corpus")
        if len(set(self._doc_ids)) != len(self._doc_ids):
            seen: set[str] = set()
            dup = next(d for d in self._doc_ids if d in seen or seen.add(d))
            raise LsrError(f"duplicate doc_id {dup!r}: every document needs its own id")
        docs = SparseBatch.concat(self._batches)
        quant = Quantization.fit(float(docs.weights.max()) if docs.nnz else 1.0, self.bits)
        impacts = quant.quantize(docs.weights)
        keep = impacts > 0  # a zero impact contributes nothing to any score
        forward = sp.csr_matrix((impacts[keep], docs.term_ids[keep], _kept_indptr(docs.indptr, keep)),
                                shape=(len(docs), self.vocab_size))
        postings = forward.tocsc()
        postings.sort_indices()
        bm_offsets, bm_blocks, bm_impacts = block_max(postings.indptr, postings.indices, postings.data,
                                                      self.block_size)
        num_blocks = -(-len(self._doc_ids) // self.block_size)
        arrays = {
            OFFSETS: postings.indptr.astype(np.int64), DOC_IDX: postings.indices.astype(id_dtype(len(docs))),
            IMPACTS: postings.data.astype(quant.dtype),
            FWD_INDPTR: forward.indptr.astype(np.int64), FWD_TERMS: forward.indices.astype(id_dtype(self.vocab_size)),
            FWD_IMPACTS: forward.data.astype(quant.dtype),
            BM_OFFSETS: bm_offsets, BM_BLOCKS: bm_blocks.astype(id_dtype(num_blocks)),
            BM_IMPACTS: bm_impacts.astype(quant.dtype),
        }

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        try:
            for name, array in arrays.items():
                _save_array(tmp / name, array)
            _fsync_write(tmp / DOC_IDS, json.dumps(self._doc_ids).encode())
            if self.companion is not None:
                self.companion(tmp, forward, self._doc_ids)
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "num_docs": len(self._doc_ids),
                "vocab_size": self.vocab_size,
                "num_postings": int(postings.nnz),
                "num_blockmax": int(len(bm_blocks)),
                "block_size": self.block_size,
                "quantization": quant.to_dict(),
                "max_weight": float(docs.weights.max()) if docs.nnz else 0.0,
                "info": self.info,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                          for name in DATA_FILES},
            }
            meta["meta_sha256"] = _meta_checksum(meta)
            _fsync_write(tmp / META, json.dumps(meta, indent=2).encode())
            self._swap_into_place(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.path

    def _swap_into_place(self, tmp: Path) -> None:
        if not self.path.exists():
            os.rename(tmp, self.path)
            return
        if not self.overwrite:
            raise LsrError(f"{self.path} appeared while the index was being written")
        old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
        os.rename(self.path, old)
        os.rename(tmp, self.path)
        shutil.rmtree(old, ignore_errors=True)


def _kept_indptr(indptr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return kept_before[indptr]


def block_max(offsets: np.ndarray, doc_idx: np.ndarray, impacts: np.ndarray, block_size: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per term, the blocks of `block_size` consecutive documents that hold it and its largest impact there,
    as CSR over terms (offsets, blocks, impacts). Postings are sorted by doc within a term, so each block's
    postings are one run."""
    bm_offsets = np.zeros(len(offsets), dtype=np.int64)
    bm_blocks = np.empty(len(doc_idx), dtype=np.int32)
    bm_impacts = np.empty(len(doc_idx), dtype=impacts.dtype)
    n = _block_max(offsets, doc_idx, impacts, block_size, bm_offsets, bm_blocks, bm_impacts)
    return bm_offsets, bm_blocks[:n].copy(), bm_impacts[:n].copy()


@numba.njit(cache=True)
def _block_max(offsets, doc_idx, impacts, block_size, bm_offsets, bm_blocks, bm_impacts):  # pragma: no cover
    n = 0
    for t in range(offsets.shape[0] - 1):
        last = -1
        for p in range(offsets[t], offsets[t + 1]):
            b = doc_idx[p] // block_size
            if b != last:
                bm_blocks[n] = b
                bm_impacts[n] = impacts[p]
                n += 1
                last = b
            elif impacts[p] > bm_impacts[n - 1]:
                bm_impacts[n - 1] = impacts[p]
        bm_offsets[t + 1] = n
    return n


class IndexReader:
    """A read-only, memory-mapped view of an index folder, validated on open."""

    def __init__(self, path: str | Path, *, verify_checksums: bool = True) -> None:
        self.path = Path(path)
        self.meta = _read_meta(self.path)
        files = self.meta["files"]
        for name in DATA_FILES:
            p = self.path / name
            if not p.is_file():
                raise IndexFormatError(f"{self.path}: missing {name} (half-written or damaged index)")
            if p.stat().st_size != files[name]["bytes"]:
                raise IndexFormatError(f"{self.path}: {name} has {p.stat().st_size} bytes, meta says "
                                       f"{files[name]['bytes']} (truncated or damaged index)")
            if verify_checksums and _sha256(p) != files[name]["sha256"]:
                raise IndexFormatError(f"{self.path}: checksum mismatch in {name} (corrupted index)")
        self.quantization = Quantization.from_dict(self.meta["quantization"])
        self.num_docs = int(self.meta["num_docs"])
        self.vocab_size = int(self.meta["vocab_size"])
        self.block_size = int(self.meta["block_size"])
        self.num_blocks = -(-self.num_docs // self.block_size)
        try:
            arrays = {name: np.load(self.path / name, mmap_mode="r", allow_pickle=False) for name in ARRAY_FILES}
            self.doc_ids: list[str] = json.loads((self.path / DOC_IDS).read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise IndexFormatError(f"{self.path}: unreadable index file ({e})") from e
        self.offsets, self.doc_idx, self.impacts = arrays[OFFSETS], arrays[DOC_IDX], arrays[IMPACTS]
        self.forward_indptr, self.forward_term_ids = arrays[FWD_INDPTR], arrays[FWD_TERMS]
        self.forward_impacts = arrays[FWD_IMPACTS]
        self.bm_offsets, self.bm_blocks, self.bm_impacts = arrays[BM_OFFSETS], arrays[BM_BLOCKS], arrays[BM_IMPACTS]
        self._check_invariants()

    def _check_invariants(self) -> None:
        n, nb = int(self.meta["num_postings"]), int(self.meta["num_blockmax"])
        impact_dtype = self.quantization.dtype
        problems = []

        def check_csr(label, indptr, rows, columns, values, num_columns, length):
            if indptr.shape != (rows + 1,) or indptr.dtype != np.int64:
                problems.append(f"{label} offsets have the wrong shape or type")
            elif indptr[0] != 0 or indptr[-1] != length or np.any(np.diff(indptr) < 0):
                problems.append(f"{label} offsets are not a monotone 0..{length} sequence")
            if columns.shape != (length,) or values.shape != (length,):
                problems.append(f"{label} arrays disagree with their length {length}")
            elif columns.dtype not in ID_DTYPES:
                problems.append(f"{label} ids are {columns.dtype}, not uint16 or int32")
            elif values.dtype != impact_dtype:
                problems.append(f"{label} impacts are {values.dtype}, meta says {self.quantization.bits} bits")
            elif length and (columns.min() < 0 or columns.max() >= num_columns):
                problems.append(f"{label} entries point outside [0, {num_columns})")

        check_csr("postings", self.offsets, self.vocab_size, self.doc_idx, self.impacts, self.num_docs, n)
        check_csr("forward", self.forward_indptr, self.num_docs, self.forward_term_ids, self.forward_impacts,
                  self.vocab_size, n)
        check_csr("block-max", self.bm_offsets, self.vocab_size, self.bm_blocks, self.bm_impacts, self.num_blocks, nb)
        if len(self.doc_ids) != self.num_docs:
            problems.append("doc_ids disagree with num_docs")
        if problems:
            raise IndexFormatError(f"{self.path}: {'; '.join(problems)}")

    @property
    def info(self) -> dict[str, Any]:
        return self.meta.get("info", {})

    def postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets[term_id], self.offsets[term_id + 1]
        return self.doc_idx[lo:hi], self.impacts[lo:hi]

    def doc_matrix(self) -> sp.csr_matrix:
        """Documents x terms matrix of impacts (the forward index), for brute force, PRF and analysis."""
        return sp.csr_matrix((self.forward_impacts, self.forward_term_ids, self.forward_indptr),
                             shape=(self.num_docs, self.vocab_size))

    def size_bytes(self) -> int:
        return sum((self.path / name).stat().st_size for name in (*DATA_FILES, META))


def read_checked_meta(path: Path, name: str, *, fmt: str, version: int, what: str, missing: str) -> dict:
    """A meta JSON file of `fmt`/`version` whose own checksum holds; IndexFormatError naming the problem."""
    meta_path = path / name
    if not meta_path.is_file():
        raise IndexFormatError(f"{path}: no {name} ({missing})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{path}: {name} is not valid JSON (corrupted {what})") from e
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise IndexFormatError(f"{path}: {name} does not describe an {fmt}")
    if meta.get("format_version") != version:
        raise IndexFormatError(f"{path}: {what} format version {meta.get('format_version')!r}, this lsr reads "
                               f"version {version}; rebuild it with `lsr index build`")
    if meta.get("meta_sha256") != _meta_checksum(meta):
        raise IndexFormatError(f"{path}: checksum mismatch in {name} (corrupted {what})")
    return meta


def _read_meta(path: Path) -> dict:
    if not path.is_dir():
        raise IndexFormatError(f"{path}: no such index folder")
    return read_checked_meta(path, META, fmt=FORMAT, version=FORMAT_VERSION, what="index",
                             missing="not an lsr index, or one whose write never finished")
