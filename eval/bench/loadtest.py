"""`lsr bench serve`: a bounded load test of the REST API on loopback.

Starts `uvicorn --factory lsr.api.app:app_from_env` over an index folder on 127.0.0.1, waits for /health,
then `clients` threads (keep-alive connections) send POST /search for `seconds` seconds (and at most
`max_requests` each), with the index's document titles as queries. Reports QPS, latency percentiles,
failures and the server's resident memory sampled through the run (after warm-up vs at the end).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from lsr.index import LsrError

from .results import write_json

MAX_CLIENTS = 256
MAX_SECONDS = 600
CLIENTS, SECONDS = 32, 60.0
MODES = ("sparse", "dense", "hybrid")  # the service's ranking modes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _queries(index_dir: Path, limit: int = 2000) -> list[str]:
    docs = index_dir / "docs.jsonl"
    if not docs.is_file():
        raise LsrError(f"{index_dir}: no docs.jsonl to draw queries from (build the index with `lsr index build`)")
    titles = []
    with open(docs, encoding="utf-8") as f:
        for line in f:
            title = (json.loads(line).get("title") or "").strip()
            if title:
                titles.append(title[:300])
            if len(titles) >= limit:
                break
    if not titles:
        raise LsrError(f"{docs}: no titles to use as queries")
    return titles


@contextmanager
def running_server(index_dir: str | Path, startup_timeout: float = 180.0) -> Iterator[tuple[int, int]]:
    """A real uvicorn server over `index_dir` on a free loopback port, up once /health answers; yields
    (port, pid) and stops the server on exit."""
    port = _free_port()
    env = dict(os.environ, LSR_INDEX_DIR=str(index_dir))
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "lsr.api.app:app_from_env",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if server.poll() is not None:
                raise LsrError(f"the server exited with status {server.returncode} before answering")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LsrError(f"the server did not answer /health within {startup_timeout:.0f} s")
            time.sleep(0.5)
        yield port, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def load_test(index_dir: str | Path, *, clients: int = CLIENTS, seconds: float = SECONDS, mode: str = "sparse",
              max_requests: int = 100_000, startup_timeout: float = 180.0) -> dict[str, Any]:
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS:
        raise LsrError(f"clients must be 1..{MAX_CLIENTS} and seconds 0..{MAX_SECONDS}")
    if mode not in MODES:
        raise LsrError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    queries = _queries(Path(index_dir))
    with running_server(index_dir, startup_timeout) as (port, pid):
        rss: list[tuple[float, float]] = []
        latencies: list[list[float]] = [[] for _ in range(clients)]
        failures = [0] * clients
        statuses: dict[int, int] = {}
        lock = threading.Lock()
        start = time.monotonic()
        stop_at = start + seconds

        def sample() -> None:
            while time.monotonic() < stop_at:
                rss.append((time.monotonic() - start, _rss_mb(pid)))
                time.sleep(0.5)

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            n = 0
            while time.monotonic() < stop_at and n < max_requests:
                body = json.dumps({"query": queries[(i * 7919 + n) % len(queries)], "k": 10, "mode": mode})
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/search", body=body, headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except OSError:
                    failures[i] += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    continue
                latencies[i].append((time.perf_counter() - t0) * 1e3)
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    failures[i] += 1
                n += 1
            conn.close()

        threads = [threading.Thread(target=sample)]
        threads += [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        lat = np.array([x for per in latencies for x in per])
        warm = [m for t, m in rss if t >= seconds * 0.1] or [m for _, m in rss]
        return {"clients": clients, "seconds": round(elapsed, 2), "mode": mode, "requests": int(lat.size),
                "failed": int(sum(failures)), "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "qps": lat.size / elapsed, "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
                "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
                "rss_mb_after_warmup": warm[0], "rss_mb_end": warm[-1], "rss_mb_max": max(warm),
                "rss_mb_timeline": [[round(t), round(m)] for t, m in rss[::20]]}  # every ~10 s


def format_row(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """The result as a JSON file, replaced whole."""
    write_json(path, result)
