"""Published sparse-model folder layouts, read into one description (`SparseLayout`) the SPLADE encoder loads.

- **plain masked LM** (naver SPLADE, OpenSearch siamese v1/v2, lsr's own checkpoints): `config.json` with a
  `*ForMaskedLM` architecture, weights, tokenizer; max-pooled log(1 + ReLU) over the MLM logits. With an
  `idf.json` ({token: idf}) beside it the model is inference-free: queries through the IDF table. A folder
  with `idf.json` and no `lsr_encoder.json` is an OpenSearch doc-v* model, whose reference code zeroes the
  special tokens' document weights (`drop_special_tokens`; they never score, queries hold none).
- **sentence-transformers SparseEncoder** (`modules.json`): a fill-mask `Transformer` (or the older
  `MLMTransformer`) then `SpladePooling` (pooling `max`/`sum`, activation `relu`/`log1p_relu`), or one
  `Router` (`router_config.json`) whose query route is a `SparseStaticEmbedding` (IDF weights in its
  safetensors, or an `idf.json` it points to) and whose document route is Transformer + SpladePooling: the
  inference-free layout. Max lengths: per-task `query_length`/`document_length`, else the older
  `max_seq_length`, else the tokenizer's `model_max_length` capped at the model's positions (what
  sentence-transformers does); prompts from `config_sentence_transformers.json`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsr.index import LsrError

from .base import ENCODER_SETTINGS_FILE, read_json_object
from .idf import IDF_FILE
ST_MODULES = "modules.json"
ST_SETTINGS = "config_sentence_transformers.json"
ROUTER_CONFIG = "router_config.json"
TRANSFORMER_TYPES = ("Transformer", "MLMTransformer")  # the class names sentence-transformers saves
POOLINGS = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")
EXPECTED = ("config.json with a *ForMaskedLM or *ForCausalLM architecture (a Hugging Face checkpoint, with "
            "idf.json for an inference-free one), or modules.json (a sentence-transformers model)")


@dataclass(frozen=True)
class SparseLayout:
    """What a sparse model folder holds, in the terms the SPLADE encoder takes."""
    layout: str  # "mlm", "opensearch-ifree", "st-splade", "st-router"
    mlm: Path  # the folder with the masked LM (config.json, weights, tokenizer)
    pooling: str = "max"
    activation: str = "relu"
    document_max_length: int | None = None  # None: the caller's or the default
    query_max_length: int | None = None
    document_prompt: str = ""
    query_prompt: str = ""
    lowercase: bool = False
    drop_special_tokens: bool = False
    # the inference-free query side: an idf.json keyed by token strings, or a weight vector from a
    # sentence-transformers SparseStaticEmbedding together with the folder of its tokenizer
    idf_json: Path | None = None
    idf_weights: np.ndarray | None = field(default=None, compare=False, repr=False)
    query_tokenizer: Path | None = None

    @property
    def inference_free(self) -> bool:
        return self.idf_json is not None or self.idf_weights is not None


def _type_name(module_type: str) -> str:
    return module_type.rsplit(".", 1)[-1]


def is_sentence_transformers_sparse(folder: Path) -> bool:
    """A sentence-transformers folder of a SparseEncoder (not a dense SentenceTransformer)."""
    settings = folder / ST_SETTINGS
    if settings.is_file() and read_json_object(settings, "sentence-transformers settings").get("model_type") == \
            "SparseEncoder":
        return True
    types = [_type_name(m.get("type", "")) for m in _modules(folder)]
    if "Router" in types and (folder / ROUTER_CONFIG).is_file():
        types += [_type_name(t) for t in read_json_object(folder / ROUTER_CONFIG, "router config")["types"].values()]
    return any(t in ("SpladePooling", "SparseStaticEmbedding") for t in types)


def _modules(folder: Path) -> list[dict]:
    try:
        modules = json.loads((folder / ST_MODULES).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LsrError(f"{folder / ST_MODULES}: not a readable sentence-transformers module list ({e})") from e
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise LsrError(f"{folder / ST_MODULES}: expected a list of modules")
    return modules


def _module_config(folder: Path, name: str = "config.json") -> dict:
    path = folder / name
    return read_json_object(path, "module config") if path.is_file() else {}


def _transformer_lengths(folder: Path) -> tuple[int | None, int | None, bool]:
    """(document max length, query max length, lowercase) a Transformer module records."""
    config = _module_config(folder, "sentence_bert_config.json")
    fallback = config.get("max_seq_length")
    if fallback is None:
        tokenizer = _module_config(folder, "tokenizer_config.json").get("model_max_length")
        positions = _module_config(folder).get("max_position_embeddings")
        lengths = [int(n) for n in (tokenizer, positions) if isinstance(n, (int, float)) and 0 < n < 1e9]
        fallback = min(lengths) if lengths else None
    return (config.get("document_length") or fallback, config.get("query_length") or fallback,
            bool(config.get("do_lower_case", False)))


def _pooling(folder: Path) -> tuple[str, str]:
    config = _module_config(folder)
    pooling, activation = config.get("pooling_strategy", "max"), config.get("activation_function", "relu")
    if pooling not in POOLINGS or activation not in ACTIVATIONS:
        raise LsrError(f"{folder}: SpladePooling {pooling!r}/{activation!r} is not one of {POOLINGS} x {ACTIVATIONS}")
    return pooling, activation


def _splade_route(root: Path, route: list[tuple[str, str]], where: str) -> dict:
    """The MLM and pooling of a [Transformer, SpladePooling] module chain (type, folder relative to root)."""
    types = [_type_name(t) for t, _ in route]
    if len(route) != 2 or types[0] not in TRANSFORMER_TYPES or types[1] != "SpladePooling":
        raise LsrError(f"{where}: modules {types} are not a SPLADE encoder (expected Transformer then SpladePooling)")
    mlm = root / route[0][1]
    if not (mlm / "config.json").is_file():
        raise LsrError(f"{where}: no config.json for the masked LM at {mlm}")
    doc_len, query_len, lowercase = _transformer_lengths(mlm)
    pooling, activation = _pooling(root / route[1][1])
    return {"mlm": mlm, "pooling": pooling, "activation": activation, "document_max_length": doc_len,
            "query_max_length": query_len, "lowercase": lowercase}


def _prompts(folder: Path) -> dict:
    prompts = _module_config(folder, ST_SETTINGS).get("prompts") or {}
    return {"document_prompt": str(prompts.get("document") or ""), "query_prompt": str(prompts.get("query") or "")}


def _static_embedding(folder: Path) -> dict:
    """The query side of a router: a SparseStaticEmbedding's weights (or the idf.json it names), its tokenizer."""
    config = _module_config(folder)
    path = config.get("path")
    if isinstance(path, str) and path.endswith(".json"):
        json_path = folder / path if (folder / path).is_file() else folder.parent / path
        if not json_path.is_file():
            raise LsrError(f"{folder}: the IDF table it names, {path}, is not there")
        return {"idf_json": json_path, "query_tokenizer": folder}
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise LsrError(f"{folder}: SparseStaticEmbedding without model.safetensors or an idf.json path")
    from safetensors.numpy import load_file

    tensors = load_file(str(weights))
    if "weight" not in tensors or tensors["weight"].ndim != 1:
        raise LsrError(f"{weights}: expected a 1-D 'weight' tensor (the static IDF weights)")
    return {"idf_weights": tensors["weight"].astype(np.float32), "query_tokenizer": folder}


def _read_sentence_transformers(folder: Path) -> SparseLayout:
    modules = _modules(folder)
    types = [_type_name(m.get("type", "")) for m in modules]
    if types == ["Router"]:
        config = read_json_object(folder / modules[0].get("path", "") / ROUTER_CONFIG, "router config")
        root = folder / modules[0].get("path", "")
        structure, kinds = config.get("structure") or {}, config.get("types") or {}
        if set(structure) != {"query", "document"}:
            raise LsrError(f"{folder / ROUTER_CONFIG}: routes {sorted(structure)}, expected query and document")
        query = [(kinds[m], m) for m in structure["query"]]
        document = [(kinds[m], m) for m in structure["document"]]
        doc = _splade_route(root, document, f"{folder} (document route)")
        if [_type_name(t) for t, _ in query] != ["SparseStaticEmbedding"]:
            if query == document:  # the same modules on both sides: a siamese model saved as a router
                return SparseLayout("st-splade", **doc, **_prompts(folder))
            raise LsrError(f"{folder} (query route): modules {[_type_name(t) for t, _ in query]} are not supported "
                           "(expected one SparseStaticEmbedding, or the document route's modules)")
        static = _static_embedding(root / query[0][1])
        doc["query_max_length"] = _transformer_lengths(root / query[0][1])[0]  # its tokenizer's model_max_length
        return SparseLayout("st-router", **doc, **static, **_prompts(folder))
    route = [(m.get("type", ""), m.get("path", "")) for m in modules]
    return SparseLayout("st-splade", **_splade_route(folder, route, str(folder)), **_prompts(folder))


def read_layout(source: str | Path) -> SparseLayout:
    """The layout of a local folder (see the module docstring); a hub id that is not a local folder is read
    as a plain masked LM (its files are fetched by transformers)."""
    folder = Path(source)
    if not folder.is_dir():
        return SparseLayout("mlm", folder)
    if (folder / ST_MODULES).is_file():
        if not is_sentence_transformers_sparse(folder):
            raise LsrError(f"{folder}: a dense sentence-transformers model, not a sparse encoder")
        return _read_sentence_transformers(folder)
    if not (folder / "config.json").is_file():
        raise LsrError(f"{folder}: none of the known model layouts: expected {EXPECTED}")
    if (folder / IDF_FILE).is_file():
        own = (folder / ENCODER_SETTINGS_FILE).is_file()
        return SparseLayout("mlm" if own else "opensearch-ifree", folder, idf_json=folder / IDF_FILE,
                            query_tokenizer=folder, drop_special_tokens=not own)
    return SparseLayout("mlm", folder)
