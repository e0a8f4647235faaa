"""Crash safety of `lsr index build`: a real build (sparse SPLADE-tiny + dense MiniLM + documents) in a
subprocess, killed with SIGKILL at named points (index/files.py `failpoint`) and once from outside while it
encodes. After every kill the target is the previous complete index, bit for bit; the next build removes
the dead build's leftovers, says so, and succeeds."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lsr.index import IndexReader

# the points, in build order: between sparse and dense encoding, half-way through each kind of file write,
# between the sparse and the other parts, after every part and before the meta, just before the final rename
FAILPOINTS = ["sparse-encoded", "write:postings_impacts.npy", "sparse-written", "write:dense.npy",
              "write:docs.jsonl", "publish"]  # .npy files and the others (JSON, JSONL, meta) have one writer each


def _build(out: Path, data_dir: Path, *, failpoint: str | None = None, limit: int = 12, wait: bool = True):
    env = dict(os.environ, LSR_DATA_DIR=str(data_dir))
    env.pop("LSR_FAILPOINT", None)
    if failpoint:
        env["LSR_FAILPOINT"] = failpoint
    args = [sys.executable, "-c", "from lsr.api.cli import main; main()", "index", "build", "--dataset", "scifact",
            "--model", "splade-tiny", "--dense", "minilm", "--limit", str(limit), "--max-length", "64",
            "--out", str(out), "--overwrite"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out_text, err_text = proc.communicate(timeout=300)
    return proc.returncode, out_text, err_text


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_killed_builds_leave_the_previous_index_intact(tmp_path, data_dir):
    target = tmp_path / "idx"
    code, _, err = _build(target, data_dir, limit=10)
    assert code == 0, err
    before = _snapshot(target)
    assert {"meta.json", "dense.npy", "dense_meta.json", "docs.jsonl", "doc_ids.json"} <= set(before)

    for point in FAILPOINTS:
        code, _, err = _build(target, data_dir, failpoint=point)
        assert code == -signal.SIGKILL, f"{point}: the build was not killed ({code}): {err[-500:]}"
        assert _snapshot(target) == before, f"killed at {point}: the previous index changed"
        IndexReader(target)  # and still opens, checked
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "idx"]
        assert all(name.startswith(".idx.tmp-") for name in leftovers), leftovers

    proc = _build(target, data_dir, wait=False)  # killed from outside, while it loads models and encodes
    time.sleep(4)
    proc.kill()
    proc.communicate(timeout=60)
    assert _snapshot(target) == before

    code, out, err = _build(target, data_dir)  # the rerun cleans up after the dead builds and succeeds
    assert code == 0, err
    assert "left by an earlier build" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"], "leftovers of killed builds were not removed"
    assert IndexReader(target).num_docs == 12 and _snapshot(target) != before


def test_a_fresh_target_killed_before_the_rename_does_not_exist(tmp_path, data_dir):
    target = tmp_path / "new"
    code, _, _ = _build(target, data_dir, failpoint="publish", limit=5)
    assert code == -signal.SIGKILL
    assert not target.exists()


@pytest.mark.parametrize("bad_out, message", [
    ("/dev/null/idx", "is not a folder"),
    ("FILE/idx", "is not a folder"),
    ("FILE", "exists and is not a folder"),
    ("NOTES", "is not an lsr index"),
])
def test_bad_out_is_refused_before_any_model_loads(cli, tmp_path, data_dir, bad_out, message):
    (tmp_path / "FILE").write_text("a user's file\n")
    (tmp_path / "NOTES").mkdir()
    (tmp_path / "NOTES" / "notes.txt").write_text("x\n")
    (tmp_path / "NOTES" / "sub").mkdir()
    out = bad_out if bad_out.startswith("/") else str(tmp_path / bad_out)
    start = time.perf_counter()
    code, _, err = cli("index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--limit", "5",
                       "--out", out, "--overwrite", "--data-dir", data_dir)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert time.perf_counter() - start < 5, "checked only after loading a model"
    assert (tmp_path / "FILE").read_text() == "a user's file\n"
    assert (tmp_path / "NOTES" / "notes.txt").read_text() == "x\n" and (tmp_path / "NOTES" / "sub").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "NOTES"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_is_refused_early(cli, tmp_path, data_dir):
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    code, _, err = cli("index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--out", parent / "idx",
                       "--data-dir", data_dir)
    assert code == 2 and "permission denied" in err


@pytest.mark.parametrize("args, message", [
    (["--bits", "7"], "'7' is not one of"),
    (["--dense", "no-such-model"], "unknown model"),
    (["--dense", "splade-tiny"], "not a dense encoder"),
    (["--head", "bogus"], "'bogus' is not one of"),
    (["--limit", "ten"], "'--limit': Input should be a valid integer"),
    (["--backend", "milvus2"], "is not one of"),
])
def test_bad_build_options_are_one_line_and_early(cli, tmp_path, data_dir, args, message):
    start = time.perf_counter()
    code, _, err = cli("index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--out", tmp_path / "i",
                       *args, "--data-dir", data_dir)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert time.perf_counter() - start < 5 and not (tmp_path / "i").exists()


def test_existing_index_needs_overwrite(cli, tmp_path, data_dir):
    code, _, err = cli("index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--limit", "3",
                       "--max-length", "32", "--out", tmp_path / "i", "--data-dir", data_dir)
    assert code == 0, err
    code, _, err = cli("index", "build", "--dataset", "scifact", "--model", "splade-tiny", "--limit", "3",
                       "--out", tmp_path / "i", "--data-dir", data_dir)
    assert code == 2 and "already exists" in err and err.count("\n") == 1
