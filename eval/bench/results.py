"""Results files of the benchmarks: written whole or not at all (a temporary file in the same folder, fsynced,
then `os.replace`), so a killed or concurrent run never leaves half a JSON file under eval/results/."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Replace the file at `path` with `data`: readers see the old content or the new, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # mkstemp's file is 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself
    finally:
        os.close(folder)
    return path


def write_json(path: str | Path, doc: Any) -> Path:
    return atomic_write(path, json.dumps(doc, indent=2).encode("utf-8"))


def append_rows(path: str | Path | None, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSON list file (created if missing), replacing the file in one step."""
    if path is None:
        return
    path = Path(path)
    old = json.loads(path.read_text()) if path.is_file() and path.stat().st_size else []
    write_json(path, [*old, *rows])
