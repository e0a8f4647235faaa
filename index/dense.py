"""The dense store: one float32 vector per document, kept beside the sparse index in the same doc_idx space.

Files, inside the index folder:
    dense.npy        float32 (num_docs, dim), row i is the document at doc_idx i of the sparse index
    dense_meta.json  format, version, dim, num_docs, the dense model (`info`), a checksum of the sparse
                     index's doc_ids.json (so a store never pairs with another corpus) and of dense.npy

The store is one of the parts an index folder is written with (`dense_part`, see `IndexWriter`), so it appears
with the rest of the folder in one rename and the folder's meta.json covers both files; `folder.add_dense_store`
adds one to an existing folder the same way.

Search is an exact inner product (cosine for unit vectors): faiss `IndexFlatIP` when faiss is installed and
`backend` is "auto" or "faiss", else a numpy matrix-vector product ranked by `top_k`. Never imports torch.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import IndexFormatError, LsrError
from .files import fast_digest, save_array, sha256_file, write_file
from .hits import Hit, Run, ranking_order
from .search import top_k
from .storage import DOC_IDS, _meta_checksum, read_checked_meta

DENSE_FORMAT = "lsr-dense"
DENSE_FORMAT_VERSION = 1
DENSE_VECTORS = "dense.npy"
DENSE_META = "dense_meta.json"
BACKENDS = ("auto", "faiss", "numpy")


def has_dense_store(index_dir: str | Path) -> bool:
    return (Path(index_dir) / DENSE_META).is_file()


def _checked_vectors(vectors: np.ndarray, num_docs: int) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] < 1:
        raise LsrError(f"dense vectors must be a (num_docs, dim) matrix, got shape {vectors.shape}")
    if vectors.shape[0] != num_docs:
        raise LsrError(f"{vectors.shape[0]} dense vectors for an index of {num_docs} documents")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.all(np.isfinite(vectors)):
        raise LsrError("dense vectors must be finite")
    return vectors


def dense_part(vectors: np.ndarray, info: dict[str, Any] | None = None):
    """An index-folder part (`IndexWriter(parts=...)`) that writes the dense store of these vectors."""
    def write(folder: Path, impacts=None, doc_ids=None) -> None:
        write_dense_files(folder, vectors, info)
    return write


def write_dense_files(folder: Path, vectors: np.ndarray, info: dict[str, Any] | None = None) -> None:
    """Write dense.npy and dense_meta.json into a staged index folder that holds doc_ids.json."""
    doc_ids_path = folder / DOC_IDS
    doc_ids = json.loads(doc_ids_path.read_text(encoding="utf-8"))
    vectors = _checked_vectors(vectors, len(doc_ids))
    save_array(folder / DENSE_VECTORS, vectors)
    meta = {
        "format": DENSE_FORMAT,
        "format_version": DENSE_FORMAT_VERSION,
        "num_docs": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "info": dict(info or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "doc_ids_sha256": sha256_file(doc_ids_path),
        "files": {DENSE_VECTORS: {"bytes": (folder / DENSE_VECTORS).stat().st_size,
                                  "sha256": sha256_file(folder / DENSE_VECTORS),
                                  "xxh3": fast_digest(folder / DENSE_VECTORS)}},
    }
    meta["meta_sha256"] = _meta_checksum(meta)
    write_file(folder / DENSE_META, json.dumps(meta, indent=2).encode())


class DenseStore:
    """A validated, read-only dense store; `search_vector` returns (doc_idx, score) like `Searcher`."""

    def __init__(self, index_dir: str | Path, *, verify_checksums: bool = True, backend: str = "auto",
                 doc_ids: list[str] | None = None) -> None:
        """`doc_ids`: the folder's doc ids when the caller has read them already (its IndexReader)."""
        if backend not in BACKENDS:
            raise LsrError(f"dense backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.path = Path(index_dir)
        self.meta = read_dense_meta(self.path)
        vec_path = self.path / DENSE_VECTORS
        expected = self.meta["files"][DENSE_VECTORS]
        if not vec_path.is_file():
            raise IndexFormatError(f"{self.path}: missing {DENSE_VECTORS} (half-written or damaged dense store)")
        if vec_path.stat().st_size != expected["bytes"]:
            raise IndexFormatError(f"{self.path}: {DENSE_VECTORS} has {vec_path.stat().st_size} bytes, meta says "
                                   f"{expected['bytes']} (truncated or damaged dense store)")
        # (SearchService passes verify_checksums=False when the folder's meta.json covered this file already.)
        if verify_checksums and (fast_digest(vec_path) != expected["xxh3"] if "xxh3" in expected
                                 else sha256_file(vec_path) != expected["sha256"]):
            raise IndexFormatError(f"{self.path}: checksum mismatch in {DENSE_VECTORS} (corrupted dense store)")
        doc_ids_path = self.path / DOC_IDS
        if not doc_ids_path.is_file() or sha256_file(doc_ids_path) != self.meta["doc_ids_sha256"]:
            raise IndexFormatError(f"{self.path}: the dense store was built for other documents than this index's "
                                   f"{DOC_IDS} (rebuild it)")
        try:
            self.vectors = np.load(vec_path, mmap_mode="r", allow_pickle=False)
            self.doc_ids: list[str] = doc_ids if doc_ids is not None else json.loads(
                doc_ids_path.read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise IndexFormatError(f"{self.path}: unreadable dense store ({e})") from e
        self.num_docs = int(self.meta["num_docs"])
        self.dim = int(self.meta["dim"])
        if (self.vectors.shape != (self.num_docs, self.dim) or self.vectors.dtype != np.float32
                or len(self.doc_ids) != self.num_docs):
            raise IndexFormatError(f"{self.path}: {DENSE_VECTORS} is {self.vectors.dtype}{self.vectors.shape}, "
                                   f"meta says float32({self.num_docs}, {self.dim})")
        if not np.isfinite(self.vectors).all():
            raise IndexFormatError(f"{self.path}: {DENSE_VECTORS} holds values that are not finite (corrupted "
                                   "dense store)")
        self.backend = _pick_backend(backend)
        self._faiss_index = None
        if self.backend == "faiss":
            import faiss

            self._faiss_index = faiss.IndexFlatIP(self.dim)
            self._faiss_index.add(np.ascontiguousarray(self.vectors))

    @property
    def info(self) -> dict[str, Any]:
        return self.meta.get("info", {})

    def size_bytes(self) -> int:
        return sum((self.path / name).stat().st_size for name in (DENSE_VECTORS, DENSE_META))

    def checked_query(self, query: np.ndarray, k: int) -> np.ndarray:
        """The query as a float32 vector of this store's dimension; LsrError for a bad k, shape or value."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise LsrError(f"k must be positive, got {k}")
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape != (self.dim,):
            raise LsrError(f"dense query has dimension {q.shape[0]}, the store has {self.dim}")
        if not np.all(np.isfinite(q)):
            raise LsrError("dense query must be finite")
        return q

    def search_vector(self, query: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx, score) of the k documents with the largest inner product, ties to the smaller doc_idx."""
        q = self.checked_query(query, k)
        k = min(k, self.num_docs)
        if self._faiss_index is not None:
            # faiss leaves open which of the documents tied at the k-th score make the cut: widen the search
            # until the tie is whole, then rank ties to the smaller doc_idx and cut
            wide = min(self.num_docs, k + 8)
            while True:
                scores, idx = self._faiss_index.search(q[None, :], wide)
                idx, scores = idx[0].astype(np.int64), scores[0].astype(np.float64)
                keep = idx >= 0
                idx, scores = idx[keep], scores[keep]
                if wide >= self.num_docs or len(scores) <= k or scores[-1] < scores[k - 1]:
                    break
                wide = min(self.num_docs, wide * 2)
            order = ranking_order(idx, scores)[:k]
            return idx[order], scores[order]
        scores = self.vectors.astype(np.float32, copy=False) @ q
        # top_k keeps positive scores only; shift (inner products can be negative), rank, then unshift
        shifted = scores.astype(np.float64) - float(scores.min()) + 1.0
        idx, _ = top_k(shifted, k)
        return idx, scores[idx].astype(np.float64)

    def search(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        return self._hits(*self.search_vector(query, k))

    def batch_search(self, queries: np.ndarray, query_ids: Sequence[str], k: int = 10) -> Run:
        queries = np.asarray(queries)
        if queries.ndim != 2 or len(queries) != len(query_ids):
            raise LsrError(f"{len(queries)} query vectors but {len(query_ids)} query ids")
        return {qid: self.search(queries[i], k) for i, qid in enumerate(query_ids)}

    def _hits(self, idx: np.ndarray, scores: np.ndarray) -> list[Hit]:
        return [Hit(self.doc_ids[i], float(s)) for i, s in zip(idx.tolist(), scores.tolist())]


def _pick_backend(backend: str) -> str:
    if backend == "numpy":
        return "numpy"
    try:
        import faiss  # noqa: F401
    except ImportError:
        if backend == "faiss":
            raise LsrError("dense backend 'faiss' needs the faiss-cpu package: pip install faiss-cpu") from None
        return "numpy"
    return "faiss"


def dense_info(index_dir: str | Path) -> dict[str, Any]:
    """The dense store's recorded `info` (model, max length, build figures), from its checked meta alone."""
    return read_dense_meta(Path(index_dir))["info"]


def read_dense_meta(path: Path) -> dict:
    meta = read_checked_meta(path, DENSE_META, fmt=DENSE_FORMAT, version=DENSE_FORMAT_VERSION, what="dense store",
                             missing="no dense store; add one with `lsr index build --dense MODEL`")
    ok = (isinstance(meta.get("num_docs"), int) and isinstance(meta.get("dim"), int) and meta["dim"] > 0
          and isinstance(meta.get("info"), dict) and isinstance(meta.get("doc_ids_sha256"), str)
          and isinstance(meta.get("files"), dict) and isinstance(meta["files"].get(DENSE_VECTORS), dict)
          and isinstance(meta["files"][DENSE_VECTORS].get("bytes"), int))
    if not ok:
        raise IndexFormatError(f"{path}: {DENSE_META}: missing or mistyped fields (corrupted dense store)")
    return meta
