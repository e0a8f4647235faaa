"""BEIR loading on the real data and on malformed copies."""
from __future__ import annotations

import pytest

from lsr.eval.beir import load_beir, load_corpus, read_jsonl, read_qrels
from lsr.eval.metrics import evaluate_run
from lsr.index import Hit, LsrError


def test_scifact_test_split(data_dir):
    ds = load_beir("scifact", "test", data_dir)
    assert len(ds.corpus) == 5183 and len(ds.queries) == 300
    assert all(isinstance(q, str) for q in ds.qrels) and all(" " not in d for q in ds.qrels.values() for d in q)
    first = next(iter(ds.corpus.values()))
    assert first.contents.startswith(first.title) and first.text in first.contents


def test_nfcorpus_dev_and_limit(data_dir):
    ds = load_beir(data_dir / "nfcorpus", "dev", limit=100)
    assert len(ds.corpus) == 100 and len(ds.queries) == 324 and ds.name == "nfcorpus"


def test_qrels_with_crlf_and_header(tmp_path):
    p = tmp_path / "test.tsv"
    p.write_bytes(b"query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td2\t2\r\n\r\n")
    assert read_qrels(p) == {"q1": {"d1": 1, "d2": 2}}


def test_malformed_inputs_name_file_and_line(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n')
    with pytest.raises(LsrError, match=r"corpus.jsonl:2: malformed JSON"):
        read_jsonl(p, ("_id",))
    p.write_text('{"_id": "a"}\n["not", "an", "object"]\n')
    with pytest.raises(LsrError, match=r"corpus.jsonl:2: expected an object"):
        read_jsonl(p, ("_id",))
    p.write_bytes(b'{"_id": "a", "text": "\xff"}\n')
    with pytest.raises(LsrError, match="not UTF-8"):
        read_jsonl(p, ("_id",))
    q = tmp_path / "bad.tsv"
    q.write_text("q1\td1\n")
    with pytest.raises(LsrError, match=r"bad.tsv:1: expected 3"):
        read_qrels(q)


def test_missing_and_empty(tmp_path, data_dir):
    with pytest.raises(LsrError, match="not found"):
        load_beir("no-such-dataset", "test", data_dir)
    with pytest.raises(LsrError, match="no such qrels file.*splits here"):
        load_beir("scifact", "nosplit", data_dir)
    with pytest.raises(LsrError, match="larger than the corpus"):
        load_corpus("scifact", data_dir, limit=10**6)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "corpus.jsonl").write_text("\n")
    with pytest.raises(LsrError, match="empty corpus"):
        load_corpus(tmp_path / "empty")


def test_titles_split_is_each_title_a_query_for_its_own_text(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(
        '{"_id": "a", "title": "Statins and survival", "text": "A cohort study."}\n'
        '{"_id": "b", "title": "A title alone", "text": ""}\n'
        '{"_id": "c", "text": "A text alone."}\n'
        '{"_id": "d", "title": "  ", "text": "Blank title."}\n')
    ds = load_beir(folder, "titles")  # no queries.jsonl and no qrels: the corpus is all it reads
    assert ds.split == "titles"
    assert {d: doc.contents for d, doc in ds.corpus.items()} == {
        "a": "A cohort study.", "c": "A text alone.", "d": "Blank title."}
    assert ds.queries == {"a": "Statins and survival"} and ds.qrels == {"a": {"a": 1}}
    (folder / "corpus.jsonl").write_text('{"_id": "c", "text": "A text alone."}\n')
    with pytest.raises(LsrError, match="no document has both a title and a text"):
        load_beir(folder, "titles")


def test_metrics_hand_computed():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    perfect = {"q1": [Hit("d1", 2.0), Hit("x", 1.0)], "q2": [Hit("d2", 1.0)]}
    assert evaluate_run(perfect, qrels) == {"nDCG@10": 1.0, "R@100": 1.0, "RR@10": 1.0}
    # q2 has no hits: it counts as 0, not as missing; q1 finds its document at rank 2
    half = evaluate_run({"q1": [Hit("x", 2.0), Hit("d1", 1.0)]}, qrels)
    assert half["RR@10"] == pytest.approx(0.25) and half["R@100"] == pytest.approx(0.5)


def test_named_dataset_downloads_from_the_archive(tmp_path, monkeypatch):
    """The online path for real users, served by a real HTTP server on loopback."""
    import functools
    import http.server
    import threading
    import zipfile

    import lsr.eval.beir as beir

    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "scifact.zip", "w") as z:
        z.writestr("scifact/corpus.jsonl", '{"_id": "d1", "title": "T", "text": "x"}\n')
        z.writestr("scifact/queries.jsonl", '{"_id": "q1", "text": "x?"}\n')
        z.writestr("scifact/qrels/test.tsv", "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(beir, "BEIR_URL", f"http://127.0.0.1:{server.server_address[1]}/{{name}}.zip")
        ds = load_beir("scifact", "test", data_dir=tmp_path / "cache")
        assert ds.doc_ids == ["d1"] and ds.qrels == {"q1": {"d1": 1}}
        assert (tmp_path / "cache" / "scifact" / "corpus.jsonl").is_file()
        with pytest.raises(LsrError, match="downloading .* failed"):
            load_beir("nfcorpus", "test", data_dir=tmp_path / "cache")  # 404 from the server
    finally:
        server.shutdown()
