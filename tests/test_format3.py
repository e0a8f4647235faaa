"""Index format 3 (compressed doc ids, index/codec.py): the codec round trip, search equal to brute force with
and without the forward index over several chunks, format 2 folders still opening (a committed fixture written
by the format-2 writer, and the writer's format_version=2), and damage to each format-3 file refused naming it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from lsr.index import IndexFormatError, IndexReader, IndexWriter, LsrError, Searcher, SparseBatch, verify_index
from lsr.index import codec
from lsr.index.search import brute_force_search
from lsr.index.storage import _check_codec, data_files

FIXTURE = Path(__file__).parent / "data" / "format2-index"  # 40 documents, 64 terms, written by main at 4d114a4


# -- the codec -------------------------------------------------------------------------------------------------
@st.composite
def postings_lists(draw):
    """Term-major postings over up to 4 chunks: empty terms, single postings, runs of consecutive documents,
    gaps of 2^16 and more, documents at both ends of a chunk and the last document."""
    num_docs = draw(st.sampled_from([1, 2, 130, codec.CHUNK_DOCS, codec.CHUNK_DOCS + 1, 3 * codec.CHUNK_DOCS + 5]))
    lists = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["empty", "single", "run", "sparse", "edges", "random"]))
        if kind == "empty":
            docs = []
        elif kind == "single":
            docs = [draw(st.integers(0, num_docs - 1))]
        elif kind == "run":
            start = draw(st.integers(0, num_docs - 1))
            docs = list(range(start, min(num_docs, start + draw(st.integers(1, 300)))))
        elif kind == "sparse":  # gaps >= 2^16: whole chunks skipped
            docs = list(range(draw(st.integers(0, 10)), num_docs, codec.CHUNK_DOCS + draw(st.integers(0, 9))))
        elif kind == "edges":
            docs = sorted({d for c in range(0, num_docs, codec.CHUNK_DOCS)
                           for d in (c, c + 1, c + codec.CHUNK_DOCS - 1, num_docs - 1) if d < num_docs})
        else:
            docs = sorted(set(draw(st.lists(st.integers(0, num_docs - 1), max_size=400))))
        lists.append(docs)
    return num_docs, lists


@settings(max_examples=60, deadline=None)
@given(postings_lists())
def test_codec_round_trip(case):
    num_docs, lists = case
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in lists])]).astype(np.int64)
    doc_idx = np.array([d for docs in lists for d in docs], dtype=np.int32)
    encoded = codec.encode(offsets, doc_idx, num_docs)
    assert np.array_equal(codec.decode(encoded), doc_idx)
    segments, skips, chunks, widths, words = encoded
    assert segments[-1] == len(chunks) == len(skips) - 1
    assert skips[-1].tolist() == [len(doc_idx), len(words) - 1, len(widths)]
    assert widths.max(initial=0) <= codec.MAX_WIDTH
    for t, docs in enumerate(lists):  # one segment per chunk holding the term, chunks ascending
        assert chunks[segments[t]:segments[t + 1]].tolist() == sorted({d >> codec.CHUNK_SHIFT for d in docs})
    terms = np.arange(len(lists), dtype=np.int64)[::-1].copy()
    out_offsets, out = np.zeros(len(terms) + 1, np.int64), np.empty(len(doc_idx), np.int64)
    codec.decode_terms(*encoded, terms, out_offsets, out)
    assert out.tolist() == [d for t in terms for d in lists[t]]
    impacts = np.ones(len(doc_idx), np.uint8)
    term_max = np.array([1 if docs else 0 for docs in lists], np.uint8)
    codes, _ = _check_codec(*encoded, impacts, term_max, num_docs)
    assert not codes.any()


def test_codec_widths_follow_the_gaps():
    offsets = np.array([0, 3, 6], np.int64)
    doc_idx = np.array([0, 1, 2, 5, codec.CHUNK_DOCS - 1, codec.CHUNK_DOCS], np.int32)
    encoded = codec.encode(offsets, doc_idx, codec.CHUNK_DOCS + 1)
    # term 0: 0,1,2 -> gaps-1 of 0: width 0, no words; term 1: 5 then 65535 (chunk 0), 65536 (chunk 1)
    assert encoded.widths.tolist() == [0, 16, 0] and encoded.chunks.tolist() == [0, 0, 1]
    assert encoded.skips[:, 1].tolist() == [0, 0, 1, 1]


# -- search ----------------------------------------------------------------------------------------------------
def _docs(num_docs=140_000, vocab=40, seed=0) -> SparseBatch:
    """Over two chunks and a partial third: a few dense terms, many rare ones."""
    rng = np.random.default_rng(seed)
    df = (num_docs * rng.power(0.3, vocab) * 0.2).astype(int) + 1
    rows = np.concatenate([rng.choice(num_docs, n, replace=False) for n in df])
    cols = np.repeat(np.arange(vocab), df)
    m = sp.csr_matrix((rng.random(len(rows)).astype(np.float32) ** 2 * 3 + 0.01, (rows, cols)),
                      shape=(num_docs, vocab))
    return SparseBatch.from_scipy(m)


def _write(path, docs, **kw):
    kw.setdefault("format_version", 3)
    with IndexWriter(path, vocab_size=docs.vocab_size, bits=8, **kw) as w:
        w.add(docs, [f"d{i}" for i in range(len(docs))])
    return IndexReader(path)


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    docs = _docs()
    root = tmp_path_factory.mktemp("f3")
    return docs, {"3": _write(root / "f3", docs), "3+forward": _write(root / "f3f", docs, forward_index=True),
                  "2": _write(root / "f2", docs, format_version=2)}


def _queries(vocab, n=25, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        m = int(rng.integers(1, 12))
        yield np.sort(rng.choice(vocab, m, replace=False)).astype(np.int64), rng.random(m) ** 2 + 0.05


@pytest.mark.parametrize("layout, algorithm", [("3", "exhaustive"), ("3", "maxscore"), ("3+forward", "exhaustive"),
                                               ("3+forward", "maxscore"), ("3+forward", "blockmax"),
                                               ("2", "exhaustive")])
def test_format3_equals_brute_force(indexes, layout, algorithm):
    docs, readers = indexes
    reader = readers[layout]
    assert reader.format_version == (2 if layout == "2" else 3) and reader.has_forward == (layout != "3")
    searcher = Searcher(reader, algorithm=algorithm)
    queries = list(_queries(docs.vocab_size))
    for terms, weights in queries:
        for k in (1, 10, 1000):
            ref_idx, ref_scores = brute_force_search(readers["2"], terms, weights, k)
            idx, scores = searcher.search_vector(terms, weights, k)
            assert idx.tolist() == ref_idx.tolist()
            np.testing.assert_allclose(scores, ref_scores, rtol=1e-12)
    batch = SparseBatch.from_scipy(sp.vstack([sp.csr_matrix((w, t, [0, len(t)]), shape=(1, docs.vocab_size))
                                              for t, w in queries], format="csr"))
    for (idx, _), (terms, weights) in zip(searcher.search_batch_vectors(batch, k=10, threads=2), queries):
        assert idx.tolist() == brute_force_search(readers["2"], terms, weights, 10)[0].tolist()


def test_format3_reader_matches_format2(indexes):
    _, readers = indexes
    f3, f2 = readers["3"], readers["2"]
    assert np.array_equal(f3.postings_doc_idx(), np.asarray(f2.doc_idx))
    assert (f3.doc_matrix() != f2.doc_matrix()).nnz == 0
    for t in (0, 5, 39):
        assert all(np.array_equal(a, b) for a, b in zip(f3.postings(t), f2.postings(t)))
    assert f3.size_bytes() < 0.5 * f2.size_bytes()
    assert set(f3.meta["files"]) == set(data_files(f3.meta))


def test_blockmax_without_the_forward_index_is_one_line(indexes):
    _, readers = indexes
    with pytest.raises(LsrError, match="built without") as info:
        Searcher(readers["3"], algorithm="blockmax")
    assert "\n" not in str(info.value)


def test_writer_options_are_checked(tmp_path):
    with pytest.raises(LsrError, match="format_version"):
        IndexWriter(tmp_path / "x", vocab_size=4, format_version=4)
    with pytest.raises(LsrError, match="forward index"):
        IndexWriter(tmp_path / "x", vocab_size=4, format_version=2, forward_index=False)


# -- format 2 keeps opening ----------------------------------------------------------------------------------
def test_the_committed_format2_folder_opens_verifies_and_searches(tmp_path, cli):
    folder = tmp_path / "f2"
    shutil.copytree(FIXTURE, folder)
    reader = IndexReader(folder)
    assert reader.format_version == 2 and reader.meta["num_docs"] == 40
    assert verify_index(folder)["num_postings"] == reader.meta["num_postings"]
    code, out, err = cli("index", "verify", folder)
    assert code == 0 and "ok (" in out, err
    matrix = reader.doc_matrix()
    f3 = _write(tmp_path / "f3", SparseBatch.from_scipy(matrix.astype(np.float32)))  # scale 1: the same impacts
    rng = np.random.default_rng(5)
    for _ in range(20):
        terms = np.sort(rng.choice(64, 6, replace=False)).astype(np.int64)
        weights = rng.random(6) + 0.1
        ref = brute_force_search(reader, terms, weights, 10)
        for algorithm in ("exhaustive", "maxscore", "blockmax"):
            idx, scores = Searcher(reader, algorithm=algorithm).search_vector(terms, weights, 10)
            assert idx.tolist() == ref[0].tolist()
        assert Searcher(f3).search_vector(terms, weights * reader.quantization.scale, 10)[0].tolist() \
            == ref[0].tolist()
    (folder / "postings_doc_idx.npy").write_bytes((folder / "postings_doc_idx.npy").read_bytes()[:-1] + b"\x07")
    with pytest.raises(IndexFormatError, match="postings_doc_idx.npy"):
        IndexReader(folder)


# -- damage to format 3 ----------------------------------------------------------------------------------------
FORMAT3_FILES = ["postings_offsets.npy", "postings_impacts.npy", "postings_segments.npy", "postings_skips.npy",
                 "postings_chunks.npy", "postings_widths.npy", "postings_docs.npy", "postings_term_max.npy",
                 "doc_ids.json"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("p3") / "idx", _docs(70_000, 30, seed=3)).path


def _npy(p, fn):
    np.save(p, fn(np.load(p)), allow_pickle=False)


def _flip(p, where):
    data = bytearray(p.read_bytes())
    data[min(len(data) - 1, int(len(data) * where))] ^= 0x5A
    p.write_bytes(bytes(data))


DAMAGES = {
    **{f"flip {n} at {w}": (lambda d, n=n, w=w: _flip(d / n, w), n) for n in FORMAT3_FILES for w in (0.6, 1.0)},
    **{f"truncate {n}": (lambda d, n=n: (d / n).write_bytes((d / n).read_bytes()[:-9]), n) for n in FORMAT3_FILES},
    **{f"delete {n}": (lambda d, n=n: (d / n).unlink(), n) for n in FORMAT3_FILES},
    "zeroed words": (lambda d: _npy(d / "postings_docs.npy", lambda a: np.where(np.arange(len(a)) % 7 == 3, 0, a)
                                    .astype(a.dtype)), "postings_docs.npy"),
    "a word with every bit set": (lambda d: _npy(d / "postings_docs.npy", lambda a: np.where(
        np.arange(len(a)) == len(a) // 2, np.uint32(0xFFFFFFFF), a).astype(a.dtype)), "postings_docs.npy"),
    "an edited impact": (lambda d: _npy(d / "postings_impacts.npy", lambda a: np.where(
        np.arange(len(a)) == len(a) // 3, np.maximum(a, 2) - 1, a).astype(a.dtype)), "postings_impacts.npy"),
    "widths 17": (lambda d: _npy(d / "postings_widths.npy", lambda a: np.full_like(a, 17)), "postings_widths.npy"),
    "chunks reversed": (lambda d: _npy(d / "postings_chunks.npy", lambda a: a[::-1].copy()), "postings_chunks.npy"),
    "words as int32": (lambda d: _npy(d / "postings_docs.npy", lambda a: a.view(np.int32)), "postings_docs.npy"),
    "swapped skips columns": (lambda d: _npy(d / "postings_skips.npy", lambda a: a[:, ::-1].copy()),
                              "postings_skips.npy"),
}


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damage_to_format3_is_refused_naming_the_file(pristine, tmp_path, damage, verify):
    folder = tmp_path / "idx"
    shutil.copytree(pristine, folder)
    corrupt, name = DAMAGES[damage]
    corrupt(folder)
    with pytest.raises(IndexFormatError) as info:
        reader = IndexReader(folder, verify_checksums=verify)
        # a damage the open does not see must leave the ranking intact; full verification sees it
        good = IndexReader(pristine)
        for terms, weights in _queries(30, n=5):
            assert Searcher(reader).search_vector(terms, weights, 10)[0].tolist() \
                == Searcher(good).search_vector(terms, weights, 10)[0].tolist()
        verify_index(folder)
    message = str(info.value)
    assert "\n" not in message and name in message, message


def test_a_hand_edited_codec_record_is_refused(pristine, tmp_path):
    from lsr.index.folder import write_meta

    folder = tmp_path / "idx"
    shutil.copytree(pristine, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["codec"]["block"] = 64
    write_meta(folder, meta)  # a consistent meta (its checksum holds) from another codec
    with pytest.raises(IndexFormatError, match="blocks of 64"):
        IndexReader(folder)
