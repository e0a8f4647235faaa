"""The Ray tests (tests/ray_cases.py) run in a pytest process of their own: Ray's core worker replaces the
process's SIGSEGV handler, and the JVM that pyserini starts in this process (BM25, the Lucene backend) raises
SIGSEGV on purpose, so the two must not share a process (the suite segfaulted in the BM25 test after the Ray
tests while they did). `lsr.index.ray_shards` restores the handlers after `ray.init`, which covers `lsr` itself;
Ray's threads can still install them later."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("ray_cases.py")


def _run(marker: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, LSR_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, str(CASES)],
                          env=env, capture_output=True, text=True, timeout=1800, cwd=CASES.parent.parent)


def test_ray_cases(data_dir):
    proc = _run("not slow and not gpu", data_dir)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert re.search(r"^5 passed", proc.stdout, re.M), proc.stdout[-2000:]  # every case ran, none skipped


@pytest.mark.slow
def test_ray_cases_slow(data_dir):
    proc = _run("slow", data_dir)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert re.search(r"^1 passed", proc.stdout, re.M), proc.stdout[-2000:]
