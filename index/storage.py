"""The index folder on disk: per-term postings of quantised impacts as numpy arrays, plus a versioned
`meta.json` that records the quantisation, the encoder, and the size and checksums of every file in the
folder (the sparse arrays, `doc_ids.json`, and the parts that travel with them: the dense store,
`docs.jsonl`, a Lucene index).

Two layouts, both read here (`READ_VERSIONS`); `folder.IndexWriter` writes `FORMAT_VERSION` (2) unless told
`format_version=3`:
- format 3: the doc ids compressed by `codec.py` (chunk-local d-gaps bit-packed per block of 128,
  segments of 2^16 documents with skips: `postings_segments/skips/chunks/widths/docs.npy`), the impacts a plain
  uint8/uint16 array in posting order, the largest impact per term (`postings_term_max.npy`, MaxScore's
  bounds), and, only with `forward_index=True`, the doc-major forward index and the block maxima (what the
  blockmax algorithm reads; `has_forward`). 1.94 bytes per posting at 1M synthetic documents.
- format 2: the doc ids as a plain uint16/int32 array, the forward index and the block maxima always (9.35
  bytes per posting at 1M).
`postings(t)`, `postings_doc_idx()` and `doc_matrix()` give the same arrays for either (format 3 decoding them).

The folder is written whole by `folder.IndexWriter` (every part staged, `meta.json` last, checked, published in
one rename); this module holds the sparse arrays' layout, the meta and the reader.

Opening checks, in this order, each failure an `IndexFormatError` naming the file:
- `meta.json`: format, version, its own checksum, a size cap, no deep nesting (format 3: the codec record);
- every file the meta lists exists with its recorded size, and no file of the folder is missing from it;
- checksums: xxh3-128 of every file (about 10 GB/s, memory-mapped), or, with `verify_checksums=False`, of
  every file but the large postings arrays (`LARGE_FILES`); `verify_index` (and `lsr index verify`) also
  recomputes SHA-256;
- structure (`_check_structure`): always the `.npy` headers of the recorded dtype and shape and the offsets
  monotone and in range (format 3: the segment table against the term offsets and the block counts); and,
  wherever the large arrays are not hashed (verification off) and at every build and `verify_index`, one
  numba pass over each array: doc ids strictly ascending per term and term ids per document (format 3: every
  segment decoded, its doc ids inside its chunk, its words what its bit widths take, chunks ascending, the
  term maxima), no zero impacts, every block maximum equal to its postings' maximum, and an order-free
  fingerprint of the (term, doc, impact) entries equal between the postings and the forward index (format 3
  without one: equal to the fingerprint the writer took of the vectors it was given, in the meta). So zeroed
  doc ids, shifted offsets, swapped files or edited impacts are refused with hashing on (by the hash) and off
  (by the pass); the pass costs more than the hash (3.5 s against 0.3 s at 1M documents), so on is the default.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numba
import numpy as np
import scipy.sparse as sp

from . import codec
from .errors import IndexFormatError
from .files import fast_digest, sha256_file
from .quantize import Quantization

FORMAT = "lsr-index"
# what new builds write. Format 3 is 4.9x smaller but its exact search measured 1.08x format 2's mean latency at
# 1M (docs/FIGURES.md), short of 'no worse': so 2 stays the default until it is; IndexWriter(format_version=3).
FORMAT_VERSION = 2
READ_VERSIONS = (2, 3)
SHARDED_FORMAT = "lsr-sharded-index"  # a folder of lsr indexes over consecutive document ranges (shards.py)
META = "meta.json"
MAX_META_BYTES = 16 << 20  # a meta.json is a few KB; anything this large is not one
DEFAULT_BLOCK_SIZE = 32  # documents per block of the block-max bounds
# term-major postings: term t's postings are [offsets[t], offsets[t+1]), doc_idx ascending within a term
OFFSETS, DOC_IDX, IMPACTS = "postings_offsets.npy", "postings_doc_idx.npy", "postings_impacts.npy"
# doc-major forward index: document d's terms are [indptr[d], indptr[d+1]), term_id ascending
FWD_INDPTR, FWD_TERMS, FWD_IMPACTS = "forward_indptr.npy", "forward_term_ids.npy", "forward_impacts.npy"
# block-max bounds: for term t, the blocks holding it and the largest impact of t in each, block ascending
BM_OFFSETS, BM_BLOCKS, BM_IMPACTS = "blockmax_offsets.npy", "blockmax_blocks.npy", "blockmax_impacts.npy"
DOC_IDS = "doc_ids.json"  # list[str], doc_idx -> doc_id
# format 3: the doc ids compressed (codec.py), in the files of `codec.Encoded`'s fields; the largest impact per term
SEGMENTS, SKIPS, CHUNKS = "postings_segments.npy", "postings_skips.npy", "postings_chunks.npy"
WIDTHS, WORDS, TERM_MAX = "postings_widths.npy", "postings_docs.npy", "postings_term_max.npy"
CODEC_FILES = (SEGMENTS, SKIPS, CHUNKS, WIDTHS, WORDS)
FORWARD_FILES = (FWD_INDPTR, FWD_TERMS, FWD_IMPACTS, BM_OFFSETS, BM_BLOCKS, BM_IMPACTS)
ARRAY_FILES = (OFFSETS, DOC_IDX, IMPACTS, *FORWARD_FILES)  # format 2
# O(postings), structure-checked, so not hashed with checksums off (format 3's skips, chunks and widths are a few
# percent of the postings' bytes: hashed, so their damage is named by the checksum)
LARGE_FILES = (DOC_IDX, IMPACTS, FWD_TERMS, FWD_IMPACTS, BM_BLOCKS, BM_IMPACTS, WORDS)
DATA_FILES = (*ARRAY_FILES, DOC_IDS)


def array_files(meta: dict) -> tuple[str, ...]:
    """The sparse index's arrays in a folder of this meta: format 2 all of ARRAY_FILES; format 3 the offsets,
    impacts, the codec's arrays, the term maxima, and the forward index and block maxima if built with them."""
    if meta.get("format_version") == 2:
        return ARRAY_FILES
    return (OFFSETS, IMPACTS, *CODEC_FILES, TERM_MAX, *(FORWARD_FILES if meta.get("forward_index") else ()))


def data_files(meta: dict) -> tuple[str, ...]:
    return (*array_files(meta), DOC_IDS)


# "folder": the meta's files cover every file of the folder (since 2026-12); older format-2 metas list only
# DATA_FILES and still open, with `verify_index` saying what they leave uncovered.
COVERAGE = "folder"


def _meta_checksum(meta: dict) -> str:
    import hashlib

    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


ID_DTYPES = (np.dtype(np.uint16), np.dtype(np.int32))  # doc, term and block ids: the narrowest that holds them


def id_dtype(count: int) -> np.dtype:
    """uint16 for ids below 65,536 (a BERT vocabulary, the block ids of up to 2M documents), else int32."""
    return ID_DTYPES[0] if count <= 1 << 16 else ID_DTYPES[1]


def is_lsr_index(path: Path) -> bool:
    """True for a folder whose meta.json says it is an lsr index, plain or sharded (what --overwrite may
    replace)."""
    try:
        meta = json.loads((Path(path) / META).read_text(encoding="utf-8")[:MAX_META_BYTES])
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("format") in (FORMAT, SHARDED_FORMAT)


UNCOVERABLE = ("milvus",)  # subfolders an engine owns and changes when it opens them (index/milvus.py)


def folder_files(folder: Path, uncovered: Sequence[str] = ()) -> list[str]:
    """Every file under `folder` but meta.json and the `uncovered` subfolders (the meta's list of the ones an
    engine owns; their part records its own check), as sorted relative POSIX paths."""
    skip = tuple(f"{d}/" for d in uncovered)
    return sorted(name for name in (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
                  if name != META and not name.startswith(skip))


def uncovered_dirs(meta: dict) -> list[str]:
    return list(meta.get("uncovered", []))


def file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path), "xxh3": fast_digest(path)}


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
    """A read-only, memory-mapped view of an index folder, validated on open (see the module docstring)."""

    def __init__(self, path: str | Path, *, verify_checksums: bool = True, scan: bool | None = None) -> None:
        """`verify_checksums`: xxh3 of every file (else of the small ones only); `scan`: the structural pass
        over every posting (default: when the large arrays are not hashed; builds and `verify_index` do both)."""
        self.path = Path(path)
        self.meta = _read_meta(self.path)
        check_files(self.path, self.meta, digest="xxh3" if verify_checksums else "small")
        self.quantization = Quantization.from_dict(self.meta["quantization"])
        self.num_docs = self.meta["num_docs"]
        self.vocab_size = self.meta["vocab_size"]
        self.block_size = self.meta["block_size"]
        self.num_blocks = -(-self.num_docs // self.block_size)
        self.format_version = self.meta["format_version"]
        arrays = {name: _load_array(self.path, name) for name in array_files(self.meta)}
        self.doc_ids: list[str] = read_doc_ids(self.path, self.num_docs)
        self.offsets, self.impacts = arrays[OFFSETS], arrays[IMPACTS]
        self.doc_idx = arrays.get(DOC_IDX)  # format 2; format 3 keeps them encoded (`encoded`, `postings`)
        self.encoded = codec.Encoded(*(arrays[name] for name in CODEC_FILES)) if self.format_version == 3 else None
        self.term_max = arrays.get(TERM_MAX)
        # the forward index and the block maxima: always in format 2, optional in format 3 (None without)
        self.forward_indptr, self.forward_term_ids = arrays.get(FWD_INDPTR), arrays.get(FWD_TERMS)
        self.forward_impacts = arrays.get(FWD_IMPACTS)
        self.bm_offsets, self.bm_blocks = arrays.get(BM_OFFSETS), arrays.get(BM_BLOCKS)
        self.bm_impacts = arrays.get(BM_IMPACTS)
        self._check_structure(scan=not verify_checksums if scan is None else scan)

    def _check_structure(self, *, scan: bool) -> None:
        """Headers, shapes and offsets always (O(terms + documents)); with `scan`, every posting too."""
        n, nb = self.meta["num_postings"], self.meta["num_blockmax"]
        impact_dtype = np.dtype(self.quantization.dtype)

        def fail(files: str, problem: str):
            raise IndexFormatError(f"{self.path}: {files}: {problem} (corrupted index; `lsr index verify` "
                                   "checks every file)")

        def check_csr(names, indptr, rows, columns, values, num_columns, length):
            ptr_name, id_name, value_name = names
            if indptr.shape != (rows + 1,) or indptr.dtype != np.int64:
                fail(ptr_name, f"{indptr.dtype}{indptr.shape}, expected int64({rows + 1},)")
            if indptr[0] != 0 or indptr[-1] != length or not _monotone(np.asarray(indptr)):
                fail(ptr_name, f"offsets are not a monotone 0..{length} sequence")
            for name, array in ((id_name, columns), (value_name, values)):
                if array is None:
                    continue
                if array.shape != (length,):
                    fail(name, f"{array.shape[0] if array.ndim == 1 else array.shape} entries, meta says {length}")
            if columns is not None and (columns.dtype not in ID_DTYPES or columns.dtype != id_dtype(num_columns)):
                fail(id_name, f"ids are {columns.dtype}, expected {id_dtype(num_columns)}")
            if values.dtype != impact_dtype:
                fail(value_name, f"impacts are {values.dtype}, meta says {self.quantization.bits} bits")

        if self.format_version == 2:
            check_csr((OFFSETS, DOC_IDX, IMPACTS), self.offsets, self.vocab_size, self.doc_idx, self.impacts,
                      self.num_docs, n)
        else:
            check_csr((OFFSETS, WORDS, IMPACTS), self.offsets, self.vocab_size, None, self.impacts, self.num_docs, n)
            self._check_codec_headers(fail)
        if self.has_forward:
            check_csr((FWD_INDPTR, FWD_TERMS, FWD_IMPACTS), self.forward_indptr, self.num_docs,
                      self.forward_term_ids, self.forward_impacts, self.vocab_size, n)
            check_csr((BM_OFFSETS, BM_BLOCKS, BM_IMPACTS), self.bm_offsets, self.vocab_size, self.bm_blocks,
                      self.bm_impacts, self.num_blocks, nb)
        if not scan:
            return
        if self.format_version == 3:
            codes, postings_print = _check_codec(*(np.asarray(a) for a in self.encoded), np.asarray(self.impacts),
                                                 np.asarray(self.term_max), self.num_docs)
            files = {1: f"{WORDS} (or {WIDTHS})", 2: IMPACTS, 3: f"{CHUNKS} (or {SEGMENTS})",
                     4: f"{WIDTHS} (or {SKIPS}/{WORDS})", 5: f"{TERM_MAX} (or {IMPACTS})"}
            problems = {1: "doc ids out of range", 2: "zero impacts stored", 3: "chunks not ascending or out of range",
                        4: "bit widths and words disagree", 5: "term maxima disagree with the impacts"}
            bad = np.flatnonzero(codes)
            if len(bad):
                first, code = int(bad[0]), int(codes[bad[0]])
                fail(files[code], f"{problems[code]} (term {first}, {len(bad)} terms in all)")
            if f"{int(postings_print):016x}" != self.meta["codec"]["fingerprint"]:
                fail(f"{WORDS}/{IMPACTS}", "the postings hold other (term, document, impact) entries than the index "
                     "was built with")
            if not self.has_forward:
                return
            doc_idx = self.postings_doc_idx()
        else:
            doc_idx = np.asarray(self.doc_idx)
        ids = DOC_IDX if self.format_version == 2 else WORDS
        bad_terms, postings_print = _check_postings(
            np.asarray(self.offsets), doc_idx, np.asarray(self.impacts), self.num_docs,
            np.asarray(self.bm_offsets), np.asarray(self.bm_blocks), np.asarray(self.bm_impacts), self.block_size)
        bad_docs, forward_print = _check_forward(np.asarray(self.forward_indptr), np.asarray(self.forward_term_ids),
                                                 np.asarray(self.forward_impacts), self.vocab_size)
        # Which file is wrong: ids and zeros point at one array; a disagreement between the postings and the
        # forward index cannot say which of the two is damaged (the checksums can: `lsr index verify`).
        both = f"{OFFSETS}/{ids}/{IMPACTS} or {FWD_INDPTR}/{FWD_TERMS}/{FWD_IMPACTS}"
        agree = postings_print == forward_print
        for codes, unit, files in ((bad_terms, "term", {1: f"{ids} (or {OFFSETS})", 2: IMPACTS,
                                                        3: f"{BM_BLOCKS}/{BM_IMPACTS}" if agree else both}),
                                   (bad_docs, "document", {1: f"{FWD_TERMS} (or {FWD_INDPTR})", 2: FWD_IMPACTS})):
            bad = np.flatnonzero(codes)
            if len(bad):
                first = int(bad[0])
                code = int(codes[first])
                problem = {1: "ids not strictly ascending or out of range", 2: "zero impacts stored",
                           3: "block maxima disagree with the postings"}[code]
                fail(files[code], f"{problem} ({unit} {first}, {len(bad)} {unit}s in all)")
        if not agree:
            fail(both, "the postings and the forward index hold different (term, document, impact) entries")

    def _check_codec_headers(self, fail) -> None:
        """Format 3's codec arrays: dtypes and shapes per the meta, the segment table consistent with the term
        offsets and the block counts with the segments' postings (O(terms + segments))."""
        record = self.meta["codec"]
        if record.get("chunk_docs") != codec.CHUNK_DOCS or record.get("block") != codec.BLOCK:
            fail(META, f"codec chunks of {record.get('chunk_docs')} documents and blocks of {record.get('block')} "
                 f"postings; this lsr reads {codec.CHUNK_DOCS} and {codec.BLOCK}")
        segments, skips, chunks, widths, words = self.encoded
        num_seg, num_blocks, num_words = record["num_segments"], record["num_blocks"], record["num_words"]
        expected = {SEGMENTS: (segments, np.int64, (self.vocab_size + 1,)),
                    SKIPS: (skips, np.int64, (num_seg + 1, 3)),
                    CHUNKS: (chunks, codec.chunk_dtype(self.num_docs), (num_seg,)),
                    WIDTHS: (widths, np.uint8, (num_blocks,)), WORDS: (words, np.uint32, (num_words + 1,)),
                    TERM_MAX: (self.term_max, self.quantization.dtype, (self.vocab_size,))}
        for name, (array, dtype, shape) in expected.items():
            if array.dtype != np.dtype(dtype) or array.shape != shape:
                fail(name, f"{array.dtype}{array.shape}, expected {np.dtype(dtype)}{shape}")
        segments, skips = np.asarray(segments), np.asarray(skips)
        if segments[0] != 0 or segments[-1] != num_seg or not _monotone(segments):
            fail(SEGMENTS, f"segment offsets are not a monotone 0..{num_seg} sequence")
        counts = np.diff(skips, axis=0)
        if (skips[0] != 0).any() or (counts < 0).any() or (counts[:, 0] == 0).any() \
                or tuple(skips[-1]) != (self.meta["num_postings"], num_words, num_blocks):
            fail(SKIPS, "segment skips are not a monotone table of non-empty segments ending at the totals")
        if not np.array_equal(skips[segments, 0], np.asarray(self.offsets)):
            fail(f"{SEGMENTS} (or {SKIPS})", "the segments do not cover each term's postings")
        if not np.array_equal(counts[:, 2], -(-counts[:, 0] // codec.BLOCK)):
            fail(SKIPS, f"block counts are not the segments' postings in blocks of {codec.BLOCK}")

    @property
    def has_forward(self) -> bool:
        """Whether the folder holds the forward index and the block maxima (format 2 always; format 3 if built
        with `forward_index=True`): what the blockmax algorithm reads."""
        return self.forward_indptr is not None

    @property
    def info(self) -> dict[str, Any]:
        return self.meta.get("info", {})

    @property
    def covers_folder(self) -> bool:
        """Whether meta.json covers every file of the folder (so opening it checked them all)."""
        return self.meta.get("coverage") == COVERAGE

    def postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx, impacts) of one term (format 3: decoded)."""
        lo, hi = self.offsets[term_id], self.offsets[term_id + 1]
        if self.encoded is None:
            return self.doc_idx[lo:hi], self.impacts[lo:hi]
        docs = np.empty(hi - lo, dtype=np.int64)
        codec.decode_terms(*(np.asarray(a) for a in self.encoded), np.array([term_id], np.int64),
                           np.zeros(2, np.int64), docs)
        return docs, self.impacts[lo:hi]

    def postings_doc_idx(self) -> np.ndarray:
        """Every posting's doc_idx, term-major (format 3: decoded into memory, int32, 4 bytes a posting)."""
        return self.doc_idx if self.encoded is None else codec.decode(self.encoded)

    def doc_matrix(self) -> sp.csr_matrix:
        """Documents x terms matrix of impacts, for brute force, PRF and analysis: the forward index, or (a
        format-3 index without one) the postings decoded and transposed (O(postings) time and memory)."""
        if self.has_forward:
            return sp.csr_matrix((self.forward_impacts, self.forward_term_ids, self.forward_indptr),
                                 shape=(self.num_docs, self.vocab_size))
        return sp.csc_matrix((np.asarray(self.impacts), self.postings_doc_idx(), np.asarray(self.offsets)),
                             shape=(self.num_docs, self.vocab_size)).tocsr()

    def size_bytes(self) -> int:
        """Bytes of the sparse index's own files (other parts count their own)."""
        return sum((self.path / name).stat().st_size for name in (*data_files(self.meta), META))


def _load_array(path: Path, name: str) -> np.ndarray:
    try:
        return np.load(path / name, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise IndexFormatError(f"{path}: {name}: not a readable .npy array ({str(e).splitlines()[0]})") from None


def read_doc_ids(path: Path, num_docs: int) -> list[str]:
    try:
        doc_ids = json.loads((path / DOC_IDS).read_text(encoding="utf-8"))
    except (ValueError, OSError, UnicodeDecodeError, RecursionError) as e:
        raise IndexFormatError(f"{path}: {DOC_IDS}: not a JSON list of strings ({type(e).__name__})") from None
    if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids):
        raise IndexFormatError(f"{path}: {DOC_IDS}: not a JSON list of strings")
    if len(doc_ids) != num_docs:
        raise IndexFormatError(f"{path}: {DOC_IDS}: {len(doc_ids)} ids, meta says {num_docs} documents")
    if len(set(doc_ids)) != len(doc_ids):
        raise IndexFormatError(f"{path}: {DOC_IDS}: repeated doc ids")
    return doc_ids


def _monotone(a: np.ndarray) -> bool:
    return bool(len(a) < 2 or (a[1:] >= a[:-1]).all())


SMALL_FILE_BYTES = 64 << 20  # files below this are hashed on every open, even with checksums off


def check_files(path: Path, meta: dict, *, digest: str) -> None:
    """Every file the meta lists exists with its size; none of the folder's files is unlisted (for metas that
    cover the folder); checksums per `digest`: "sha256" (all files), "xxh3" (all files), "small" (xxh3 of
    the files below SMALL_FILE_BYTES that are not structure-checked arrays), "none"."""
    files = meta["files"]
    for name in data_files(meta):
        if name not in files:
            raise IndexFormatError(f"{path}: meta.json does not list {name} (corrupted index)")
    for name, record in files.items():
        p = path / name
        if not p.is_file():
            raise IndexFormatError(f"{path}: missing {name} (half-written or damaged index)")
        size = p.stat().st_size
        if size != record["bytes"]:
            raise IndexFormatError(f"{path}: {name} has {size} bytes, meta says {record['bytes']} "
                                   "(truncated or damaged index)")
    if meta.get("coverage") == COVERAGE:
        unlisted = [name for name in folder_files(path, uncovered_dirs(meta)) if name not in files]
        if unlisted:
            raise IndexFormatError(f"{path}: {unlisted[0]} is not one of the index's files"
                                   + (f" ({len(unlisted)} in all)" if len(unlisted) > 1 else "")
                                   + ": the folder was changed after it was built")
    for name, record in files.items():
        p = path / name
        if digest == "sha256" or (digest == "xxh3" and "xxh3" not in record):
            ok = sha256_file(p) == record["sha256"]
        elif digest == "xxh3" or (digest == "small" and name not in LARGE_FILES and record["bytes"] < SMALL_FILE_BYTES
                                  and "xxh3" in record):
            ok = fast_digest(p) == record["xxh3"]
        else:
            continue
        if not ok:
            raise IndexFormatError(f"{path}: checksum mismatch in {name} (corrupted index)")


_META_TYPES = {"num_docs": int, "vocab_size": int, "num_postings": int, "num_blockmax": int, "block_size": int,
               "quantization": dict, "info": dict, "files": dict}


def _typed_meta(path: Path, meta: dict) -> dict:
    for key, kind in _META_TYPES.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise IndexFormatError(f"{path}: meta.json: {key} is {value!r:.40}, not a {kind.__name__} "
                                   "(corrupted index)")
    if meta["block_size"] < 1 or meta["vocab_size"] < 1:
        raise IndexFormatError(f"{path}: meta.json: block_size and vocab_size must be positive")
    if meta["format_version"] == 3:
        record = meta.get("codec")
        if (not isinstance(record, dict) or not isinstance(meta.get("forward_index"), bool)
                or not isinstance(record.get("fingerprint"), str)
                or any(not isinstance(record.get(key), int) or isinstance(record.get(key), bool) or record[key] < 0
                       for key in ("num_segments", "num_blocks", "num_words", "chunk_docs", "block"))):
            raise IndexFormatError(f"{path}: meta.json: bad codec record or forward_index flag (corrupted index)")
    for name, record in meta["files"].items():
        if (not isinstance(name, str) or name.startswith("/") or ".." in Path(name).parts
                or not isinstance(record, dict) or not isinstance(record.get("bytes"), int)
                or not isinstance(record.get("sha256"), str)):
            raise IndexFormatError(f"{path}: meta.json: bad file record {name!r:.60} (corrupted index)")
    uncovered = meta.get("uncovered", [])
    if not isinstance(uncovered, list) or any(d not in UNCOVERABLE for d in uncovered):
        raise IndexFormatError(f"{path}: meta.json: uncovered is {uncovered!r:.60}; only {', '.join(UNCOVERABLE)} "
                               "may be left out of the checksums (corrupted index)")
    if any(name.startswith(tuple(f"{d}/" for d in uncovered)) for name in meta["files"]):
        raise IndexFormatError(f"{path}: meta.json lists files of an uncovered subfolder (corrupted index)")
    try:
        Quantization.from_dict(meta["quantization"])
    except (KeyError, TypeError, ValueError) as e:
        raise IndexFormatError(f"{path}: meta.json: bad quantization ({e})") from None
    return meta


def read_checked_meta(path: Path, name: str, *, fmt: str, version: int | tuple[int, ...], what: str,
                      missing: str) -> dict:
    """A meta JSON file of `fmt` and `version` (or one of several) whose own checksum holds; IndexFormatError
    naming the problem."""
    versions = version if isinstance(version, tuple) else (version,)
    meta_path = path / name
    if not meta_path.is_file():
        raise IndexFormatError(f"{path}: no {name} ({missing})")
    if meta_path.stat().st_size > MAX_META_BYTES:
        raise IndexFormatError(f"{path}: {name} is {meta_path.stat().st_size} bytes, not a meta file")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise IndexFormatError(f"{path}: {name} is not valid JSON (corrupted {what}; {type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise IndexFormatError(f"{path}: {name} does not describe an {fmt}")
    if meta.get("format_version") not in versions or isinstance(meta.get("format_version"), bool):
        readable = " and ".join(str(v) for v in versions)
        raise IndexFormatError(f"{path}: {what} format version {meta.get('format_version')!r}, this lsr reads "
                               f"version {readable}; rebuild it with `lsr index build`")
    if meta.get("meta_sha256") != _meta_checksum(meta):
        raise IndexFormatError(f"{path}: checksum mismatch in {name} (corrupted {what})")
    return meta


def _read_meta(path: Path) -> dict:
    if not path.is_dir():
        raise IndexFormatError(f"{path}: no such index folder")
    meta = read_checked_meta(path, META, fmt=FORMAT, version=READ_VERSIONS, what="index",
                             missing="not an lsr index, or one whose write never finished")
    return _typed_meta(path, meta)


# -- structural checks: one pass over each array, in parallel over terms / documents ------------------------
@numba.njit(inline="always")
def _mix(a, b, c):  # pragma: no cover - compiled
    """A mixed (term, doc, impact) triplet: summed over entries, an order-free fingerprint (one round of
    multiply-xorshift: enough to make a moved, dropped or edited entry change the sum)."""
    x = np.uint64(a) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(b) * np.uint64(0xC2B2AE3D27D4EB4F) \
        + np.uint64(c) * np.uint64(0x165667B19E3779F9)
    return (x ^ (x >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)


@numba.njit(parallel=True, cache=True)
def _check_rows(indptr, ids, values, limit, rows_are_terms, bm_offsets, bm_blocks, bm_impacts, block_size,
                block_shift, row_base=0):  # pragma: no cover - compiled
    """One CSR orientation of the impacts (postings: rows are terms, ids doc_idx; forward: rows are documents,
    ids term ids). Per row: 0 if fine, 1 ids not strictly ascending or not below `limit`, 2 a zero impact, 3
    (postings, block_size > 0) block maxima not those of the row; and the fingerprint of every (term, doc,
    impact) entry, equal for both orientations of the same impacts (row r is term or document `row_base + r`: a
    slice of rows gives its part of the sum)."""
    num_rows = indptr.shape[0] - 1
    codes = np.zeros(num_rows, np.int8)
    prints = np.zeros(num_rows, np.uint64)
    for r in numba.prange(num_rows):
        code = 0
        h = np.uint64(0)
        prev = -1
        j, j_end = (bm_offsets[r], bm_offsets[r + 1]) if block_size > 0 else (0, 0)
        block, block_max_ = -1, 0
        for p in range(indptr[r], indptr[r + 1]):
            x = np.int64(ids[p])
            w = values[p]
            if x <= prev or x >= limit:
                code = 1
                break
            if w == 0:
                code = 2
                break
            prev = x
            h += _mix(row_base + r, x, w) if rows_are_terms else _mix(x, row_base + r, w)
            if block_size > 0:
                b = x >> block_shift if block_shift >= 0 else x // block_size
                if b != block:
                    if block >= 0:
                        if j >= j_end or bm_blocks[j] != block or bm_impacts[j] != block_max_:
                            code = 3
                            break
                        j += 1
                    block, block_max_ = b, w
                elif w > block_max_:
                    block_max_ = w
        if code == 0 and block >= 0:
            if j >= j_end or bm_blocks[j] != block or bm_impacts[j] != block_max_:
                code = 3
            else:
                j += 1
        if code == 0 and j != j_end:
            code = 3
        codes[r] = code
        prints[r] = h
    return codes, prints.sum()


def _check_postings(offsets, doc_idx, impacts, num_docs, bm_offsets, bm_blocks, bm_impacts, block_size,
                    first_term=0):
    shift = block_size.bit_length() - 1 if block_size & (block_size - 1) == 0 else -1  # no division per posting
    return _check_rows(offsets, doc_idx, impacts, num_docs, True, bm_offsets, bm_blocks, bm_impacts, block_size,
                       shift, first_term)


def _check_forward(indptr, term_ids, impacts, vocab_size):
    none = np.zeros(1, np.int64)
    return _check_rows(indptr, term_ids, impacts, vocab_size, False, none, none, impacts[:0], 0, -1)


@numba.njit(parallel=True, cache=True)
def _check_codec(segments, skips, chunks, widths, words, impacts, term_max, num_docs):  # pragma: no cover
    """One pass over format 3's postings, decoding every segment (the header checks have passed: the segment
    table covers each term's postings, block counts agree). Per term: 0 if fine, 1 a doc id beyond its chunk
    (or the last document), 2 a zero impact, 3 chunks not strictly ascending or out of range, 4 a width above
    16 bits or a segment's words not what its widths take, 5 the term maximum not its largest impact; and the
    (term, doc, impact) fingerprint of every posting (`_mix`, as `_check_rows` sums it)."""
    vocab = segments.shape[0] - 1
    codes = np.zeros(vocab, np.int8)
    prints = np.zeros(vocab, np.uint64)
    n_chunks = (num_docs + codec.CHUNK_DOCS - 1) >> codec.CHUNK_SHIFT
    for t in numba.prange(vocab):
        code = 0
        h = np.uint64(0)
        last_chunk = -1
        largest = 0
        for s in range(segments[t], segments[t + 1]):
            c = np.int64(chunks[s])
            if c <= last_chunk or c >= n_chunks:
                code = 3
                break
            last_chunk = c
            lo = c << codec.CHUNK_SHIFT
            limit = min(codec.CHUNK_DOCS, num_docs - lo)
            p, base, blk, stop = skips[s, 0], skips[s, 1], skips[s, 2], skips[s + 1, 0]
            d = np.int64(-1)
            while p < stop and code == 0:
                width = np.int64(widths[blk])
                if width > codec.MAX_WIDTH:
                    code = 4
                    break
                mask = np.uint64((1 << width) - 1)
                count = min(codec.BLOCK, stop - p)
                if base + ((count * width + 31) >> 5) > skips[s + 1, 1]:
                    code = 4
                    break
                buf, avail = np.uint64(0), 0
                for j in range(count):
                    if avail < width:
                        buf |= np.uint64(words[base]) << np.uint64(avail)
                        base += 1
                        avail += 32
                    d += np.int64(buf & mask) + 1
                    buf >>= np.uint64(width)
                    avail -= width
                    w = impacts[p + j]
                    if d >= limit:
                        code = 1
                        break
                    if w == 0:
                        code = 2
                        break
                    largest = max(largest, np.int64(w))
                    h += _mix(t, lo + d, w)
                p += count
                blk += 1
            if code == 0 and base != skips[s + 1, 1]:
                code = 4
            if code:
                break
        if code == 0 and largest != term_max[t]:
            code = 5
        codes[t] = code
        prints[t] = h
    return codes, prints.sum()
