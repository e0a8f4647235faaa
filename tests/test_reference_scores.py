"""Whole-dataset scores against the expected figures in tests/data/regression.json (DESIGN.md §4): one entry per
dataset, model and mode with nDCG@10 (and R@100) and a tolerance, run as the README's `lsr eval` runs them.
Entries marked slow (whole-corpus SPLADE encoding, minutes each) run with `pytest -m slow`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REGRESSION = json.loads((REPO / "tests" / "data" / "regression.json").read_text())
METRICS = ("nDCG@10", "R@100")


def _id(entry: dict) -> str:
    return f"{entry['dataset']}-{entry['model']}-{entry['mode']}"


def _tolerance(entry: dict, metric: str) -> float:
    return {**REGRESSION["tolerance"], **entry.get("tolerance", {})}[metric]


ENTRIES = [pytest.param(e, id=_id(e), marks=[pytest.mark.slow] if e.get("slow", True) else [])
           for e in REGRESSION["scores"]]


@pytest.mark.parametrize("entry", ENTRIES)
def test_expected_scores(entry, data_dir, tmp_path, cli):
    """The eval as the README runs it (`lsr eval ... --json`), against the expected figures."""
    out = tmp_path / "report.json"
    args = ["eval", "--dataset", entry["dataset"], "--split", entry["split"], "--model", entry["model"],
            "--index", tmp_path / "index", "--json", out, "--data-dir", data_dir]
    if entry["model"] != "bm25":
        args += ["--mode", entry["mode"]]
    code, _, err = cli(*args)
    assert code == 0, err
    report = json.loads(out.read_text())
    for metric in METRICS:
        if metric in entry:
            assert report["metrics"][metric] == pytest.approx(entry[metric], abs=_tolerance(entry, metric)), metric
    assert report["query_latency_ms"]["p50"] > 0


@pytest.mark.parametrize("entry", REGRESSION["scores"], ids=_id)
def test_expectations_agree_with_the_committed_results(entry):
    """The expected figures are the ones a committed results file records (to the four decimals printed)."""
    results = json.loads((REPO / entry["results"]).read_text())
    assert (results["dataset"], results["split"]) == (entry["dataset"], entry["split"])
    assert results.get("mode", "sparse") == entry["mode"]
    assert results["model"].split(" ")[0].split("+")[0] == entry["model"]
    for metric in METRICS:
        if metric in entry:
            assert round(results["metrics"][metric], 4) == entry[metric], metric
