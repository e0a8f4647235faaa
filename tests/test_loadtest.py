"""The load test against a real uvicorn server on loopback (short and bounded here; `lsr bench serve` runs the
full 32 clients x 60 s)."""
from __future__ import annotations

from lsr.eval.bench.loadtest import load_test


def test_load_test_on_loopback(api_index_dir):
    result = load_test(api_index_dir, clients=3, seconds=3, mode="hybrid")
    assert result["requests"] > 0 and result["failed"] == 0 and result["statuses"] == {"200": result["requests"]}
    assert result["p99_ms"] >= result["p50_ms"] > 0 and result["rss_mb_max"] > 0
