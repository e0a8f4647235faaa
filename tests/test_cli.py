"""The `lsr` command line end to end on a slice of scifact, and its one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import IndexReader


def test_encode_writes_csr_in_file_order(cli, data_dir, tmp_path, splade_tiny):
    out = tmp_path / "docs.npz"
    code, stdout, stderr = cli("encode", "--dataset", "scifact", "--model", "splade-tiny", "--limit", "6",
                               "--out", out, "--data-dir", data_dir)
    assert code == 0, stderr
    m = sp.load_npz(out)
    assert m.shape == (6, 30522) and m.dtype == np.float32
    from lsr.eval.beir import load_corpus

    first = next(iter(load_corpus("scifact", data_dir, limit=1).corpus.values())).contents
    np.testing.assert_allclose(m[0].toarray(), splade_tiny.encode_documents([first]).to_scipy().toarray(), atol=1e-4)


def test_index_search_eval_round_trip(cli, data_dir, tmp_path):
    idx = tmp_path / "idx"
    code, _, err = cli("index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--limit", "150",
                       "--out", idx, "--data-dir", data_dir)
    assert code == 0, err
    assert IndexReader(idx).num_docs == 150

    code, out, err = cli("search", idx, "microRNA expression in cancer", "-k", "3", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"] > 0

    report = tmp_path / "reports" / "report.json"  # a folder that does not exist yet
    run = tmp_path / "run.trec"
    code, out, err = cli("eval", "--dataset", "scifact", "--split", "test", "--model", "splade-tiny", "--limit", "150",
                         "--index", idx, "--json", report, "--run", run, "--data-dir", data_dir)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert {"dataset", "split", "model", "metrics", "num_queries", "num_docs"} <= set(data)
    assert set(data["metrics"]) == {"nDCG@10", "R@100", "RR@10"} and data["num_docs"] == 150
    assert data["query_latency_ms"]["p99"] >= data["query_latency_ms"]["p50"] > 0
    assert data["avg_query_nnz"] > 0 and data["avg_doc_nnz"] > 0 and data["flops"] > 0
    assert "nDCG@10" in out
    first = run.read_text().splitlines()[0].split()
    assert first[1] == "Q0" and first[3] == "1"

    from lsr.encoders import resolve_model

    code, _, err = cli("eval", "--dataset", "scifact", "--model", resolve_model("splade-tiny").source, "--limit", "150",
                       "--index", idx, "--data-dir", data_dir)
    assert code == 2 and "was built with model 'splade-tiny'" in err


def test_an_index_of_other_weights_under_the_same_name_is_not_reused(cli, data_dir, tmp_path):
    """A model folder retrained in place (or a registered model replaced by a newer release) keeps its name; the
    index records a fingerprint of the files that make its documents, so `--index` refuses stale documents."""
    import shutil

    from lsr.encoders import resolve_model

    model = tmp_path / "model"
    shutil.copytree(resolve_model("lsr-ifree-tiny").source, model)
    idx = tmp_path / "idx"
    args = ("eval", "--dataset", "scifact", "--split", "test", "--model", model, "--limit", "40", "--max-length", "32",
            "--index", idx, "--data-dir", data_dir)
    code, _, err = cli(*args)
    assert code == 0, err
    (model / "README.md").write_text("a new card\n")  # the card and the query side do not shape the documents
    (model / "lsr_encoder.json").write_text(json.dumps({"max_length": 32, "collection_idf_weight": 0.5}))
    code, _, err = cli(*args)
    assert code == 0, err
    code, _, err = cli("search", idx, "microRNA expression in cancer", "-k", "3")
    assert code == 0, err
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))  # other weights, same name
    code, _, err = cli(*args)
    assert code == 2 and "was built with other weights of" in err and "(rebuild it)" in err
    code, _, err = cli("search", idx, "microRNA expression in cancer", "-k", "3")  # nor serves them
    assert code == 2 and "this index (of scifact) was built with other weights of" in err


def test_a_dense_store_of_other_weights_is_not_served(cli, data_dir, tmp_path):
    import shutil

    from lsr.encoders import resolve_model

    dense = tmp_path / "dense"
    shutil.copytree(resolve_model("minilm").source, dense)
    idx = tmp_path / "idx"
    code, _, err = cli("index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--dense", dense,
                       "--limit", "40", "--max-length", "32", "--out", idx, "--data-dir", data_dir)
    assert code == 0, err
    query = ("search", idx, "microRNA expression in cancer", "-k", "3", "--mode", "hybrid")
    code, _, err = cli(*query)
    assert code == 0, err
    (dense / "retrained.txt").write_text("a file more: other files than the store was built with\n")
    code, _, err = cli(*query)
    assert code == 2 and "dense store (of scifact) was built with other weights of" in err


@pytest.mark.parametrize("args, message", [
    (["eval", "--dataset", "no-such-set", "--model", "splade-tiny"], "not found"),
    (["eval", "--dataset", "scifact", "--model", "no-such-model"], "unknown model"),
    (["eval", "--dataset", "scifact", "--model", "splade-tiny", "--limit", "99999999"], "larger than the corpus"),
    (["eval", "--dataset", "scifact", "--split", "nope", "--model", "bm25"], "no such qrels file"),
    (["eval", "--dataset", "scifact", "--model", "minilm"], "dense model"),
    (["eval", "--dataset", "scifact", "--model", "bm25", "--mode", "hybrid"], "bm25 runs alone"),
    (["eval", "--dataset", "scifact", "--model", "splade-tiny", "--mode", "fancy"], "'fancy' is not one of"),
    (["train", "--config", "no-such-config.toml"], "cannot read the training config"),
    (["eval", "--dataset", "scifact", "--model", "splade-tiny", "--device", "gpu"], "unknown device 'gpu'"),
    (["encode", "--dataset", "scifact", "--model", "splade-tiny", "--out", "x.npz", "--device", "cuda:x"],
     "unknown device 'cuda:x'"),
    (["train", "--config", "no-such-config.toml", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line(cli, data_dir, args, message):
    code, out, err = cli(*args, "--data-dir", data_dir)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_search_bad_index_and_query(cli, tmp_path):
    (tmp_path / "half").mkdir()
    code, _, err = cli("search", tmp_path / "half", "query")
    assert code == 2 and "no meta.json" in err
    code, _, err = cli("search", tmp_path / "half", "   ")
    assert code == 2 and "empty query" in err


def test_malformed_corpus_names_file_and_line(cli, tmp_path):
    ds = tmp_path / "broken"
    (ds / "qrels").mkdir(parents=True)
    (ds / "corpus.jsonl").write_text('{"_id": "a", "title": "", "text": "x"}\n{oops}\n')
    code, _, err = cli("index", "build", "--dataset", ds, "--model", "splade-tiny", "--out", tmp_path / "i")
    assert code == 2 and "corpus.jsonl:2: malformed JSON" in err
    assert not (tmp_path / "i").exists()


def test_hybrid_index_search_and_eval(cli, data_dir, tmp_path):
    idx = tmp_path / "hybrid"
    code, out, err = cli("index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--dense", "minilm",
                         "--limit", "60", "--max-length", "128", "--out", idx, "--data-dir", data_dir)
    assert code == 0, err
    assert "dense" in out and (idx / "dense.npy").is_file() and (idx / "docs.jsonl").is_file()
    for mode in ("sparse", "dense", "hybrid"):
        code, out, err = cli("search", idx, "vitamin D and bone density", "-k", "5", "--mode", mode, "--prf",
                             "--json")
        assert code == 0, err
        hits = json.loads(out)
        assert len(hits) == 5 and len({h["doc_id"] for h in hits}) == 5
    report = tmp_path / "hybrid.json"
    code, out, err = cli("eval", "--dataset", "scifact", "--model", "splade-tiny", "--mode", "hybrid", "--limit", "60",
                         "--fusion", "rrf", "--prf", "--prf-placement", "after",
                         "--max-length", "128", "--index", idx, "--json", report, "--data-dir", data_dir)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["mode"] == "hybrid" and data["depth"] == 100 and 0 <= data["metrics"]["nDCG@10"] <= 1
    assert data["fusion"] == "rrf" and data["prf"] is True and data["prf_placement"] == "after"
    from lsr.encoders import resolve_model

    other_dense = resolve_model("minilm").source  # a dense model, recorded as a folder, not as "minilm"
    code, _, err = cli("eval", "--dataset", "scifact", "--model", "splade-tiny", "--dense", other_dense,
                       "--mode", "dense", "--limit", "60", "--max-length", "128", "--index", idx, "--data-dir", data_dir)
    assert code == 2 and "dense store of model 'minilm'" in err


def test_search_options_through_search_and_eval(cli, data_dir, tmp_path):
    """`--algorithm` and the approximate options reach our searcher: the exact algorithms give the default's
    hits, a small impact budget does not on every query and `lsr eval` measures its recall against the exact
    ranking; settings that cannot run are one line, before any model loads."""
    idx = tmp_path / "idx"
    code, _, err = cli("index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--limit", "150",
                       "--out", idx, "--data-dir", data_dir)
    assert code == 0, err
    queries = ["microRNA expression in cancer", "vitamin D and bone density", "statins lower cholesterol"]
    from lsr.encoders.provider import open_service
    from lsr.index import SearchOptions

    exact = open_service(idx)

    def hits(service, query):
        return [h.doc_id for h in service.search(query=query, k=10)]

    for options in (SearchOptions(algorithm="maxscore"), SearchOptions(algorithm="blockmax"),
                    SearchOptions(algorithm="impact", rescore=50)):
        service = open_service(idx, search_options=options)
        assert [hits(service, q) for q in queries] == [hits(exact, q) for q in queries], options
    code, out, err = cli("search", idx, queries[0], "-k", "10", "--json", "--algorithm", "impact", "--budget", "20",
                         "--rescore", "10")
    assert code == 0, err
    approximate = open_service(idx, search_options=SearchOptions(algorithm="impact", budget=20, rescore=10))
    assert [h["doc_id"] for h in json.loads(out)] == hits(approximate, queries[0])
    assert [hits(approximate, q) for q in queries] != [hits(exact, q) for q in queries]

    report = tmp_path / "approximate.json"
    code, out, err = cli("eval", "--dataset", "scifact", "--model", "splade-tiny", "--limit", "150", "--index", idx,
                         "--algorithm", "impact", "--budget", "20", "--rescore", "10", "--json", report,
                         "--data-dir", data_dir)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["search_options"] == {"algorithm": "impact", "prune_factor": 1.0, "budget": 20, "rescore": 10,
                                      "max_query_terms": None, "drop_ratio": 0.0}
    assert 0 < data["recall@10_vs_exact"] < 1
    for options, message in ((["--budget", "100"], "impact algorithm only, not exhaustive"),
                             (["--algorithm", "exhaustive", "--prune-factor", "0.5"], "maxscore algorithms only"),
                             (["--prune-factor", "0"], "prune_factor must be in (0, 1]"),
                             (["--drop-ratio", "0.2"], "Milvus's approximate search")):
        code, _, err = cli("search", idx, queries[0], *options)
        assert code == 2 and message in err and err.count("\n") == 1, (options, err)


def test_train_config_with_unknown_dataset_is_one_line(cli, data_dir, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'out = "{tmp_path / "run"}"\nsteps = 1\n[data]\ndatasets = [{{name = "no-such-set"}}]\n')
    code, _, err = cli("train", "--config", config, "--data-dir", data_dir)
    assert code == 2 and err.startswith("error: ") and "not found" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()  # nothing written before the data is there


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("command", [
    ["encode", "--dataset", "scifact", "--model", "splade-tiny", "--out", "x.npz"],
    ["index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--out", "idx"],
    ["eval", "--dataset", "scifact", "--model", "splade-tiny"],
])
def test_cuda_without_cuda_is_one_line_before_any_model_loads(cli, data_dir, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*command, "--device", "cuda", "--data-dir", data_dir)
    assert code == 2 and err == "error: device 'cuda': CUDA is not available here " \
        f"(torch {__import__('torch').__version__}); use auto or cpu\n", err
    assert not list(tmp_path.iterdir())


def test_train_device_on_the_command_line_overrides_the_config(cli, data_dir, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'out = "{tmp_path / "run"}"\nsteps = 1\ndevice = "cpu"\n[data]\ndatasets = [{{name = "x"}}]\n')
    code, _, err = cli("train", "--config", config, "--device", "cuda:3", "--data-dir", data_dir)
    assert code == 2 and "device 'cuda:3'" in err and err.count("\n") == 1, err
    config.write_text(f'out = "{tmp_path / "run"}"\nsteps = 1\ndevice = "gpu"\n[data]\ndatasets = [{{name = "x"}}]\n')
    code, _, err = cli("train", "--config", config, "--data-dir", data_dir)
    assert code == 2 and "device: unknown device 'gpu': use auto, cpu, cuda or cuda:N" in err, err


def test_train_titles_then_a_second_phase_from_the_first_model(cli, data_dir, tmp_path):
    """A first phase on the `titles` split of a corpus alone, then `--init` starts a second from its model."""
    folder = tmp_path / "set"
    folder.mkdir()
    lines = (data_dir / "scifact" / "corpus.jsonl").read_text().splitlines()[:24]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "c.toml"
    config.write_text(f'out = "{tmp_path / "one"}"\nsteps = 1\nbatch_queries = 2\nmax_length = 32\nlog_every = 1\n'
                      f'[data]\ndatasets = [{{name = "{folder}", split = "titles"}}]\ncache_dir = "{tmp_path / "cache"}"\n'
                      'mine_depth = 4\ngroup_size = 2\n')
    code, _, err = cli("train", "--config", config, "--data-dir", data_dir)
    assert code == 0, err
    first = tmp_path / "one" / "model"
    assert json.loads((tmp_path / "one" / "config.json").read_text())["init"] == "splade-tiny"
    code, _, err = cli("train", "--config", config, "--out", tmp_path / "two", "--init", first, "--data-dir", data_dir)
    assert code == 0, err
    assert json.loads((tmp_path / "two" / "config.json").read_text())["init"] == str(first)
    assert (tmp_path / "two" / "model" / "model.safetensors").is_file()


def test_cli_value_sets_are_the_libraries():
    """The CLI names some value sets itself (so it starts without torch); they must be the libraries' own."""
    from lsr.api.cli import BitsChoice, HeadName, SearchBackend
    from lsr.index.lucene import BACKENDS
    from lsr.index.quantize import IMPACT_DTYPES
    from lsr.kernels import BACKENDS as HEADS

    assert [h.value for h in HeadName] == ["auto", *HEADS]
    assert tuple(b.value for b in SearchBackend) == BACKENDS
    assert sorted(int(b.value) for b in BitsChoice) == sorted(IMPACT_DTYPES)
