"""The inference-free training ablation in one command: train each config (or reuse its finished run), evaluate
it on scifact test and nfcorpus dev (documents by the student, queries by IDF only), and write one table.

    LSR_DATA_DIR=../shared/data/beir python -m lsr.eval.ablation training/configs/lsr-ifree-tiny.toml \\
        training/configs/ablation-*.toml --json eval/results/ablation-ifree.json

Rows: nDCG@10 per set, average document nonzeros, FLOPS (expected query-document term overlaps, SPLADE's
definition, on each eval set), and the training wall time.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EVAL_SETS = (("scifact", "test"), ("nfcorpus", "dev"))


def run_config(config_path: Path, data_dir: str | None, log=print) -> dict:
    from lsr.eval.beir import load_beir
    from lsr.eval.pipeline import EncoderOptions, evaluate
    from lsr.training import load_config
    from lsr.training.loop import train

    config = load_config(config_path)
    out = Path(config.out)
    summary_file = out / "summary.json"
    if summary_file.is_file() and (out / "model").is_dir():
        summary = json.loads(summary_file.read_text())
        log(f"{config_path}: reusing the finished run in {out}")
    else:
        summary = train(config, [load_beir(d.name, d.split, data_dir) for d in config.data.datasets], log=log)
    row = {"config": str(config_path), "flops_kind": config.loss.flops, "teachers": "+".join(config.data.teachers),
           "doc_flops_weight": config.loss.doc_flops_weight, "steps": config.steps, "train_wall_s": summary["wall_s"]}
    for name, split in EVAL_SETS:
        dataset = load_beir(name, split, data_dir)
        report = evaluate(dataset, str(out / "model"), EncoderOptions(max_length=config.max_length, show_progress=False),
                          index_dir=out / f"index-{name}")
        row[f"{name}_{split}"] = {"nDCG@10": report.metrics["nDCG@10"], "avg_doc_nnz": report.efficiency["avg_doc_nnz"],
                                  "avg_query_nnz": report.efficiency["avg_query_nnz"],
                                  "flops": report.efficiency["flops"]}
        log(f"{config_path}: {name} {split} nDCG@10 {report.metrics['nDCG@10']:.4f}, "
            f"{report.efficiency['avg_doc_nnz']:.1f} doc nonzeros, FLOPS {report.efficiency['flops']:.3f}")
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| config | FLOPS form | teachers | lambda_d | scifact test nDCG@10 | nfcorpus dev nDCG@10 | "
             "doc nonzeros (scifact / nfcorpus) | FLOPS (scifact / nfcorpus) | train wall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, n = r["scifact_test"], r["nfcorpus_dev"]
        lines.append(f"| {Path(r['config']).stem} | {r['flops_kind']} | {r['teachers']} | {r['doc_flops_weight']:g} | "
                     f"{s['nDCG@10']:.4f} | {n['nDCG@10']:.4f} | {s['avg_doc_nnz']:.0f} / {n['avg_doc_nnz']:.0f} | "
                     f"{s['flops']:.2f} / {n['flops']:.2f} | {r['train_wall_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    rows = [run_config(c, args.data_dir) for c in args.configs]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
