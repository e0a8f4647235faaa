"""Encoders for an index folder: the `EncoderProvider` the search layer (`lsr.index.SearchService`) asks for
the query encoders of the models a folder records, with the settings it was built with."""
from __future__ import annotations

import hashlib
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


# the files of a model folder that do not shape its document vectors: its card, and the query side of an
# inference-free model (the IDF table and the collection-IDF weight are read at query time)
_NOT_DOCUMENT_FILES = {"README.md", "idf.json", "lsr_encoder.json"}
_WHOLE_BYTES = 64 << 20  # files up to this size are hashed whole; larger ones by their size and three windows
_WINDOW = 1 << 20


def model_fingerprint(model: str) -> str | None:
    """A short hash of the files that make a model's document vectors, so that an index can tell the weights it
    was built with from others under the same name (a registered model replaced by a newer release, a folder
    retrained in place). None where there is no local folder to read (a hub id not in the cache, bm25)."""
    source = resolve_model(model).source
    folder = Path(source) if source else None
    if folder is None or not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(f for f in folder.rglob("*") if f.is_file() and f.name not in _NOT_DOCUMENT_FILES):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder)}\0{size}\0".encode())
        with file.open("rb") as fh:
            if size <= _WHOLE_BYTES:
                digest.update(fh.read())
            else:
                for offset in (0, size // 2, size - _WINDOW):
                    fh.seek(offset)
                    digest.update(fh.read(_WINDOW))
    return digest.hexdigest()[:16]


def model_identity(model: str) -> dict[str, Any]:
    """What an index records of the model that encoded its documents (`check_same_weights` reads it back)."""
    return {"model": model_reference(model), "model_fingerprint": model_fingerprint(model)}


def check_same_weights(info: Mapping[str, Any], where: str | Path) -> None:
    """Refuse, in one line, an index whose documents came from other weights than the installed ones of the model
    it names (an index from before fingerprints were recorded cannot be told, and passes)."""
    recorded = info.get("model_fingerprint")
    installed = model_fingerprint(info["model"]) if recorded else None
    if recorded and installed and recorded != installed:
        raise LsrError(f"{where} was built with other weights of {info['model']!r} than the ones installed now "
                       f"(rebuild it)")


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
        check_same_weights(info, f"this index (of {info.get('dataset') or 'its documents'})")
        return load_sparse_encoder(resolve_model(info["model"]), max_length=int(info.get("max_length") or
                                   DEFAULT_MAX_LENGTH), batch_size=1, head=self.head, show_progress=False)

    def dense_query_encoder(self, info: Mapping[str, Any]) -> DenseEncoder:
        check_same_weights(info, f"this index's dense store (of {info.get('dataset') or 'its documents'})")
        return load_dense_encoder(info["model"], max_length=info.get("max_length"), batch_size=1)


def open_service(index_dir: str | Path, *, head: str = "auto", **options: Any) -> SearchService:
    """The search service over an index folder (plain or sharded), with the encoders of the models it records;
    `options` are SearchService's (verify_checksums, dense_backend, engine, ray_address, search_options)."""
    return SearchService(index_dir, encoders=ModelProvider(head=head), **options)
