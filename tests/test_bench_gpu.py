"""`lsr bench gpu --dry-run`: the prepared GPU run, every part, on the CPU with tiny shapes and the Triton
kernels under the interpreter, so the GPU run cannot fail on a typo (about a minute on 2 cores)."""
from __future__ import annotations

import json

import pytest
import torch

from lsr.eval.bench.gpu import PARTS, PLANS


def test_dry_run_runs_every_part_and_records_where(cli, data_dir, tmp_path):
    out = tmp_path / "gpu.json"
    code, stdout, err = cli("bench", "gpu", "--dry-run", "--json", out, "--data-dir", data_dir)
    assert code == 0, err[-3000:]
    rows = json.loads(out.read_text())
    assert [p for p in PARTS if any(r["part"] == p for r in rows)] == list(PARTS)
    assert not [r for r in rows if "error" in r or r.get("outcome") == "failed"], err[-3000:]
    for r in rows:
        assert r["bench"] == "gpu" and r["dry_run"] is True and r["device"] == "cpu"
        assert r["torch"] == torch.__version__ and r["triton"] and "cuda" in r and r["device_name"]
    by_part = {p: [r for r in rows if r["part"] == p] for p in PARTS}
    tests = by_part["tests"]
    assert sum(t["outcome"] == "passed" for t in tests) >= 10
    assert any("wrong_kernel_falls_back" in t["test"] and t["outcome"] == "passed" for t in tests)
    assert {(r["dtype"], r["triton_ok"]) for r in by_part["selfcheck"]} == {("float32", True), ("bfloat16", True)}
    plan = PLANS["dry-run"]["head"]
    assert {(r["backend"], r["mode"], r["seq"], r["vocab"]) for r in by_part["head"]} == {
        (b, m, s, v) for b in ("reference", "torch", "triton") for m in ("forward", "train") for s in plan["seqs"]
        for v in plan["vocabs"]}
    assert all(r["median_ms"] > 0 for r in by_part["head"])
    assert {r["backend"] for r in by_part["capacity"]} == {"reference", "torch", "triton"}
    assert all(r["max_batch_in_budget"] >= 1 and r["trials"] for r in by_part["capacity"])
    trained = [r for r in by_part["train"] if "skipped" not in r]
    assert {r["head"] for r in trained} == set(PLANS["dry-run"]["train"]["heads"])
    assert all(r["steps_per_s"] > 0 and r["final_loss"] > 0 for r in trained)
    assert {r["backend"] for r in by_part["decoder"]} == {"reference", "torch", "triton"}
    assert all(r["max_abs_diff_vs_reference"] < 1e-3 for r in by_part["decoder"])
    tuned = by_part["autotune"]
    assert {r["kernel"] for r in tuned} == {"forward", "backward"} and all("BLOCK_V" in r["config"] for r in tuned)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_the_gpu_run_without_cuda_is_one_line(cli, tmp_path):
    code, _, err = cli("bench", "gpu", "--json", tmp_path / "gpu.json")
    assert code == 2 and err.startswith("error: lsr bench gpu needs a CUDA device") and err.count("\n") == 1, err
    assert not (tmp_path / "gpu.json").exists()
