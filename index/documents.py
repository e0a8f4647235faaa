"""The documents' text, kept in the index folder so hits can carry titles and snippets: `docs.jsonl`, one
`{"doc_id", "title", "text"}` record per line in doc_idx order.

Written as one of an index folder's parts (`documents_part`), so the folder's meta.json covers it; read with
every record typed (strings or null) and its ids checked against the index's, so a bad byte, an edited
record or a truncated file is a one-line `IndexFormatError` naming the file and line, never a 500.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .errors import IndexFormatError, LsrError
from .files import write_file

DOCS_FILE = "docs.jsonl"


@dataclass(frozen=True)
class StoredDocument:
    doc_id: str
    title: str | None
    text: str | None


class DocumentNotFound(LsrError):
    """A doc_id that the index does not hold (the API answers 404)."""


def documents_part(documents: Iterable[StoredDocument]):
    """An index-folder part (`IndexWriter(parts=...)`) writing docs.jsonl; the documents must be the index's,
    in doc_idx order."""
    documents = list(documents)

    def write(folder: Path, impacts=None, doc_ids: Sequence[str] | None = None) -> None:
        if doc_ids is not None and [d.doc_id for d in documents] != list(doc_ids):
            raise LsrError("the documents' text is not in the index's doc_idx order (build both from one corpus)")
        write_documents(folder, documents)
    return write


def write_documents(folder: Path, documents: Iterable[StoredDocument]) -> Path:
    lines = []
    for d in documents:
        lines.append(json.dumps({"doc_id": d.doc_id, "title": d.title, "text": d.text}, ensure_ascii=False))
    write_file(folder / DOCS_FILE, ("\n".join(lines) + "\n").encode("utf-8") if lines else b"")
    return folder / DOCS_FILE


def read_documents(folder: Path, doc_ids: Sequence[str]) -> dict[str, StoredDocument]:
    """docs.jsonl of an index folder, typed, one record per indexed document in doc_idx order ({} if absent)."""
    path = Path(folder) / DOCS_FILE
    if not path.is_file():
        return {}
    docs: dict[str, StoredDocument] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                docs_record = _record(path, lineno, line)
                if lineno > len(doc_ids) or docs_record.doc_id != doc_ids[lineno - 1]:
                    raise IndexFormatError(f"{path}:{lineno}: doc_id {docs_record.doc_id!r:.60} is not the index's "
                                           "document at this position (edited or foreign docs.jsonl)")
                docs[docs_record.doc_id] = docs_record
    except UnicodeDecodeError as e:
        raise IndexFormatError(f"{path}: not valid UTF-8 at byte {e.start} (corrupted docs.jsonl)") from None
    if len(docs) != len(doc_ids):
        raise IndexFormatError(f"{path}: {len(docs)} documents, the index has {len(doc_ids)} (truncated docs.jsonl)")
    return docs


def _record(path: Path, lineno: int, line: str) -> StoredDocument:
    try:
        r = json.loads(line)
    except (ValueError, RecursionError):
        raise IndexFormatError(f"{path}:{lineno}: not a JSON record (corrupted docs.jsonl)") from None
    if not isinstance(r, dict) or not isinstance(r.get("doc_id"), str):
        raise IndexFormatError(f"{path}:{lineno}: not a document record with a string doc_id")
    for key in ("title", "text"):
        if r.get(key) is not None and not isinstance(r[key], str):
            raise IndexFormatError(f"{path}:{lineno}: {key} is a {type(r[key]).__name__}, not a string or null")
    return StoredDocument(r["doc_id"], r.get("title"), r.get("text"))
