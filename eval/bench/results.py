"""Results files of the benchmarks: written whole or not at all through the index's one atomic-write mechanism
(`lsr.index.files.atomic_write`: a temporary file in the same folder, fsynced, then `os.replace`), so a killed
or concurrent run never leaves half a JSON file under eval/results/."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lsr.index.files import atomic_write

__all__ = ["append_rows", "atomic_write", "write_json"]


def write_json(path: str | Path, doc: Any) -> Path:
    return atomic_write(path, json.dumps(doc, indent=2).encode("utf-8"))


def append_rows(path: str | Path | None, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSON list file (created if missing), replacing the file in one step."""
    if path is None:
        return
    path = Path(path)
    old = json.loads(path.read_text()) if path.is_file() and path.stat().st_size else []
    write_json(path, [*old, *rows])
