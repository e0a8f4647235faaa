"""Whole-dataset scores against the published and reference figures (DESIGN.md §4)."""
from __future__ import annotations

import pytest

from lsr.eval.beir import load_beir
from lsr.eval.pipeline import EncoderOptions, evaluate


def test_bm25_reproduces_anserini_flat_on_scifact(data_dir):
    report = evaluate(load_beir("scifact", "test", data_dir), "bm25", EncoderOptions(show_progress=False))
    assert report.metrics["nDCG@10"] == pytest.approx(0.6789, abs=0.005)
    assert report.efficiency["query_latency_ms"]["p50"] > 0


@pytest.mark.slow
def test_splade_tiny_on_scifact(data_dir):
    report = evaluate(load_beir("scifact", "test", data_dir), "splade-tiny", EncoderOptions(show_progress=False))
    assert report.metrics["nDCG@10"] >= 0.640
    assert report.metrics["R@100"] >= 0.88
