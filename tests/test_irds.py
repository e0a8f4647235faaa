"""ir_datasets as a dataset source: `lsr data import` places the local scifact copy where ir_datasets reads
it, `irds:beir/scifact/test` then gives what the folder gives, and bad ids, missing splits, unavailable
datasets and wrong copies are one line each. Every ir_datasets process here runs with a temporary
IR_DATASETS_HOME (ir_datasets fixes its paths, and creates folders, when first imported, so each runs in a
subprocess of its own) and an unusable proxy, so nothing is downloaded and the user's home is untouched."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LSR = str(Path(sys.executable).with_name("lsr"))


def _env(home: Path) -> dict:
    env = {**os.environ, "IR_DATASETS_HOME": str(home), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "IR_DATASETS_DL_TRIES": "1"}
    env.pop("NO_PROXY", None), env.pop("no_proxy", None)
    return env


@pytest.fixture
def irds_env(tmp_path):
    return _env(tmp_path / "ir_datasets_home")


# Several `lsr` commands in one fresh process (each start costs seconds): the CLI's main, its exit code,
# stdout and stderr per command, as JSON on the last line.
MANY = """
import contextlib, io, json, sys
from lsr.api.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["lsr", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0
    results.append([code, out.getvalue(), err.getvalue()])
print()
print(json.dumps(results))
"""


def run(env, *args, python: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", python] if python else [LSR, *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def run_many(env, *commands) -> list[subprocess.CompletedProcess]:
    done = subprocess.run([sys.executable, "-c", MANY, json.dumps([[str(a) for a in c] for c in commands])],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return [subprocess.CompletedProcess(c, code, out, err)
            for c, (code, out, err) in zip(commands, json.loads(done.stdout.splitlines()[-1]))]


def one_error_line(done: subprocess.CompletedProcess) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def _import(env, data_dir):
    done = run(env, "data", "import", data_dir / "scifact", "--irds", "beir/scifact")
    assert done.returncode == 0, done.stderr
    assert "placed" in done.stdout and "5183 documents, 1109 queries, qrels test 339, train 919" in done.stdout
    return env


@pytest.fixture(scope="module")
def imported(tmp_path_factory, data_dir):
    """One home with scifact imported, shared by the tests that only read it."""
    return _import(_env(tmp_path_factory.mktemp("irds") / "ir_datasets_home"), data_dir)


def test_import_places_the_archive_where_ir_datasets_reads_it(imported, data_dir):
    home = Path(imported["IR_DATASETS_HOME"])
    assert (home / "beir" / "scifact" / "source.zip").is_file()
    again = run(imported, "data", "import", data_dir / "scifact", "--irds", "beir/scifact")
    assert again.returncode == 0 and "already in place" in again.stdout  # byte-identical: nothing to do
    check = f"""
from lsr.eval.beir import load_beir, load_corpus
for split in ("test", "train"):
    a, b = load_beir("irds:beir/scifact/" + split), load_beir({str(data_dir / 'scifact')!r}, split)
    assert list(a.corpus.items()) == list(b.corpus.items()), split
    assert a.queries == b.queries and a.qrels == b.qrels and a.split == split, split
    assert a.name == "irds:beir/scifact/" + split
c = load_beir("irds:beir/scifact", "test")
assert c.qrels == load_beir("irds:beir/scifact/test").qrels
d = load_corpus("irds:beir/scifact", limit=7)
assert len(d.corpus) == 7 and not d.queries
print("ok")
"""
    done = run(imported, python=check)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_encode_through_irds_equals_the_folder(imported, data_dir, tmp_path):
    import numpy as np
    import scipy.sparse as sp

    cases = {(name, what): (dataset, flags) for what, flags in (("queries", ["--queries"]), ("docs", ["--limit", "3"]))
             for name, dataset in (("irds", "irds:beir/scifact/test"), ("folder", data_dir / "scifact"))}
    results = run_many(imported, *[["encode", "--dataset", dataset, "--model", "lsr-ifree-tiny", *flags, "--out",
                                    tmp_path / f"{name}-{what}.npz"] for (name, what), (dataset, flags) in cases.items()])
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    for what, rows in (("queries", 300), ("docs", 3)):
        a, b = (sp.load_npz(tmp_path / f"{name}-{what}.npz") for name in ("irds", "folder"))
        assert a.shape == b.shape and a.shape[0] == rows
        np.testing.assert_array_equal(a.toarray(), b.toarray())


@pytest.mark.slow  # two BM25 runs over 800 documents: about a minute on 2 cores
def test_eval_through_irds_equals_the_folder(imported, data_dir, tmp_path):
    reports = {}
    for name, dataset in (("irds", "irds:beir/scifact/test"), ("folder", data_dir / "scifact")):
        out = tmp_path / f"{name}.json"
        done = run(imported, "eval", "--dataset", dataset, "--model", "bm25", "--limit", "800", "--json", out)
        assert done.returncode == 0, done.stderr
        reports[name] = json.loads(out.read_text())
    assert reports["irds"]["metrics"] == reports["folder"]["metrics"]
    assert reports["irds"]["dataset"] == "irds:beir/scifact/test" and reports["irds"]["split"] == "test"
    assert reports["irds"]["num_queries"] == 300 and reports["irds"]["num_docs"] == 800


def test_bad_ids_and_splits_are_one_line(imported):
    expected = {
        ("encode", "--dataset", "irds:beir/scifact/tset", "--model", "bm25", "--out", "x.npz"):
            "has no split 'tset' (its splits: test, train)",
        ("encode", "--dataset", "irds:beir/scifcat/test", "--model", "bm25", "--out", "x.npz"):
            "unknown ir_datasets id 'beir/scifcat/test' (did you mean beir/scifact/test",
        ("eval", "--dataset", "irds:beir/scifact", "--model", "bm25"):
            "name a split (irds:beir/scifact/test, irds:beir/scifact/train)",
        ("eval", "--dataset", "irds:beir/scifact", "--split", "dev", "--model", "bm25"):
            "has no split 'dev' (its splits: test, train)",
        ("eval", "--dataset", "irds:no-such-collection/test", "--model", "bm25"):
            "unknown ir_datasets id 'no-such-collection/test'",
        ("data", "import", "/nonexistent", "--irds", "msmarco-passage"): "takes a BEIR dataset id",
    }
    for done, message in zip(run_many(imported, *expected), expected.values()):
        assert message in one_error_line(done), done.args


def test_unavailable_offline_names_what_to_fetch(irds_env):
    line = one_error_line(run(irds_env, "index", "build", "--dataset", "irds:beir/nfcorpus/dev", "--model",
                              "lsr-ifree-tiny", "--out", "never-written"))
    assert "not available offline" in line and "nfcorpus.zip" in line
    assert "lsr data import FOLDER --irds beir/nfcorpus" in line
    assert not Path("never-written").exists()


def test_import_refuses_wrong_copies_and_keeps_what_is_there(irds_env, data_dir, tmp_path):
    imported = _import(irds_env, data_dir)
    target = Path(imported["IR_DATASETS_HOME"]) / "beir" / "scifact" / "source.zip"
    before = target.read_bytes()
    corpus = (data_dir / "scifact" / "corpus.jsonl").read_bytes().splitlines(keepends=True)
    copies = {"short": b"".join(corpus[:-1]),  # one document fewer: ir_datasets' published counts catch it
              "changed": b"".join(corpus[:-1]) + corpus[-1].replace(b'"text": "', b'"text": "X')}  # same counts
    for name, text in copies.items():
        (tmp_path / name / "qrels").mkdir(parents=True)
        for file in ("queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
            (tmp_path / name / file).write_bytes((data_dir / "scifact" / file).read_bytes())
        (tmp_path / name / "corpus.jsonl").write_bytes(text)
    (tmp_path / "empty").mkdir()
    expected = {("data", "import", data_dir / "nfcorpus", "--irds", "beir/scifact"): "no such qrels file",
                ("data", "import", tmp_path / "empty", "--irds", "beir/scifact"): "not a BEIR folder",
                ("data", "import", tmp_path / "short", "--irds", "beir/scifact", "--overwrite"):
                    "5182 documents (ir_datasets: 5183)",
                ("data", "import", tmp_path / "changed", "--irds", "beir/scifact"): "--overwrite replaces it"}
    for done, message in zip(run_many(imported, *expected), expected.values()):
        assert message in one_error_line(done), done.args
    assert target.read_bytes() == before
    done = run(imported, "data", "import", tmp_path / "changed", "--irds", "beir/scifact", "--overwrite")
    assert done.returncode == 0, done.stderr
    check = "from lsr.eval.beir import load_corpus; print(list(load_corpus('irds:beir/scifact').corpus.values())[-1].text[:1])"
    assert run(imported, python=check).stdout.strip() == "X"  # ir_datasets' caches of the old copy went with it
