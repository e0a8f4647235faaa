from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lsr.encoders.provider import open_service
from lsr.eval.beir import load_corpus
from lsr.eval.pipeline import EncoderOptions, build_index

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path | None:
    for candidate in (os.environ.get("LSR_DATA_DIR"), REPO.parent / "shared" / "data" / "beir"):
        if candidate and (Path(candidate) / "scifact" / "corpus.jsonl").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = _data_dir()
    if found is None:
        pytest.skip("no BEIR data: set LSR_DATA_DIR to a folder holding scifact/ and nfcorpus/")
    return found


@pytest.fixture(scope="session")
def splade_tiny():
    from lsr.encoders import SpladeEncoder, resolve_model

    return SpladeEncoder(resolve_model("splade-tiny").source, show_progress=False)


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the `lsr` entry point in-process; returns (exit code, stdout, stderr)."""
    from lsr.api.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["lsr", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


# -- one small real index with sparse and dense stores, shared by the API tests ---------------------------
API_NUM_DOCS = 100  # the first 100 scifact documents, max length 128: about 20 s to build on 2 cores


@pytest.fixture(scope="session")
def api_corpus(data_dir):
    return load_corpus("scifact", data_dir, limit=API_NUM_DOCS)


@pytest.fixture(scope="session")
def api_index_dir(tmp_path_factory, api_corpus):
    path = tmp_path_factory.mktemp("api") / "index"
    build_index(api_corpus, "splade-tiny", path, EncoderOptions(max_length=128, show_progress=False), dense="minilm")
    return path


@pytest.fixture(scope="session")
def api_service(api_index_dir):
    return open_service(api_index_dir)


