from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lsr.api.service import SearchService, build_dense_index
from lsr.eval.beir import load_corpus
from lsr.eval.pipeline import EncoderOptions, build_sparse_index, load_sparse_encoder

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
    encoder = load_sparse_encoder("splade-tiny", EncoderOptions(max_length=128, show_progress=False))
    build_sparse_index(api_corpus, "splade-tiny", encoder, path)
    build_dense_index(path, api_corpus, "minilm", max_length=128)
    return path


@pytest.fixture(scope="session")
def api_service(api_index_dir):
    return SearchService(api_index_dir)


