"""Encoders for an index folder: the `EncoderProvider` the search layer (`lsr.index.SearchService`) asks for
the query encoders of the models a folder records, with the settings it was built with."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from lsr.index import LsrError, SearchService

from .base import DEFAULT_MAX_LENGTH
from .dense import DenseEncoder
from .registry import load_sparse_encoder, resolve_model


def model_reference(model: str) -> str:
    """How an index records its model: a registered name or hub id as given, a folder as an absolute path."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def load_dense_encoder(model: str, *, max_length: int | None = None, batch_size: int = 32) -> DenseEncoder:
    spec = resolve_model(model)
    if spec.kind != "dense":
        raise LsrError(f"model {model!r} is a {spec.kind} model, not a dense encoder")
    return DenseEncoder(spec.source, max_length=max_length or DEFAULT_MAX_LENGTH, batch_size=batch_size)


class ModelProvider:
    """Loads query encoders by the model names and max lengths an index records (one query per batch)."""

    def __init__(self, *, head: str = "auto") -> None:
        self.head = head

    def sparse_query_encoder(self, info: Mapping[str, Any]):
        return load_sparse_encoder(resolve_model(info["model"]), max_length=int(info.get("max_length") or
                                   DEFAULT_MAX_LENGTH), batch_size=1, head=self.head, show_progress=False)

    def dense_query_encoder(self, info: Mapping[str, Any]) -> DenseEncoder:
        return load_dense_encoder(info["model"], max_length=info.get("max_length"), batch_size=1)


def open_service(index_dir: str | Path, *, head: str = "auto", **options: Any) -> SearchService:
    """The search service over an index folder (plain or sharded), with the encoders of the models it records;
    `options` are SearchService's (verify_checksums, dense_backend, engine, ray_address, search_options)."""
    return SearchService(index_dir, encoders=ModelProvider(head=head), **options)
