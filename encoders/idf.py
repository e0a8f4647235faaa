"""The inference-free query side: a query vector is the IDF of its token ids, no model at query time.

    idf_t = ln(1 + (N - df_t + 0.5) / (df_t + 0.5))     (the BM25 IDF; N documents, df_t containing token t)
    q_t   = idf_t for every distinct non-special token id t of the query

so `score(q, d) = sum over t in q of idf_t * w_d(t)`. The table is computed over a training corpus with the
model's own tokenizer and saved beside the model's weights as `idf.json` ({token: idf}, the layout OpenSearch's
inference-free models use), so it travels with `save_pretrained` / `from_pretrained`.

Corpus-adaptive IDF: an index built with an inference-free model stores its collection's document frequencies
(`lsr.index.termstats`), and the query side searching it blends the two tables,

    idf_t = (1 - w) * trained_t + w * bm25_idf(df_t of the collection)

with the weight `w` the model records (`collection_idf_weight` in lsr_encoder.json; 0 leaves the trained
table alone). Tokens the collection never contains keep their trained weight: a document may still hold them
by expansion, and the BM25 IDF of an absent token (its largest value) would over-weight them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lsr.index import LsrError, SparseBatch
from lsr.index.termstats import CollectionStats

from .base import checked_texts, read_json_object

IDF_FILE = "idf.json"


def bm25_idf(df: np.ndarray, num_docs: int) -> np.ndarray:
    """The BM25 IDF of document frequencies `df` over `num_docs` documents (float32, always > 0)."""
    df = np.asarray(df, dtype=np.float64)
    return np.log1p((num_docs - df + 0.5) / (df + 0.5)).astype(np.float32)


def document_frequencies(tokenizer, texts: Iterable[str], *, max_length: int | None = None,
                         batch_size: int = 1024) -> tuple[np.ndarray, int]:
    """(df per token id, number of texts): in how many texts each token id occurs (special tokens excluded)."""
    vocab_size = len(tokenizer)
    df = np.zeros(vocab_size, dtype=np.int64)
    special = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    num_docs = 0
    batch: list[str] = []

    def flush() -> None:
        encoded = tokenizer(batch, add_special_tokens=False, truncation=max_length is not None,
                            max_length=max_length, verbose=False)["input_ids"]
        for ids in encoded:
            df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
        batch.clear()

    for text in texts:
        batch.append(text)
        num_docs += 1
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    df[special[special < vocab_size]] = 0
    return df, num_docs


class IdfQueryEncoder:
    """Tokenizer + IDF table -> query vectors; satisfies lsr.index's QueryEncoder."""

    def __init__(self, tokenizer, idf: np.ndarray, *, max_length: int = 256) -> None:
        idf = np.asarray(idf, dtype=np.float32)
        if idf.ndim != 1 or len(idf) != len(tokenizer):
            raise LsrError(f"IDF table has {idf.shape} entries, the tokenizer {len(tokenizer)} tokens")
        if not np.all(np.isfinite(idf)) or np.any(idf < 0):
            raise LsrError("IDF table: weights must be finite and non-negative")
        self.tokenizer = tokenizer
        self.idf = idf.copy()
        self.idf[[i for i in tokenizer.all_special_ids if i < len(idf)]] = 0.0  # special tokens never match
        self.max_length = max_length
        self.vocab_size = len(idf)

    @classmethod
    def from_corpus(cls, tokenizer, texts: Iterable[str], **kwargs) -> IdfQueryEncoder:
        df, num_docs = document_frequencies(tokenizer, texts)
        if num_docs == 0:
            raise LsrError("cannot compute IDF over an empty corpus")
        return cls(tokenizer, bm25_idf(df, num_docs), **kwargs)

    def blended(self, stats: CollectionStats, weight: float) -> IdfQueryEncoder:
        """This table blended with the BM25 IDF of a collection (module docstring), as a new encoder."""
        if not 0.0 <= weight <= 1.0:
            raise LsrError(f"collection IDF weight must be in [0, 1], got {weight}")
        if len(stats.df) != self.vocab_size:
            raise LsrError(f"collection statistics over {len(stats.df)} tokens, the IDF table has {self.vocab_size}")
        seen = stats.df > 0
        idf = self.idf.copy()
        idf[seen] = (1.0 - weight) * idf[seen] + weight * bm25_idf(stats.df[seen], stats.num_docs)
        return IdfQueryEncoder(self.tokenizer, idf, max_length=self.max_length)

    def collection_stats(self, texts: Iterable[str]) -> CollectionStats:
        """The document frequencies of this tokenizer's tokens over a collection's texts (build time)."""
        df, num_docs = document_frequencies(self.tokenizer, texts)
        if num_docs == 0:
            raise LsrError("cannot compute collection statistics over an empty corpus")
        return CollectionStats(df, num_docs)

    def encode_queries(self, texts: Sequence[str]) -> SparseBatch:
        texts = checked_texts(texts)
        if not texts:
            return SparseBatch.empty(self.vocab_size)
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]
        indptr, terms, weights = [0], [], []
        for row in ids:
            t = np.unique(np.asarray(row, dtype=np.int64))
            w = self.idf[t]
            keep = w > 0
            terms.append(t[keep].astype(np.int32))
            weights.append(w[keep])
            indptr.append(indptr[-1] + int(keep.sum()))
        return SparseBatch(np.asarray(indptr, np.int64), np.concatenate(terms), np.concatenate(weights),
                           self.vocab_size)

    # -- persistence: {token: idf} beside the model's weights --------------------------------------------
    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / IDF_FILE
        tokens = self.tokenizer.convert_ids_to_tokens(np.flatnonzero(self.idf).tolist())
        table = {tok: float(self.idf[i]) for tok, i in zip(tokens, np.flatnonzero(self.idf))}
        path.write_text(json.dumps(table, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, source: str | Path, tokenizer, **kwargs) -> IdfQueryEncoder:
        """From a {token: idf} table: `source` is the JSON file or the folder holding `idf.json`."""
        path = Path(source) if str(source).endswith(".json") else Path(source) / IDF_FILE
        table = read_json_object(path, "IDF table")
        vocab = tokenizer.get_vocab()
        idf = np.zeros(len(tokenizer), dtype=np.float32)
        for token, value in table.items():
            if token not in vocab:
                raise LsrError(f"{path}: token {token!r} is not in the model's vocabulary")
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise LsrError(f"{path}: idf of {token!r} must be a finite non-negative number, got {value!r}")
            idf[vocab[token]] = value
        return cls(tokenizer, idf, **kwargs)


def has_idf(folder: str | Path) -> bool:
    return (Path(folder) / IDF_FILE).is_file()
