"""Honest selection and corpus-adaptive IDF (issue 19): the carved dev split of a train split, the collection's
document frequencies stored by an inference-free build, and the query side blending them with its table."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lsr.encoders import SpladeEncoder, bm25_idf, resolve_model
from lsr.encoders.idf import document_frequencies
from lsr.eval.beir import DEV_FRACTION, carve_dev, load_beir, load_corpus
from lsr.eval.pipeline import EncoderOptions, build_index, load_sparse_encoder
from lsr.index import IndexFormatError, LsrError, SearchService
from lsr.index.termstats import STATS_FILE, STATS_KEY, CollectionStats, read_collection_stats

NUM_DOCS = 60


@pytest.fixture(scope="module")
def ifree():
    return SpladeEncoder(resolve_model("lsr-ifree-tiny").source, max_length=64, show_progress=False)


@pytest.fixture(scope="module")
def ifree_index(tmp_path_factory, data_dir, ifree):
    corpus = load_corpus("scifact", data_dir, limit=NUM_DOCS)
    path = tmp_path_factory.mktemp("collection-idf") / "index"
    build_index(corpus, "lsr-ifree-tiny", path, EncoderOptions(max_length=64, show_progress=False), encoder=ifree)
    return corpus, path


def test_carved_dev_split_is_fixed_disjoint_and_a_fifth_of_train(data_dir):
    train, dev, fit = (load_beir("scifact", s, data_dir) for s in ("train", "train-dev", "train-fit"))
    assert set(dev.queries).isdisjoint(fit.queries) and set(dev.queries) | set(fit.queries) == set(train.queries)
    assert len(dev.queries) == round(DEV_FRACTION * len(train.queries))
    assert dev.qrels == {q: train.qrels[q] for q in dev.queries}
    assert carve_dev(reversed(sorted(train.qrels))) == set(dev.queries)  # independent of file order
    assert carve_dev(train.qrels, seed=1) != set(dev.queries)


def test_blend_keeps_the_table_at_zero_and_takes_the_collection_at_one(ifree):
    table = ifree.query_encoder
    texts = ["sodium channels in cardiac muscle", "gene expression of tumour cells", "sodium intake"]
    df, n = document_frequencies(table.tokenizer, texts)
    stats = CollectionStats(df, n)
    np.testing.assert_array_equal(table.blended(stats, 0.0).idf, table.idf)
    full = table.blended(stats, 1.0).idf
    seen = df > 0
    seen[table.tokenizer.all_special_ids] = False
    np.testing.assert_allclose(full[seen], bm25_idf(df[seen], n), rtol=1e-6)
    np.testing.assert_array_equal(full[~seen], table.idf[~seen])  # absent tokens keep their trained weight
    half = table.blended(stats, 0.5).idf
    np.testing.assert_allclose(half[seen], 0.5 * table.idf[seen] + 0.5 * bm25_idf(df[seen], n), rtol=1e-6)
    with pytest.raises(LsrError, match=r"\[0, 1\]"):
        table.blended(stats, 1.5)


def test_an_inference_free_build_stores_the_collection_and_the_query_side_uses_it(ifree_index, ifree):
    corpus, path = ifree_index
    stats = read_collection_stats(path)
    df, n = document_frequencies(ifree.query_encoder.tokenizer, [d.contents.lower() for d in corpus.corpus.values()])
    assert stats is not None and stats.num_docs == n == NUM_DOCS
    np.testing.assert_array_equal(stats.df, df)
    assert STATS_FILE in json.loads((path / "meta.json").read_text())["files"]  # covered by the checksums
    query = "sodium channel blockers"
    for weight in (0.0, 0.7):
        encoder = load_sparse_encoder("lsr-ifree-tiny", EncoderOptions(max_length=64, show_progress=False,
                                                                       collection_idf_weight=weight))
        service = SearchService(path, sparse_encoder=encoder)
        want = encoder.query_encoder.blended(stats, weight).encode_queries([query])
        got = service.rank(query=query, k=5).sparse_query
        np.testing.assert_array_equal(got.term_ids, want.term_ids)
        np.testing.assert_allclose(got.weights, want.weights, rtol=1e-6)
        assert (weight == 0.0) == np.array_equal(got.weights, encoder.encode_queries([query]).weights)
        assert service.stats()["collection_idf_weight"] == weight
        service.close()


def test_a_siamese_build_stores_nothing_and_the_weight_needs_an_inference_free_model(api_index_dir, api_service):
    assert read_collection_stats(api_index_dir) is None and api_service.stats()["collection_idf_weight"] is None
    with pytest.raises(LsrError, match="inference-free"):
        load_sparse_encoder("splade-tiny", EncoderOptions(show_progress=False, collection_idf_weight=0.5))


def test_a_damaged_statistics_file_is_refused(ifree_index, tmp_path):
    import shutil

    _, path = ifree_index
    copy = tmp_path / "index"
    shutil.copytree(path, copy)
    np.save(copy / STATS_FILE, np.zeros(7, dtype=np.int64))
    with pytest.raises(IndexFormatError, match=STATS_FILE):
        SearchService(copy, sparse_encoder=load_sparse_encoder("lsr-ifree-tiny", EncoderOptions(show_progress=False)))
    with pytest.raises(IndexFormatError, match=STATS_FILE):
        read_collection_stats(copy)  # its own shape check, without the folder's checksums


def test_a_folder_built_before_the_statistics_gets_them_when_reused(ifree_index, ifree, tmp_path):
    from lsr.eval.pipeline import open_or_build_index
    from lsr.index import IndexReader, IndexWriter

    corpus, path = ifree_index
    old = tmp_path / "old"
    info = {k: v for k, v in IndexReader(path).info.items() if k != STATS_KEY}
    with IndexWriter(old, vocab_size=ifree.vocab_size, info=info) as writer:  # no statistics part
        writer.add(ifree.encode_documents([d.contents for d in corpus.corpus.values()]), corpus.doc_ids)
    assert read_collection_stats(old) is None
    open_or_build_index(corpus, "lsr-ifree-tiny", ifree, old, EncoderOptions(max_length=64, show_progress=False))
    np.testing.assert_array_equal(read_collection_stats(old).df, read_collection_stats(path).df)


def test_merged_indexes_carry_the_summed_statistics(ifree_index, tmp_path):
    from lsr.index.shards import merge_indexes

    corpus, path = ifree_index
    stats = read_collection_stats(path)
    merge_indexes(tmp_path / "linked", [path])  # shards linked as they are: their own statistics
    np.testing.assert_array_equal(read_collection_stats(tmp_path / "linked" / "shards" / "00000").df, stats.df)
    merge_indexes(tmp_path / "recut", [path], shards=3)  # re-cut: every shard holds the whole collection's
    recut = read_collection_stats(tmp_path / "recut" / "shards" / "00000")
    assert recut.num_docs == stats.num_docs
    np.testing.assert_array_equal(recut.df, stats.df)
    service = SearchService(tmp_path / "recut", sparse_encoder=load_sparse_encoder(
        "lsr-ifree-tiny", EncoderOptions(max_length=64, show_progress=False, collection_idf_weight=0.25)))
    assert service.stats()["collection_idf_weight"] == 0.25 and service.rank(query=next(iter(corpus.corpus.values())).title, k=3).hits
    service.close()
