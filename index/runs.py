"""How `IndexWriter` turns document batches into the files of an index in bounded memory.

Batches are inverted into *runs*: a run is the batches since the last one, turned term-major (a CSC matrix:
per term its documents ascending), beside the same documents doc-major (the forward entries). While a corpus
fits in one run it stays in memory; past `run_postings` postings each full run is spilled as `.npy` files into a
hidden folder beside the target (`.NAME.tmp-PID-runs-XXXX`: a killed build's leftover is removed by the next
build of the same target, like a staged folder) and read back memory-mapped.

`write_postings` then merges the runs a group of terms at a time: a term's postings are its postings in each
run, one run after another (runs hold consecutive documents, so doc ids stay ascending), quantised (unless the
run already holds impacts), zero impacts dropped, and appended to the index's files (`files.ArrayAppender`),
doc ids encoded per group for format 3 (`codec.encode` of the group, its segments, skips and words shifted by
what the groups before it wrote). Memory: the runs' pages and one group of at most `GROUP_POSTINGS` postings,
whatever the corpus size. A corpus of one run gives the same files as one built whole (tested).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numba
import numpy as np
import scipy.sparse as sp

from . import codec
from .files import ArrayAppender, clean_leftovers
from .quantize import Quantization
from .sparse import SparseBatch
from .storage import (BM_BLOCKS, BM_IMPACTS, BM_OFFSETS, CODEC_FILES, DOC_IDX, FWD_IMPACTS, FWD_INDPTR, FWD_TERMS,
                      IMPACTS, OFFSETS, TERM_MAX, _check_postings, _kept_indptr, block_max, id_dtype)

RUN_POSTINGS = 1 << 26  # postings a writer holds in memory before it spills a run (about 0.5 GB of batches)
GROUP_POSTINGS = 1 << 25  # postings merged at a time (a few hundred MB of working memory)
_FIELDS = ("offsets", "docs", "values", "fwd_indptr", "fwd_terms", "fwd_values")


class Run(NamedTuple):
    """Consecutive documents, term-major and doc-major. `values` are weights (float) or impacts (integer,
    zeros already dropped), the same entries in both orientations."""
    offsets: np.ndarray  # int64 (vocab_size + 1)
    docs: np.ndarray  # int32 / int64: the global doc_idx of each posting, ascending per term
    values: np.ndarray
    fwd_indptr: np.ndarray  # int64 (documents + 1)
    fwd_terms: np.ndarray
    fwd_values: np.ndarray


def invert(batches: Sequence[SparseBatch], first_doc: int, quantization: Quantization | None) -> Run:
    """The run of `batches` (documents `first_doc` on): impacts when the scale is fixed, else the weights."""
    docs = SparseBatch.concat(list(batches))
    values, terms, indptr = docs.weights, docs.term_ids, docs.indptr
    if quantization is not None:
        values = quantization.quantize(values)
        keep = values > 0  # a zero impact contributes nothing to any score
        values, terms, indptr = values[keep], terms[keep], _kept_indptr(indptr, keep)
    forward = sp.csr_matrix((values, terms, indptr), shape=(len(docs), docs.vocab_size))
    postings = forward.tocsc()
    postings.sort_indices()
    last = first_doc + len(docs)
    doc_idx = postings.indices.astype(np.int64 if last > np.iinfo(np.int32).max else np.int32) + first_doc
    return Run(postings.indptr.astype(np.int64), doc_idx, postings.data, forward.indptr.astype(np.int64),
               forward.indices, forward.data)


class RunStore:
    """The spilled runs of one writer, in a hidden folder beside its target."""

    def __init__(self, target: Path, log=None) -> None:
        self.target = Path(target)
        self.log = log
        self.dir: Path | None = None
        self.count = 0

    def spill(self, run: Run) -> None:
        if self.dir is None:
            clean_leftovers(self.target, self.log)  # a killed build's runs, before this one adds its own
            self.dir = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-{os.getpid()}-runs-",
                                             dir=self.target.parent))
        folder = self.dir / f"run-{self.count:05d}"
        folder.mkdir()
        for name, array in zip(_FIELDS, run):
            np.save(folder / f"{name}.npy", array, allow_pickle=False)  # scratch: a crash discards it
        self.count += 1

    def load(self) -> list[Run]:
        assert self.dir is not None or not self.count
        return [Run(*(np.load(self.dir / f"run-{i:05d}" / f"{name}.npy", mmap_mode="r") for name in _FIELDS))
                for i in range(self.count)]

    def discard(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir, self.count = None, 0


def _impacts(values: np.ndarray, quantization: Quantization) -> np.ndarray:
    if np.issubdtype(values.dtype, np.integer):
        return np.asarray(values, dtype=quantization.dtype)
    return quantization.quantize(np.asarray(values))


@numba.njit(cache=True)
def _gather(out_docs, out_values, pos, offsets, docs, values):  # pragma: no cover - compiled
    """Append each term's postings of one run (offsets relative to docs/values) at pos[term], advancing it."""
    for t in range(offsets.shape[0] - 1):
        p = pos[t]
        for j in range(offsets[t], offsets[t + 1]):
            out_docs[p] = docs[j]
            out_values[p] = values[j]
            p += 1
        pos[t] = p


def bounded_ranges(counts: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive ranges of rows (terms, or documents) of at most `limit` postings each (a longer row alone),
    covering every row."""
    cum = np.cumsum(counts)
    groups, t0 = [], 0
    while t0 < len(counts):
        before = int(cum[t0 - 1]) if t0 else 0
        t1 = min(max(int(np.searchsorted(cum, before + limit, side="right")), t0 + 1), len(counts))
        groups.append((t0, t1))
        t0 = t1
    return groups or [(0, 0)]


def forward_matrix(runs: Sequence[Run], quantization: Quantization, vocab_size: int) -> sp.csr_matrix:
    """The documents' impacts as one CSR matrix in memory (what the index's parts are given)."""
    pieces = []
    for run in runs:
        impacts = _impacts(run.fwd_values, quantization)
        keep = impacts > 0
        pieces.append(sp.csr_matrix((impacts[keep], np.asarray(run.fwd_terms)[keep],
                                     _kept_indptr(np.asarray(run.fwd_indptr), keep)),
                                    shape=(len(run.fwd_indptr) - 1, vocab_size)))
    return sp.vstack(pieces, format="csr") if len(pieces) > 1 else pieces[0]


def write_postings(folder: Path, runs: Sequence[Run], *, vocab_size: int, num_docs: int,
                   quantization: Quantization, format_version: int, forward_index: bool, block_size: int,
                   group_postings: int | None = None) -> dict:
    """Write the postings files (and the forward index and block maxima with `forward_index`) of the runs'
    documents into `folder`; returns the meta's counts (`num_postings`, `num_blockmax`, format 3's `codec`)."""
    folder = Path(folder)
    counts = sum(np.diff(np.asarray(run.offsets)) for run in runs)
    doc_dtype, impact_dtype = id_dtype(num_docs), quantization.dtype
    out = {OFFSETS: ArrayAppender(folder / OFFSETS, np.int64), IMPACTS: ArrayAppender(folder / IMPACTS, impact_dtype)}
    if format_version == 2:
        out[DOC_IDX] = ArrayAppender(folder / DOC_IDX, doc_dtype)
    else:
        dtypes = (np.int64, np.int64, codec.chunk_dtype(num_docs), np.uint8, np.uint32)
        shapes = ((), (3,), (), (), ())
        out.update({name: ArrayAppender(folder / name, dt, shape)
                    for name, dt, shape in zip(CODEC_FILES, dtypes, shapes)})
        out[TERM_MAX] = ArrayAppender(folder / TERM_MAX, impact_dtype)
        segments, skips, chunks, widths, words = CODEC_FILES
        out[segments].append([0])
    num_blocks = -(-num_docs // block_size)
    if forward_index:
        out.update({BM_OFFSETS: ArrayAppender(folder / BM_OFFSETS, np.int64),
                    BM_BLOCKS: ArrayAppender(folder / BM_BLOCKS, id_dtype(num_blocks)),
                    BM_IMPACTS: ArrayAppender(folder / BM_IMPACTS, impact_dtype)})
        out[BM_OFFSETS].append([0])
    out[OFFSETS].append([0])
    n_post = n_seg = n_words = n_blocks = n_bm = 0
    fingerprint = 0
    for t0, t1 in bounded_ranges(counts, group_postings or GROUP_POSTINGS):
        local = np.zeros(t1 - t0 + 1, np.int64)
        np.cumsum(counts[t0:t1], out=local[1:])
        docs = np.empty(int(local[-1]), np.int64 if num_docs > np.iinfo(np.int32).max else np.int32)
        values = np.empty(int(local[-1]), runs[0].values.dtype)
        pos = local[:-1].copy()
        for run in runs:
            a = np.asarray(run.offsets[t0:t1 + 1])
            _gather(docs, values, pos, a - a[0], run.docs[a[0]:a[-1]], run.values[a[0]:a[-1]])
        impacts = _impacts(values, quantization)
        del values
        keep = impacts > 0
        if not keep.all():
            local, docs, impacts = _kept_indptr(local, keep), docs[keep], impacts[keep]
        none = np.zeros(1, np.int64)
        _, part = _check_postings(local, docs, impacts, num_docs, none, none, impacts[:0], 0, t0)
        fingerprint = (fingerprint + int(part)) & 0xFFFFFFFFFFFFFFFF  # the sum of the groups' parts
        out[OFFSETS].append(local[1:] + n_post)
        out[IMPACTS].append(impacts)
        if format_version == 2:
            out[DOC_IDX].append(docs)
        else:
            enc = codec.encode(local, docs, num_docs)
            out[segments].append(enc.segments[1:] + n_seg)
            out[skips].append(enc.skips[:-1] + np.array([n_post, n_words, n_blocks], np.int64))
            out[chunks].append(enc.chunks)
            out[widths].append(enc.widths)
            out[words].append(enc.words[:-1])  # the last word is the padding, written once at the end
            out[TERM_MAX].append(_term_max(local, impacts, t1 - t0))
            n_seg, n_words, n_blocks = n_seg + len(enc.chunks), n_words + len(enc.words) - 1, n_blocks + len(enc.widths)
        if forward_index:
            bm_offsets, bm_blocks, bm_impacts = block_max(local, docs, impacts, block_size)
            out[BM_OFFSETS].append(bm_offsets[1:] + n_bm)
            out[BM_BLOCKS].append(bm_blocks)
            out[BM_IMPACTS].append(bm_impacts)
            n_bm += len(bm_blocks)
        n_post += int(local[-1])
    meta: dict = {"num_postings": n_post, "num_blockmax": n_bm}
    if format_version != 2:
        out[skips].append([[n_post, n_words, n_blocks]])
        out[words].append([0])
        meta["codec"] = {"chunk_docs": codec.CHUNK_DOCS, "block": codec.BLOCK, "num_segments": n_seg,
                         "num_blocks": n_blocks, "num_words": n_words, "fingerprint": f"{fingerprint:016x}"}
    if forward_index:
        _write_forward(folder, runs, quantization, vocab_size, out)
    for appender in out.values():
        appender.close()
    return meta


def _write_forward(folder: Path, runs: Sequence[Run], quantization: Quantization, vocab_size: int,
                   out: dict[str, ArrayAppender]) -> None:
    out[FWD_INDPTR] = ArrayAppender(folder / FWD_INDPTR, np.int64)
    out[FWD_TERMS] = ArrayAppender(folder / FWD_TERMS, id_dtype(vocab_size))
    out[FWD_IMPACTS] = ArrayAppender(folder / FWD_IMPACTS, quantization.dtype)
    out[FWD_INDPTR].append([0])
    base = 0
    for run in runs:
        for d0, d1 in bounded_ranges(np.diff(np.asarray(run.fwd_indptr)), GROUP_POSTINGS):
            indptr = np.asarray(run.fwd_indptr[d0:d1 + 1])
            impacts = _impacts(run.fwd_values[indptr[0]:indptr[-1]], quantization)
            keep = impacts > 0
            out[FWD_INDPTR].append(_kept_indptr(indptr - indptr[0], keep)[1:] + base)
            out[FWD_TERMS].append(np.asarray(run.fwd_terms[indptr[0]:indptr[-1]])[keep])
            out[FWD_IMPACTS].append(impacts[keep])
            base += int(keep.sum())


def _term_max(offsets: np.ndarray, impacts: np.ndarray, num_terms: int) -> np.ndarray:
    """Per term its largest impact (0 for a term without postings)."""
    out = np.zeros(num_terms, dtype=impacts.dtype)
    has = np.flatnonzero(offsets[1:] > offsets[:-1])
    if len(has):
        out[has] = np.maximum.reduceat(impacts, offsets[has])
    return out
