"""lsr.eval.bench.decoder.bench_decoder on a tiny random Mistral: row keys, agreement with the reference head, JSON file.
Each (vocabulary, backend) runs in its own subprocess (peak RSS), so this takes ~20 s on 2 cores."""
from __future__ import annotations

import json

from lsr.eval.bench.decoder import bench_decoder
from lsr.eval.bench.measure import HEAD_BACKENDS

KEYS = {"device", "device_name", "torch", "time", "bench", "model", "backend", "vocab", "hidden", "layers", "heads",
        "kv_heads", "intermediate", "dtype", "dataset", "docs", "num_docs", "max_length", "batch_size", "echo",
        "repeats", "seed", "params_m", "avg_tokens", "median_s", "min_s", "times_s", "docs_per_s", "peak_mb",
        "avg_nonzeros", "max_abs_diff_vs_reference", "reference_over_this_median_s",
        "reference_over_this_peak_mb"}


def test_bench_decoder_tiny(tmp_path, data_dir):
    out = tmp_path / "rows.json"
    rows = bench_decoder(vocabs=[1000, 3000], docs=4, max_length=32, batch_size=2, hidden=32, layers=1, heads=4,
                         kv_heads=2, intermediate=64, dtype="float32", device="cpu", backends=["torch"], repeats=1,
                         data_dir=data_dir, json_path=out)
    assert [(r["vocab"], r["backend"]) for r in rows] == [(1000, "reference"), (1000, "torch"),
                                                          (3000, "reference"), (3000, "torch")]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert KEYS <= set(r), KEYS - set(r)
        assert "vectors" not in r and "data_dir" not in r  # worker-only settings stay out of the rows
        assert r["bench"] == "decoder" and r["device"] == "cpu" and r["num_docs"] == 4 and r["hidden"] == 32
        assert r["max_abs_diff_vs_reference"] <= 1e-4
        assert r["median_s"] > 0 and r["docs_per_s"] > 0 and len(r["times_s"]) == 1
        assert 0 < r["avg_nonzeros"] <= r["vocab"] and 0 < r["avg_tokens"] <= 32
    assert all(r["reference_over_this_median_s"] == 1.0 for r in rows if r["backend"] == "reference")
    assert json.loads(out.read_text()) == rows


def test_head_backends_named_without_torch_are_the_kernels():
    """The CLI's value set for --head/--backend (named in lsr.eval.bench so it starts without torch)."""
    from lsr.kernels import BACKENDS

    assert HEAD_BACKENDS == BACKENDS
