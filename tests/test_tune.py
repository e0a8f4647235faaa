"""Settings chosen on dev (lsr.eval.tune): every grid point scores what `lsr eval` ranks with that setting, the
choice is the best dev mean, and the report split is scored only for the chosen model."""
from __future__ import annotations

import pytest

from lsr.eval.beir import load_beir
from lsr.eval.pipeline import EncoderOptions, evaluate
from lsr.eval.tune import IDF_WEIGHTS, grid, label, tune
from lsr.index import Fusion, LsrError, Mode, Ranking

LIMIT = 80  # the first 80 scifact documents: a few judged queries of each split find their document


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tune")


def test_the_idf_grid_scores_what_lsr_eval_ranks_and_chooses_the_best_dev_mean(workdir, data_dir):
    result = tune("idf", ["lsr-ifree-tiny"], [("scifact", "train-dev")], [("scifact", "test")], workdir=workdir,
                  data_dir=data_dir, limit=LIMIT, log=lambda _: None)
    scores = result["scores"]["lsr-ifree-tiny"]
    assert len(scores) == len(IDF_WEIGHTS)
    best = max(scores, key=lambda lab: scores[lab]["mean"])
    assert result["chosen"]["setting"] == best and result["chosen"]["dev_mean_nDCG@10"] == scores[best]["mean"]
    ds = load_beir("scifact", "train-dev", data_dir, LIMIT)
    for weight in (0.0, 1.0):
        options = EncoderOptions(show_progress=False, collection_idf_weight=weight)
        want = evaluate(ds, "lsr-ifree-tiny", options, index_dir=workdir / "lsr-ifree-tiny-scifact").metrics
        assert scores[f"collection IDF weight {weight:g}"]["scifact/train-dev"] == pytest.approx(want["nDCG@10"])
    report = result["report_nDCG@10"]["scifact/test"]
    assert report["chosen"] == report["every_setting"][best]


def test_a_hybrid_grid_point_is_lsr_eval_at_that_setting(workdir, data_dir):
    result = tune("hybrid", ["splade-tiny"], [("scifact", "train-dev")], [], workdir=workdir, data_dir=data_dir,
                  limit=LIMIT, log=lambda _: None)
    scores = result["scores"]["splade-tiny"]
    assert set(scores) == {label(r) for r in grid()}
    ds = load_beir("scifact", "train-dev", data_dir, LIMIT)
    for r in (Ranking(mode=Mode.hybrid, alpha=0.3, depth=50), Ranking(mode=Mode.hybrid, fusion=Fusion.rrf)):
        want = evaluate(ds, "splade-tiny", EncoderOptions(show_progress=False), index_dir=workdir /
                        "splade-tiny-scifact", dense="minilm", ranking=r).metrics["nDCG@10"]
        assert scores[label(r)]["scifact/train-dev"] == pytest.approx(want)


def test_tune_needs_a_dev_split_and_an_inference_free_model_for_idf(workdir, data_dir):
    with pytest.raises(LsrError, match="dev split"):
        tune("idf", ["lsr-ifree-tiny"], [], [], workdir=workdir, data_dir=data_dir)
    with pytest.raises(LsrError, match="inference-free"):
        tune("idf", ["splade-tiny"], [("scifact", "train-dev")], [], workdir=workdir, data_dir=data_dir,
             limit=LIMIT, log=lambda _: None)


def test_significance_compares_what_lsr_eval_ranks_query_by_query(workdir, data_dir):
    from lsr.eval.significance import compare, parse_model

    result = compare("scifact", "train-dev", ["lsr-ifree-tiny@0", "lsr-ifree-tiny@1"], workdir=workdir,
                     data_dir=data_dir, limit=LIMIT)
    ds = load_beir("scifact", "train-dev", data_dir, LIMIT)
    for side, weight in zip(result["models"], (0.0, 1.0)):
        options = EncoderOptions(show_progress=False, collection_idf_weight=weight)
        want = evaluate(ds, "lsr-ifree-tiny", options, index_dir=workdir / "lsr-ifree-tiny-scifact").metrics
        assert side["collection_idf_weight"] == weight and side["mean"] == pytest.approx(want["nDCG@10"])
    a, b = result["models"]
    assert result["difference"] == pytest.approx(b["mean"] - a["mean"])
    assert result["wins"] + result["losses"] + result["ties"] == result["num_queries"] == len(ds.qrels)
    assert parse_model("runs/x/model") == ("runs/x/model", None)
    with pytest.raises(LsrError, match="MODEL@WEIGHT"):
        parse_model("lsr-ifree-tiny@high")
    with pytest.raises(LsrError, match="exactly two"):
        compare("scifact", "train-dev", ["lsr-ifree-tiny"], workdir=workdir, data_dir=data_dir, limit=LIMIT)
