"""The writer in bounded memory (index/runs.py): an index built from spilled runs, merged a few terms at a time,
is the index built whole, file for file; the runs folder never outlives the build, and a killed build's runs
are removed by the next build of the same target."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index import IndexReader, IndexWriter, Searcher
from lsr.index import runs
from lsr.index.errors import LsrError
from lsr.index.files import ArrayAppender
from lsr.index.quantize import Quantization
from lsr.index.sparse import SparseBatch

VOCAB = 2_000


def _batches(n_batches: int = 5, docs: int = 3_000, seed: int = 0) -> list[SparseBatch]:
    out = []
    for b in range(n_batches):
        m = sp.random(docs, VOCAB, density=0.01, format="csr", random_state=seed + b, dtype=np.float32)
        m.data = (m.data * 3).astype(np.float32)
        m.data[::40] = 1e-4  # quantised to zero: dropped in both orientations
        m.sort_indices()
        out.append(SparseBatch.from_scipy(m))
    return out


def _build(path: Path, batches, **options) -> Path:
    with IndexWriter(path, vocab_size=VOCAB, **options) as writer:
        for i, batch in enumerate(batches):
            writer.add(batch, [f"d{i}-{j}" for j in range(len(batch))])
    return path


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "meta.json"}


def _meta(path: Path) -> dict:
    meta = json.loads((path / "meta.json").read_text())
    return {k: v for k, v in meta.items() if k not in ("created", "meta_sha256")}


@pytest.mark.parametrize("layout", [{"format_version": 2}, {"format_version": 3},
                                    {"format_version": 3, "forward_index": True}])
@pytest.mark.parametrize("fixed_scale", [False, True])
def test_spilled_runs_give_the_index_built_whole(tmp_path, monkeypatch, layout, fixed_scale):
    batches = _batches()
    options = dict(layout, quantization=Quantization.fit(2.5, 8) if fixed_scale else None)
    whole = _build(tmp_path / "whole", batches, **options)
    monkeypatch.setattr(runs, "GROUP_POSTINGS", 9_000)  # many term groups, a long term alone in one
    spilled = _build(tmp_path / "spilled", batches, run_postings=50_000, **options)  # a run every ~2 batches
    assert _files(spilled) == _files(whole)
    assert _meta(spilled) == _meta(whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spilled", "whole"]  # no runs folder left
    reader = IndexReader(spilled)
    docs = SparseBatch.concat(batches)
    queries = docs.select(list(range(0, len(docs), 997)))
    exact = reader.doc_matrix() @ queries.to_scipy().T.toarray()  # brute force over the stored impacts
    for q, (idx, _) in enumerate(Searcher(reader).search_batch_vectors(queries, k=10)):
        assert np.allclose(np.sort(exact[idx, q])[::-1], np.sort(exact[:, q])[::-1][:10])


def test_a_failed_build_removes_its_runs(tmp_path):
    with pytest.raises(RuntimeError):
        with IndexWriter(tmp_path / "idx", vocab_size=VOCAB, run_postings=10_000) as writer:
            for i, batch in enumerate(_batches(3)):
                writer.add(batch, [f"d{i}-{j}" for j in range(len(batch))])
            assert any(".idx.tmp-" in p.name for p in tmp_path.iterdir())  # runs were spilled
            raise RuntimeError("the caller failed mid-build")
    assert list(tmp_path.iterdir()) == []


_KILLED_BUILD = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_runs import _batches, _build
_build(Path({target!r}), _batches(3), run_postings=10_000)
"""


def test_a_killed_build_leaves_runs_that_the_next_build_removes(tmp_path):
    target = tmp_path / "idx"
    code = _KILLED_BUILD.format(tests=str(Path(__file__).parent), target=str(target))
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, LSR_FAILPOINT="run-spilled"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".idx.tmp-") and "-runs-" in leftovers[0]
    said: list[str] = []
    with IndexWriter(target, vocab_size=VOCAB, run_postings=10_000, log=said.append) as writer:
        for i, batch in enumerate(_batches(3)):
            writer.add(batch, [f"d{i}-{j}" for j in range(len(batch))])
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
    assert any("did not finish" in line and leftovers[0] in line for line in said), said
    IndexReader(target)


def test_a_refused_commit_removes_its_runs(tmp_path):
    batches = _batches(3)
    with pytest.raises(LsrError, match="duplicate doc_id"):
        with IndexWriter(tmp_path / "idx", vocab_size=VOCAB, run_postings=10_000) as writer:
            for batch in batches:
                writer.add(batch, [f"d{j}" for j in range(len(batch))])  # the same ids in every batch
    assert list(tmp_path.iterdir()) == []


def test_run_postings_must_be_positive(tmp_path):
    with pytest.raises(LsrError, match="run_postings must be positive"):
        IndexWriter(tmp_path / "idx", vocab_size=VOCAB, run_postings=0)


def test_array_appender_writes_a_npy_piece_by_piece(tmp_path):
    path = tmp_path / "a.npy"
    out = ArrayAppender(path, np.int64, (3,))
    pieces = [np.arange(i * 6, dtype=np.int64).reshape(-1, 3) for i in range(4)]
    for piece in pieces:
        out.append(piece)
    with pytest.raises(ValueError, match="rows of shape"):
        out.append(np.zeros(4, np.int64))
    out.close()
    assert np.array_equal(np.load(path), np.concatenate(pieces))
    assert np.array_equal(np.load(path, mmap_mode="r"), np.concatenate(pieces))


def test_bounded_ranges_cover_every_row():
    counts = np.array([5, 0, 30, 1, 1, 1, 0, 12], np.int64)
    groups = runs.bounded_ranges(counts, 10)
    assert groups[0][0] == 0 and groups[-1][1] == len(counts)
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
    assert all(counts[t0:t1].sum() <= 10 or t1 - t0 == 1 for t0, t1 in groups)
    assert runs.bounded_ranges(np.zeros(0, np.int64), 10) == [(0, 0)]
