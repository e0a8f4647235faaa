"""Evaluation and the offline jobs: dataset loading (`load_beir`, `load_corpus`: BEIR folders and `irds:`
ids through ir_datasets, `load_irds`), metrics (`evaluate_run`), the
pipeline (`build_index`, `evaluate`, `EncoderOptions`, `EvalReport`), reports (`print_report`); benchmarks in
`lsr.eval.bench`, other engines' adapters in `lsr.eval.engines`.

The names load on first use, so `import lsr.eval.beir` (or a benchmark) does not import the encoders."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"load_beir": "beir", "load_corpus": "beir", "BeirDataset": "dataset", "load_irds": "irds", "evaluate_run": "metrics",
            "build_index": "pipeline", "add_dense": "pipeline", "evaluate": "pipeline", "EncoderOptions": "pipeline",
            "EvalReport": "pipeline", "print_report": "report"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lsr.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
