"""Sharded index folders (index/shards.py): searched as one, they equal a single index over the same documents
exactly (same hits, order and scores; the feedback rows PRF reads too); merge and re-shard keep that; a bad
shard, manifest or input is refused with one line naming it; a killed sharded build leaves nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr.index import IndexFormatError, IndexReader, IndexWriter, LsrError, Quantization, SparseBatch
from lsr.index.dense import dense_part
from lsr.index.documents import StoredDocument, documents_part
from lsr.index.shards import ShardedWriter, merge_indexes, open_shards, shard_ranges, verify_any

VOCAB = 500
N = 403  # not a multiple of any shard count used here


def _corpus(seed: int = 0, n: int = N):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        terms = np.unique(rng.integers(0, VOCAB, rng.integers(1, 40)))
        rows.append((terms, rng.gamma(1.0, 1.0, len(terms)).astype(np.float32) + 0.01))
    indptr = np.concatenate([[0], np.cumsum([len(t) for t, _ in rows])]).astype(np.int64)
    docs = SparseBatch(indptr, np.concatenate([t for t, _ in rows]).astype(np.int32),
                       np.concatenate([w for _, w in rows]), VOCAB)
    # ties on purpose: duplicated documents score alike, so the merge's tie order is exercised
    docs = SparseBatch.concat([docs, docs.select(np.arange(0, 40))])
    ids = [f"d{seed}-{i}" for i in range(len(docs))]
    vectors = rng.standard_normal((len(docs), 16)).astype(np.float32)
    vectors[n:] = vectors[:40]
    texts = [StoredDocument(d, f"title {d}", f"text {d}") for d in ids]
    return docs, ids, vectors, texts


def _plain(path: Path, docs, ids, vectors, texts, quantization=None) -> Path:
    parts = [dense_part(vectors, {"model": "test-dense"}), documents_part(texts)]
    with IndexWriter(path, vocab_size=VOCAB, info={"model": "test"}, parts=parts, quantization=quantization) as w:
        w.add(docs, ids)
    return path


def _sharded(path: Path, docs, ids, vectors, texts, shards: int, quantization=None) -> Path:
    quant = quantization or Quantization.fit(float(docs.weights.max()))
    with ShardedWriter(path, num_docs=len(ids), shards=shards) as writer:
        for i, (a, b) in enumerate(writer.ranges):
            parts = [dense_part(vectors[a:b], {"model": "test-dense"}), documents_part(texts[a:b])]
            writer.write_shard(i, docs.select(np.arange(a, b)), ids[a:b], vocab_size=VOCAB, quantization=quant,
                               info={"model": "test"}, parts=parts)
        writer.commit({"model": "test"})
    return path


def _queries(n: int = 40, seed: int = 1):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        terms = np.unique(rng.integers(0, VOCAB, rng.integers(1, 30)))
        yield terms, rng.random(len(terms)) + 0.05


def _assert_same_search(a, b, ks=(1, 10, 100, 10_000)):
    for terms, weights in _queries():
        for k in ks:
            (ia, sa), (ib, sb) = a.sparse(terms, weights, k), b.sparse(terms, weights, k)
            assert np.array_equal(ia, ib) and np.array_equal(sa, sb)
    rng = np.random.default_rng(2)
    for _ in range(10):
        q = rng.standard_normal(16).astype(np.float32)
        (ia, sa), (ib, sb) = a.dense(q, 25), b.dense(q, 25)
        assert np.array_equal(ia, ib) and np.array_equal(sa, sb)
    rows = np.array([400, 3, 150, 402, 0, 299], dtype=np.int64)
    assert (a.feedback_rows(rows) != b.feedback_rows(rows)).nnz == 0
    assert np.array_equal(a.dense_rows(rows), b.dense_rows(rows))
    assert a.doc_ids == b.doc_ids and a.documents == b.documents


@pytest.fixture(scope="module")
def corpus():
    return _corpus()


@pytest.fixture(scope="module")
def plain(tmp_path_factory, corpus):
    return open_shards(_plain(tmp_path_factory.mktemp("plain") / "idx", *corpus))


@pytest.mark.parametrize("shards", [1, 2, 4, 7])
def test_a_sharded_index_equals_the_single_index(tmp_path, corpus, plain, shards):
    index = open_shards(_sharded(tmp_path / "sh", *corpus, shards=shards))
    assert index.num_shards == shards and index.num_docs == len(corpus[1])
    _assert_same_search(plain, index)
    assert index.meta["quantization"] == plain.meta["quantization"]
    assert np.array_equal(index.postings_per_term, plain.postings_per_term)
    checked = verify_any(tmp_path / "sh")
    assert checked["num_docs"] == len(corpus[1]) and checked["shards"] == shards
    index.close()


def test_merge_and_reshard_keep_the_results(tmp_path, corpus, plain):
    docs, ids, vectors, texts = corpus
    quant = Quantization.from_dict(plain.meta["quantization"])
    cut = 150
    first = _plain(tmp_path / "a", docs.select(np.arange(cut)), ids[:cut], vectors[:cut], texts[:cut], quant)
    rest = np.arange(cut, len(ids))
    second = _sharded(tmp_path / "b", docs.select(rest), ids[cut:], vectors[cut:], texts[cut:], 2, quant)
    done = merge_indexes(tmp_path / "merged", [first, second])
    assert done == {"num_docs": len(ids), "shards": 3, "inputs": 2, "input_shards": 3}
    _assert_same_search(plain, open_shards(tmp_path / "merged"))
    merge_indexes(tmp_path / "resharded", [tmp_path / "merged"], shards=5)
    resharded = open_shards(tmp_path / "resharded")
    assert resharded.num_shards == 5
    _assert_same_search(plain, resharded)


def test_merge_refuses_inputs_that_do_not_agree(tmp_path, corpus):
    docs, ids, vectors, texts = corpus
    a = _plain(tmp_path / "a", docs.select(np.arange(100)), ids[:100], vectors[:100], texts[:100])
    b = _plain(tmp_path / "b", docs.select(np.arange(100, 200)), ids[100:200], vectors[100:200], texts[100:200])
    with pytest.raises(LsrError, match="quantization"):  # each fitted its own scale
        merge_indexes(tmp_path / "m", [a, b])
    with pytest.raises(LsrError, match="more than one input"):
        merge_indexes(tmp_path / "m", [a, a])
    with pytest.raises(LsrError, match="not an lsr index"):
        merge_indexes(tmp_path / "m", [a, tmp_path])
    assert not (tmp_path / "m").exists()


def test_bad_shard_counts_are_one_line_errors():
    with pytest.raises(LsrError, match="more than the 3 documents"):
        shard_ranges(3, 4)
    with pytest.raises(LsrError, match="positive integer"):
        shard_ranges(3, 0)
    assert shard_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)]


def test_a_damaged_shard_or_manifest_is_refused_naming_it(tmp_path, corpus):
    path = _sharded(tmp_path / "sh", *corpus, shards=3)
    impacts = path / "shards/00001/postings_impacts.npy"
    data = bytearray(impacts.read_bytes())
    data[-1] ^= 0xFF
    impacts.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=r"shard shards/00001: .*checksum mismatch"):
        open_shards(path)
    with pytest.raises(IndexFormatError, match="shard shards/00001"):
        verify_any(path)

    path = _sharded(tmp_path / "sh2", *corpus, shards=3)
    meta = json.loads((path / "meta.json").read_text())
    meta["shards"][1]["doc_start"] += 1  # overlapping ranges; the manifest checksum is recomputed too
    from lsr.index.storage import _meta_checksum

    meta["meta_sha256"] = _meta_checksum(meta)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="overlapping or missing ranges"):
        open_shards(path)

    path = _sharded(tmp_path / "sh3", *corpus, shards=2)
    other = _sharded(tmp_path / "other", *_corpus(seed=5), shards=2)
    for name in os.listdir(path / "shards/00001"):  # a shard swapped for another index's (valid on its own)
        os.replace(other / "shards/00001" / name, path / "shards/00001" / name)
    with pytest.raises(IndexFormatError, match=r"shard shards/00001: .*replaced shard"):
        open_shards(path)


def test_the_service_refuses_ray_for_a_plain_index(tmp_path, corpus):
    with pytest.raises(LsrError, match="sharded index"):
        open_shards(_plain(tmp_path / "p", *corpus), engine="ray")


def test_a_killed_sharded_build_leaves_no_folder(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from test_shards import _corpus, _sharded\n"
            f"_sharded(__import__('pathlib').Path({str(tmp_path / 'sh')!r}), *_corpus(), shards=3)\n")
    env = dict(os.environ, LSR_FAILPOINT="shard-written")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (tmp_path / "sh").exists()
    assert [p.name for p in tmp_path.iterdir()][0].startswith(".sh.tmp-")
    _sharded(tmp_path / "sh", *_corpus(), shards=3)  # the next build succeeds
    assert IndexReader(tmp_path / "sh/shards/00002").num_docs > 0


def test_cli_merge_and_verify(tmp_path, corpus, cli):
    _plain(tmp_path / "p", *corpus)
    code, out, err = cli("index", "merge", tmp_path / "m", tmp_path / "p", "--shards", "3")
    assert code == 0, err
    assert "3 shards" in out
    code, out, err = cli("index", "verify", tmp_path / "m")
    assert code == 0 and ": ok" in out, err
    code, _, err = cli("index", "merge", tmp_path / "m", tmp_path / "p", "--shards", "3")
    assert code == 2 and err.count("\n") == 1 and "exists" in err
    code, _, err = cli("index", "merge", tmp_path / "m2", tmp_path / "p", "--shards", "100000")
    assert code == 2 and "more than the" in err


def test_an_index_built_with_the_scale_of_another_merges_with_it(tmp_path, cli, data_dir):
    """Growing a collection: new documents built with `--quantization-from` the old index fold into it, and the
    merged folder answers like one index over all the documents at that scale."""
    from lsr.encoders.provider import open_service

    lines = (data_dir / "scifact" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    for name, rows in (("old", lines[:8]), ("new", lines[8:14]), ("all", lines[:14])):
        folder = tmp_path / name
        (folder / "qrels").mkdir(parents=True)
        (folder / "corpus.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    build = ("index", "build", "--model", "splade-tiny", "--max-length", "64")
    assert cli(*build, "--dataset", tmp_path / "old", "--out", tmp_path / "i-old")[0] == 0
    for name in ("new", "all"):
        code, _, err = cli(*build, "--dataset", tmp_path / name, "--out", tmp_path / f"i-{name}",
                           "--quantization-from", tmp_path / "i-old")
        assert code == 0, err
    code, _, err = cli("index", "merge", tmp_path / "merged", tmp_path / "i-old", tmp_path / "i-new")
    assert code == 0, err
    merged, whole = open_service(tmp_path / "merged"), open_service(tmp_path / "i-all")
    assert merged.index.num_shards == 2 and merged.index.num_docs == 14
    for query in ("stem cells", "vitamin D deficiency", "protein folding in bacteria"):
        assert merged.search(query=query, k=14) == whole.search(query=query, k=14)
        assert merged.search(query=query, k=5, prf=True) == whole.search(query=query, k=5, prf=True)
