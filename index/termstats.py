"""The collection's own term statistics, kept in an index folder for inference-free query sides.

BM25 computes IDF on the collection it searches; an inference-free model's IDF table was computed (and
trained) on its training corpora. So an index built with an inference-free model also stores, per token id,
in how many of its documents the token occurs (`collection_df.npy`, over the query tokenizer's tokens of the
documents' text, counted at build time), and the number of documents. The query side blends the collection's
BM25 IDF with its trained table (`lsr.encoders.IdfQueryEncoder.for_collection`).

Written as one of the folder's parts (`collection_stats_part`), so meta.json covers and checksums it; in a
sharded folder every shard holds the statistics of the whole collection. Read with its shape, dtype and
range checked: a bad file is a one-line `IndexFormatError`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import IndexFormatError, LsrError
from .files import save_array

STATS_FILE = "collection_df.npy"
STATS_KEY = "collection_stats"  # in the index's info: {"num_docs": N, "vocab_size": V}


@dataclass(frozen=True)
class CollectionStats:
    df: np.ndarray  # int64 per token id: documents containing the token
    num_docs: int


def collection_stats_part(stats: CollectionStats):
    """An index-folder part (`IndexWriter(parts=...)`) writing the collection's document frequencies."""
    df = np.asarray(stats.df)
    if df.ndim != 1 or not np.issubdtype(df.dtype, np.integer) or (df.size and (df.min() < 0 or
                                                                                df.max() > stats.num_docs)):
        raise LsrError("collection statistics: document frequencies must be integers in [0, num_docs]")

    def write(folder: Path, impacts=None, doc_ids=None) -> dict:
        save_array(folder / STATS_FILE, df.astype(np.int64))
        return {"info": {STATS_KEY: {"num_docs": int(stats.num_docs), "vocab_size": int(df.size)}}}
    return write


def read_collection_stats(folder: str | Path) -> CollectionStats | None:
    """The statistics a plain index folder (or one shard: `shards.index_shards(path)[0]` of a sharded one)
    records, or None if it has none. The folder has been opened (its meta checked) before."""
    from .storage import META

    folder = Path(folder)
    record = json.loads((folder / META).read_text(encoding="utf-8")).get("info", {}).get(STATS_KEY)
    if record is None:
        return None
    path = folder / STATS_FILE
    try:
        num_docs, vocab_size = int(record["num_docs"]), int(record["vocab_size"])
        df = np.load(path, allow_pickle=False, mmap_mode=None)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IndexFormatError(f"{path}: unreadable collection statistics ({e})") from None
    if (df.shape != (vocab_size,) or df.dtype != np.int64 or num_docs < 1
            or (df.size and (df.min() < 0 or df.max() > num_docs))):
        raise IndexFormatError(f"{path}: collection statistics of shape {df.shape}, dtype {df.dtype}, "
                               f"expected ({vocab_size},) int64 in [0, {num_docs}] ({json.dumps(record)})")
    return CollectionStats(df, num_docs)
