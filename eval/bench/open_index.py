"""Opening an index: the time from `IndexReader(path)` to a searchable reader, with checksum verification on
(xxh3 of every file, headers and offsets) and off (the small files hashed and a structural pass over every
posting), against a baseline lsr
(an older checkout's `index/` package, which hashed every byte with SHA-256 on open), and the full
`lsr index verify` (SHA-256 of every file plus every check). Each figure is one fresh process (so numba's
compiled checks come from its cache, as in a service start), page cache warm; medians of `--repeats`.

    git worktree add runs/lsr-85d2539 85d2539     # the baseline: main before index folders were verified whole
    python -m lsr.eval.bench.open_index 1M --baseline runs/lsr-85d2539 --json eval/results/bench-open-1M.json

The index is the synthetic 1M corpus of `lsr bench query` (unclustered; `lsr.eval.bench.synthetic`), written
by our IndexWriter into `--workdir` and reused by later runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lsr.index import IndexWriter

from .query import corpus_vectors
from .results import write_json

OPEN = """
import sys, time
sys.path.insert(0, sys.argv[1]) if sys.argv[1] else None
from lsr.index import IndexReader
t = time.perf_counter()
IndexReader(sys.argv[2], verify_checksums=sys.argv[3] == "1")
print(time.perf_counter() - t)
"""
VERIFY = """
import sys, time
from lsr.index import verify_index
t = time.perf_counter()
verify_index(sys.argv[1])
print(time.perf_counter() - t)
"""


def _baseline_path(checkout: Path) -> str:
    """A folder where `import lsr.index` finds the baseline checkout's index/ (lsr.index imports only itself)."""
    root = Path(tempfile.mkdtemp(prefix="lsr-baseline-"))
    (root / "lsr").mkdir()
    (root / "lsr" / "__init__.py").write_text("")
    (root / "lsr" / "index").symlink_to(checkout.resolve() / "index")
    return str(root)


def _seconds(code: str, *args: str) -> float:
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def bench_open(corpus: str, *, workdir: Path, cache: Path, baseline: Path | None, repeats: int = 3,
               data_dir=None) -> dict:
    index = workdir / f"open-{corpus}"
    built_s = None
    if not (index / "meta.json").is_file():
        docs = corpus_vectors(corpus, data_dir, cache)
        start = time.perf_counter()
        with IndexWriter(index, vocab_size=docs.vocab_size, bits=8, info={"corpus": corpus}) as writer:
            writer.add(docs, [str(i) for i in range(len(docs))])
        built_s = time.perf_counter() - start
        del docs
    meta = json.loads((index / "meta.json").read_text())
    size = sum(r["bytes"] for r in meta["files"].values())
    _seconds(OPEN, "", str(index), "1")  # warm: page cache and numba's cache
    rows = {"verify on (xxh3 of every file, headers and offsets)": [_seconds(OPEN, "", str(index), "1") for _ in range(repeats)],
            "verify off (small files hashed, structural pass over every posting)": [_seconds(OPEN, "", str(index), "0") for _ in range(repeats)]}
    if baseline is not None:
        path = _baseline_path(baseline)
        rows["baseline, verify on (SHA-256 of every file)"] = [_seconds(OPEN, path, str(index), "1")
                                                               for _ in range(repeats)]
        rows["baseline, verify off"] = [_seconds(OPEN, path, str(index), "0") for _ in range(repeats)]
    rows["lsr index verify (SHA-256 + structure)"] = [_seconds(VERIFY, str(index)) for _ in range(max(1, repeats // 2))]
    return {
        "corpus": corpus, "corpus_kind": "synthetic, unclustered (lsr.eval.bench.synthetic)",
        "num_docs": meta["num_docs"], "num_postings": meta["num_postings"], "index_bytes": size,
        "index_build_s": built_s, "cpus": os.cpu_count(), "baseline": str(baseline) if baseline else None,
        "repeats": repeats,
        "rows": [{"what": what, "median_s": statistics.median(times), "runs_s": times} for what, times in rows.items()],
        "command": "python -m lsr.eval.bench.open_index " + " ".join(sys.argv[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", help="1M, 100k, ... (synthetic) or scifact / nfcorpus")
    parser.add_argument("--baseline", type=Path, help="an older lsr checkout to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-indexes"))
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-cache"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    result = bench_open(args.corpus, workdir=args.workdir, cache=args.cache, baseline=args.baseline,
                        repeats=args.repeats)
    for row in result["rows"]:
        print(f"{row['what']:>70}: {row['median_s']:7.2f} s (runs {', '.join(f'{t:.2f}' for t in row['runs_s'])})")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
