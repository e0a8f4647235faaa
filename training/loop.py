"""The training loop: `train(config, datasets)` behind `lsr train --config FILE`.

Each optimizer step takes `grad_accum` micro-batches of `batch_queries` queries; each query brings one judged
positive and `group_size - 1` hard negatives from its mined candidates. Documents go through the student (the
backbone, then the fused SPLADE head of lsr.kernels); queries through the IDF table (inference-free) or the
same student (siamese). The objective (lsr.training.losses) returns each term by name; every term is logged.

Files under `out/`:
  log.jsonl                one record per logged step: every loss term, lambda, document nonzeros, FLOPS, lr, time
  checkpoints/step-N/      model (Hugging Face layout + idf.json) and training_state.pt; the newest is resumed
  model/                   the final model: `lsr eval --model out/model` works on it
  summary.json, curves.png the wall time, the final figures and the loss/FLOPS curves
"""
from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lsr.index import LsrError
from lsr.index.files import StagedFolder, atomic_write

from .config import TrainConfig
from .data import MiningSettings, TrainingSet, build_training_set
from .losses import (contrastive, flops, group_scores, idf_penalty_weights, kl_distillation, l0_mask,
                     margin_mse, quadratic_warmup)
from .teachers import ensemble


class Student:
    """The model being trained: a sparse encoder for documents (masked-LM SPLADE or Echo decoder SPLADE), the
    IDF table (inference-free) or the same encoder (siamese) for queries."""

    def __init__(self, config: TrainConfig, source: str, idf: np.ndarray | None,
                 device: torch.device | None = None) -> None:
        from lsr.encoders import load_sparse_encoder, resolve_model
        from lsr.encoders.idf import IdfQueryEncoder

        self.config = config
        self.device = device or torch.device("cpu")
        spec = resolve_model(source)
        options: dict[str, Any] = {"max_length": config.max_length, "head": config.head, "device": self.device,
                                   "show_progress": False}
        if spec.kind == "echo":
            options.update(echo=config.echo, lora=config.lora.model_dump() if config.lora else None)
        self.encoder = load_sparse_encoder(spec, **options)
        self.encoder.model.train()
        self.tokenizer = self.encoder.tokenizer
        self.idf = None
        if config.query_encoder == "idf":
            if idf is None:
                if self.encoder.query_encoder is None:
                    raise LsrError("an inference-free student needs an IDF table")
                idf = self.encoder.query_encoder.idf
            table = IdfQueryEncoder(self.tokenizer, idf).idf  # special tokens zeroed, checked
            self.idf = torch.nn.Parameter(torch.from_numpy(table).to(self.device), requires_grad=config.idf_trainable)

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters (LoRA adapters only when LoRA is on), each once (tied weights)."""
        seen: dict[int, torch.nn.Parameter] = {}
        for p in [*self.encoder.model.parameters(), *self.encoder.head_module.parameters()]:
            if p.requires_grad:
                seen.setdefault(id(p), p)
        params = list(seen.values())
        if self.idf is not None and self.idf.requires_grad:
            params.append(self.idf)
        return params

    def encode_docs(self, texts: list[str]) -> torch.Tensor:
        return self.encoder.forward(**self.encoder.tokenize(texts))

    def encode_queries(self, texts: list[str], token_ids: list[np.ndarray]) -> torch.Tensor:
        if self.idf is None:
            return self.encode_docs(texts)
        rows = torch.cat([torch.full((len(t),), i, dtype=torch.long) for i, t in enumerate(token_ids)]).to(self.device)
        cols = torch.from_numpy(np.concatenate(token_ids)).long().to(self.device)
        mask = torch.zeros(len(texts), len(self.idf), device=self.device)
        mask[rows, cols] = 1.0
        return mask * self.idf.clamp_min(0)

    def save(self, folder: Path) -> None:
        from lsr.encoders.idf import IdfQueryEncoder

        folder.mkdir(parents=True, exist_ok=True)
        trained_length = self.encoder.max_length
        self.encoder.max_length = self.config.encode_max_length or trained_length  # what lsr_encoder.json records
        try:
            self.encoder.save(folder)
        finally:
            self.encoder.max_length = trained_length
        if self.idf is not None:
            IdfQueryEncoder(self.tokenizer, self.idf.detach().clamp_min(0).cpu().numpy()).save(folder)


class QuerySampler:
    """The queries of `epoch` (indices, repeats allowed) in a seeded random order, epoch after epoch; its state
    is JSON and goes in checkpoints."""

    def __init__(self, epoch: np.ndarray, seed: int) -> None:
        self.epoch_items = np.asarray(epoch, dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(self.epoch_items)
        self.position = 0
        self.epoch = 0

    def take(self, n: int) -> np.ndarray:
        out = []
        while len(out) < n:
            if self.position == len(self.order):
                self.order, self.position, self.epoch = self.rng.permutation(self.epoch_items), 0, self.epoch + 1
            out.append(self.order[self.position])
            self.position += 1
        return np.asarray(out)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "position": self.position,
                "epoch": self.epoch}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order = np.asarray(state["order"], dtype=np.int64)
        self.position, self.epoch = int(state["position"]), int(state["epoch"])


def sample_groups(data: TrainingSet, queries: np.ndarray, group_size: int, negatives_depth: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(doc rows (Q*G,), pool entries (Q, G)) with each query's positive first, then hard negatives."""
    entries = np.empty((len(queries), group_size), dtype=np.int64)
    for i, q in enumerate(queries):
        pool = np.arange(data.pool_indptr[q], data.pool_indptr[q + 1])
        positive = data.pool_positive[pool]
        negatives = pool[~positive][:negatives_depth]
        if len(negatives) == 0:
            negatives = np.setdiff1d(np.arange(len(data.pool_docs)), pool)[:group_size]  # degenerate pools
        entries[i, 0] = rng.choice(pool[positive])
        entries[i, 1:] = rng.choice(negatives, size=group_size - 1, replace=len(negatives) < group_size - 1)
    return data.pool_docs[entries].ravel(), entries


def objective(config: TrainConfig, step: int, q_vecs: torch.Tensor, d_vecs: torch.Tensor, teacher: torch.Tensor,
              idf_weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every term by name, and `loss`, their weighted sum. Both FLOPS forms are reported when `idf_weights`
    (lsr.training.losses.idf_penalty_weights) are given; `config.loss.flops` picks the one that is optimised."""
    loss_cfg = config.loss
    group = config.data.group_size
    own, every = group_scores(q_vecs, d_vecs, group)
    positive = torch.arange(q_vecs.shape[0], device=q_vecs.device) * group
    terms: dict[str, torch.Tensor] = {
        "kl": kl_distillation(own, teacher),
        "contrastive": contrastive(every, positive) if loss_cfg.in_batch_negatives else contrastive(own),
        "margin_mse": margin_mse(own, teacher),
        "doc_flops": flops(d_vecs),
    }
    if idf_weights is not None:
        terms["doc_idf_flops"] = flops(d_vecs, idf_weights)
    if loss_cfg.flops == "idf" and idf_weights is None:
        raise LsrError("the IDF-aware FLOPS needs an IDF table")
    if loss_cfg.flops_threshold:
        masked = l0_mask(d_vecs, loss_cfg.flops_threshold)
        regulariser = flops(masked, idf_weights if loss_cfg.flops == "idf" else None)
    else:
        regulariser = terms["doc_idf_flops"] if loss_cfg.flops == "idf" else terms["doc_flops"]
    lam_d = quadratic_warmup(step, loss_cfg.doc_flops_weight, loss_cfg.flops_warmup_steps)
    loss = (loss_cfg.kl * terms["kl"] + loss_cfg.contrastive * terms["contrastive"]
            + loss_cfg.margin_mse * terms["margin_mse"] + lam_d * regulariser)
    if config.query_encoder == "siamese":
        terms["query_flops"] = flops(q_vecs, idf_weights if loss_cfg.flops == "idf" else None)
        loss = loss + quadratic_warmup(step, loss_cfg.query_flops_weight, loss_cfg.flops_warmup_steps) * terms["query_flops"]
    terms["loss"] = loss
    return terms


def train(config: TrainConfig, datasets: Sequence[Any], *, restart: bool = False,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) per `config` on `datasets` (BEIR-like objects) on `config.device`; returns the summary.
    On CUDA the student's forward pass and the objective run under bf16 autocast (the weights, their gradients
    and the optimizer stay fp32), and the fused head runs its Triton kernels (`auto`, once self-checked)."""
    from lsr.encoders import resolve_model
    from lsr.encoders.device import resolve_device, to_device
    from lsr.encoders.idf import IdfQueryEncoder

    device = resolve_device(config.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    out = Path(config.out)
    if restart and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    config_json = config.model_dump(mode="json")
    _check_same_config(out, config_json)

    _seed_everything(config.seed)
    data = build_training_set(datasets, config.data.cache_dir, MiningSettings(
        sparse_teacher=config.data.sparse_teacher, dense_teacher=config.data.dense_teacher,
        mine_depth=config.data.mine_depth, mine_with=config.data.mine_with, max_length=config.max_length,
        teachers=tuple(config.data.teachers),
        device=str(device)), log)
    checkpoint = _latest_checkpoint(out)
    if checkpoint:
        source = str(checkpoint)
    elif config.new_decoder:
        from .decoder_init import build_decoder

        d = config.new_decoder
        source = str(build_decoder(d.embeddings_from, out / "init", architecture=d.architecture, layers=d.layers,
                                   heads=d.heads, kv_heads=d.kv_heads, intermediate=d.intermediate,
                                   vocab_bias=d.vocab_bias, seed=config.seed))
    else:
        source = resolve_model(config.init).source
    from transformers import AutoTokenizer

    idf = None
    if config.query_encoder == "idf" and checkpoint is None:
        tokenizer = AutoTokenizer.from_pretrained(source)
        idf = IdfQueryEncoder.from_corpus(tokenizer, data.texts).idf  # over the training corpora
    student = Student(config, source, idf, device)
    query_ids = [np.unique(np.asarray(ids, dtype=np.int64)) for ids in
                 student.tokenizer(data.queries, add_special_tokens=False, truncation=True,
                                   max_length=config.max_length)["input_ids"]]
    if student.idf is not None:
        query_ids = [ids[student.idf.detach().cpu().numpy()[ids] > 0] for ids in query_ids]
    idf_table = student.idf.detach() if student.idf is not None else (
        torch.from_numpy(IdfQueryEncoder.from_corpus(student.tokenizer, data.texts).idf).to(device)
        if config.loss.flops == "idf" else None)
    flops_weights = None if idf_table is None else idf_penalty_weights(idf_table, config.loss.flops_idf_floor)

    groups: list[dict[str, Any]] = [{"params": [p for p in student.parameters() if p is not student.idf]}]
    if student.idf is not None and student.idf.requires_grad:
        groups.append({"params": [student.idf], "lr": config.idf_lr or config.lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * config.steps), config.steps)
    repeats = np.asarray([d.repeat for d in config.data.datasets])[data.query_source]
    sampler = QuerySampler(np.repeat(np.arange(len(data)), repeats), config.seed)
    group_rng = np.random.default_rng(config.seed + 1)
    step, elapsed_before = 0, 0.0
    if checkpoint:
        state = torch.load(checkpoint / "training_state.pt", weights_only=False, map_location="cpu")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state(state["sampler"])
        group_rng.bit_generator.state = state["group_rng"]
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
        log(f"resuming from {checkpoint} (step {step})")
    _truncate_log(out / "log.jsonl", step)

    start = time.perf_counter()
    pending: dict[str, list[float]] = {}
    while step < config.steps:
        step += 1
        for _ in range(config.grad_accum):
            queries = sampler.take(config.batch_queries)
            rows, entries = sample_groups(data, queries, config.data.group_size, config.data.negatives_depth,
                                          group_rng)
            teacher = to_device(torch.from_numpy(ensemble([data.teacher_scores[t][entries]
                                                           for t in config.data.teachers], config.data.teacher_scale)),
                                device)
            with autocast:
                d_vecs = student.encode_docs([data.texts[r] for r in rows])
                q_vecs = student.encode_queries([data.queries[q] for q in queries], [query_ids[q] for q in queries])
                terms = objective(config, step, q_vecs, d_vecs, teacher, flops_weights)
            (terms["loss"] / config.grad_accum).backward()
            for name, value in terms.items():
                pending.setdefault(name, []).append(float(value.detach()))
            pending.setdefault("doc_nnz", []).append(float((d_vecs.detach() > 0).sum(dim=1).float().mean()))
            pending.setdefault("batch_flops", []).append(float((d_vecs.detach() > 0).float().mean(0).square().sum()))
        torch.nn.utils.clip_grad_norm_(student.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % config.log_every == 0 or step == config.steps:
            record = {"step": step, "epoch": sampler.epoch, **{k: float(np.mean(v)) for k, v in pending.items()},
                      "doc_flops_weight": quadratic_warmup(step, config.loss.doc_flops_weight,
                                                           config.loss.flops_warmup_steps),
                      "lr": scheduler.get_last_lr()[0], "elapsed_s": elapsed_before + time.perf_counter() - start}
            pending.clear()
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            log(f"step {step}/{config.steps}  loss {record['loss']:.4f}  kl {record['kl']:.4f}  "
                f"doc_flops {record['doc_flops']:.3f}  doc nnz {record['doc_nnz']:.0f}  {record['elapsed_s']:.0f}s")
        if step % config.checkpoint_every == 0 and step < config.steps:
            _save_checkpoint(out, student, step, {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "sampler": sampler.state(),
                "group_rng": group_rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                "elapsed_s": elapsed_before + time.perf_counter() - start,
                **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})},
                config.keep_checkpoints)

    final = _save_folder(out / "model", student.save)
    records = read_log(out / "log.jsonl")
    summary = {"model": str(final), "steps": config.steps, "wall_s": records[-1]["elapsed_s"] if records else 0.0,
               "torch_threads": torch.get_num_threads(), "device": str(device), "queries": len(data),
               "documents": len(data.texts),
               "final": records[-1] if records else {}, "config": config_json}
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    plot_curves(records, out / "curves.png", title=out.name)
    log(f"model written to {final}")
    return summary


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_same_config(out: Path, config_json: dict) -> None:
    """A run's folder holds one recipe; where it runs (`device`) is not part of it."""
    path = out / "config.json"
    if path.is_file():
        recipe = {k: v for k, v in config_json.items() if k != "device"}
        if {k: v for k, v in json.loads(path.read_text()).items() if k != "device"} != recipe:
            raise LsrError(f"{out} holds a run with another configuration: pick another `out` or pass --restart")
    else:
        atomic_write(path, json.dumps(config_json, indent=2))


def _latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    found = [p for p in found if (p / "training_state.pt").is_file()]
    return found[-1] if found else None


def _save_folder(target: Path, write) -> Path:
    """`write(folder)` into a staged sibling, published in one rename (the previous folder swapped out whole): a
    crash leaves the previous checkpoint or model intact (lsr.index.files, the project's one writer)."""
    stage = StagedFolder(target, replace=lambda existing: True)  # our own output folder: replacing it is the job
    try:
        write(stage.path)
        return stage.publish()
    except BaseException:
        stage.discard()
        raise


def _save_checkpoint(out: Path, student: Student, step: int, state: dict, keep: int) -> None:
    root = out / "checkpoints"

    def write(folder: Path) -> None:
        student.save(folder)
        torch.save(state, folder / "training_state.pt")
    _save_folder(root / f"step-{step}", write)
    for old in sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
        shutil.rmtree(old)


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_log(path: Path, step: int) -> None:
    """Drop records past `step` (written after the checkpoint being resumed)."""
    records = [r for r in read_log(path) if r["step"] <= step]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))


def plot_curves(records: list[dict], path: Path, title: str = "") -> None:
    """Loss terms and document FLOPS/nonzeros against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in ("loss", "kl", "contrastive", "margin_mse"):
        axes[0].plot(steps, [r[name] for r in records], label=name)
    axes[0].set_title("loss terms")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].plot(steps, [r["doc_flops"] for r in records], label="plain FLOPS term")
    if "doc_idf_flops" in records[0]:
        axes[1].plot(steps, [r["doc_idf_flops"] for r in records], label="IDF-aware FLOPS term")
    axes[1].plot(steps, [r["batch_flops"] for r in records], label="batch FLOPS (nonzero overlap)")
    axes[1].set_title("document FLOPS")
    axes[1].legend()
    axes[2].plot(steps, [r["doc_nnz"] for r in records])
    axes[2].set_title("document nonzeros")
    for ax in axes:
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
