"""The typed training configuration, read from a TOML file (`lsr train --config FILE`); unknown keys are errors.
A config may start from another: `base = "other.toml"` (relative to its own folder) gives every key it doesn't set.

Relative paths (`out`, `data.cache_dir`) are taken from the working directory the command runs in.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lsr.encoders.base import DEFAULT_MAX_LENGTH
from lsr.index import LsrError

from .teachers import TEACHERS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetRef(_Strict):
    name: str  # a BEIR name under the data dir, or a folder
    split: str = "train"
    repeat: int = Field(1, ge=1)  # its queries appear this many times per epoch (up-weights a small set)


class DataConfig(_Strict):
    datasets: list[DatasetRef] = Field(min_length=1)
    cache_dir: Path = Path("runs/train-cache")
    mine_depth: int = Field(50, ge=2)  # candidates per query from the project's index over sparse-teacher vectors
    # sparse: the sparse teacher's top mine_depth; hybrid: its top and the dense teacher's top, fused (alpha 0.5)
    mine_with: Literal["sparse", "hybrid"] = "sparse"
    negatives_depth: int = Field(50, ge=1)  # hard negatives are drawn from the top of the mined candidates
    group_size: int = Field(8, ge=2)  # documents per query in a step: one positive and group_size - 1 negatives
    teachers: list[str] = Field(default=["dense", "sparse"], min_length=1)  # of lsr.training.teachers.TEACHERS
    teacher_scale: float = Field(30.0, gt=0)  # the ensemble's normalised scores are multiplied by this
    sparse_teacher: str = "splade-tiny"
    dense_teacher: str = "minilm"

    @field_validator("teachers")
    @classmethod
    def _known_and_distinct(cls, v: list[str]) -> list[str]:
        if set(v) - set(TEACHERS):
            raise ValueError(f"unknown teachers {sorted(set(v) - set(TEACHERS))}; choose from {', '.join(TEACHERS)}")
        if len(set(v)) != len(v):
            raise ValueError("teachers must be distinct")
        return v


class LossConfig(_Strict):
    kl: float = Field(1.0, ge=0)  # KL to the teachers' ensemble distribution
    contrastive: float = Field(0.0, ge=0)  # InfoNCE over the query's hard negatives (and the batch's, see below)
    in_batch_negatives: bool = False  # contrastive: every other document of the micro-batch is a negative too
    margin_mse: float = Field(0.0, ge=0)
    flops: Literal["plain", "idf"] = "idf"  # plain FLOPS, or the IDF-aware form (lsr.training.losses)
    flops_idf_floor: float = Field(0.1, gt=0)
    doc_flops_weight: float = Field(1e-3, ge=0)  # lambda_d, reached after flops_warmup_steps (quadratic ramp)
    query_flops_weight: float = Field(1e-3, ge=0)  # lambda_q, siamese models only
    flops_warmup_steps: int = Field(100, ge=0)
    # l0 mask: only documents with more nonzeros than this pay the document FLOPS (0: every document)
    flops_threshold: int = Field(0, ge=0)


class LoraConfig(_Strict):
    r: int = Field(16, ge=1)
    alpha: float = Field(8, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class NewDecoderConfig(_Strict):
    """Start from a fresh decoder sharing a masked-LM model's vocabulary and embeddings (training/decoder_init)."""
    embeddings_from: str = "splade-tiny"
    architecture: Literal["mistral", "llama", "qwen2"] = "mistral"
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(2, ge=1)
    intermediate: int = Field(512, ge=1)
    vocab_bias: float = -4.5


class TrainConfig(_Strict):
    out: Path
    init: str = "splade-tiny"  # registered name, folder or hub id: masked-LM SPLADE or causal LM (Echo)
    new_decoder: NewDecoderConfig | None = None  # instead of `init`: build a small decoder first (out/init)
    query_encoder: Literal["idf", "siamese"] = "idf"  # idf = inference-free
    idf_trainable: bool = False
    idf_lr: float | None = Field(None, gt=0)  # learning rate of a trainable IDF table (default: lr)
    echo: bool = True  # decoder (causal-LM) students: Echo input, pool the second copy (False: the single copy)
    lora: LoraConfig | None = None  # decoder students: train LoRA adapters only (merged when saved)
    data: DataConfig
    loss: LossConfig = LossConfig()
    seed: int = 0
    steps: int = Field(ge=1)  # optimizer steps
    batch_queries: int = Field(4, ge=1)  # queries per micro-batch (x group_size documents)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(DEFAULT_MAX_LENGTH, ge=8)  # tokens per text in training
    encode_max_length: int | None = Field(None, ge=8)  # recorded with the model for encoding (default: max_length)
    head: str = "auto"  # fused SPLADE head backend (lsr.kernels)
    # auto | cpu | cuda | cuda:N (lsr.encoders.device); the student, the teachers and mining all run there.
    # On CUDA: bf16 autocast (fp32 master weights) and pinned batches. Not part of a run's identity: a run
    # started on one device resumes on another.
    device: str = "auto"
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)


    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        from lsr.encoders.device import check_device_name

        try:
            return check_device_name(v)
        except LsrError as e:
            raise ValueError(str(e)) from None


BASE_KEY = "base"  # a config may name another (a path relative to its own folder) and change some of its keys


def _merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` laid over it: tables merge key by key, anything else (lists included) is replaced."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The file's keys, over those of its `base` file (and that file's base, and so on)."""
    if path.resolve() in seen:
        raise LsrError(f"{path}: `{BASE_KEY}` goes round in a circle ({' -> '.join(p.name for p in seen)} -> {path.name})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise LsrError(f"{path}: cannot read the training config ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise LsrError(f"{path}: not valid TOML ({e})") from None
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise LsrError(f"{path}: `{BASE_KEY}` must be a file name, got {base!r}")
    return _merged(_read_toml(path.parent / base, (*seen, path.resolve())), raw)


def load_config(path: str | Path) -> TrainConfig:
    """The typed config of a TOML file; a `base = "other.toml"` key takes every key of that file the first doesn't set."""
    path = Path(path)
    raw = _read_toml(path)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        raise LsrError(f"{path}: {where}: {message} ({e.error_count()} error(s))") from None
