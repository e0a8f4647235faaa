"""Corruption battery over every file of a real index folder (SPLADE-tiny impacts, a MiniLM dense store, the
documents): each damage is refused with a one-line error naming the file, on open or by `lsr index verify`,
with checksum verification on and off; none gives a traceback, a 500 or a wrong ranking."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lsr.encoders.provider import load_dense_encoder
from lsr.eval.beir import load_corpus
from lsr.eval.pipeline import EncoderOptions, build_index, load_sparse_encoder
from lsr.index import IndexFormatError, SearchService, verify_index

QUERY = "cancer cells and microRNA"


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    path = tmp_path_factory.mktemp("corrupt") / "pristine"
    options = EncoderOptions(max_length=64, show_progress=False)
    build_index(load_corpus("scifact", data_dir, limit=40), "splade-tiny", path, options, dense="minilm")
    encoders = {"sparse_encoder": load_sparse_encoder("splade-tiny", options),
                "dense_encoder": load_dense_encoder("minilm", max_length=64, batch_size=1)}
    service = SearchService(path, **encoders)
    expected = {mode: service.search(query=QUERY, k=10, mode=mode) for mode in ("sparse", "dense", "hybrid")}
    return path, encoders, expected


FILES = ["meta.json", "postings_offsets.npy", "postings_doc_idx.npy", "postings_impacts.npy", "forward_indptr.npy",
         "forward_term_ids.npy", "forward_impacts.npy", "blockmax_offsets.npy", "blockmax_blocks.npy",
         "blockmax_impacts.npy", "doc_ids.json", "dense.npy", "dense_meta.json", "docs.jsonl"]


def _flip(p, where=0.5):
    data = bytearray(p.read_bytes())
    data[int(len(data) * where) if len(data) > 1 else 0] ^= 0x5A
    p.write_bytes(bytes(data))


def _npy(p, fn):
    array = np.load(p)
    np.save(p, fn(array), allow_pickle=False)


def _edit_docs(p, fn):
    lines = p.read_text(encoding="utf-8").splitlines()
    p.write_text("\n".join(fn(lines)) + "\n", encoding="utf-8")


def _title(lines, value):
    r = json.loads(lines[3])
    r["title"] = value
    return [*lines[:3], json.dumps(r), *lines[4:]]


DAMAGES = {
    **{f"flip {name}": (lambda d, n=name: _flip(d / n), name) for name in FILES},
    **{f"flip the last byte of {name}": (lambda d, n=name: _flip(d / n, where=1.0 - 1e-9), name) for name in FILES},
    **{f"truncate {name}": (lambda d, n=name: (d / n).write_bytes((d / n).read_bytes()[: (d / n).stat().st_size // 2]),
                           name) for name in FILES},
    **{f"delete {name}": (lambda d, n=name: (d / n).unlink(), name) for name in FILES},
    "swap the postings' and the forward impacts": (
        lambda d: _swap(d / "postings_impacts.npy", d / "forward_impacts.npy"), "impacts.npy"),
    "swap the postings' doc ids and the forward term ids": (
        lambda d: _swap(d / "postings_doc_idx.npy", d / "forward_term_ids.npy"), ".npy"),
    "swap doc_ids.json and docs.jsonl": (lambda d: _swap(d / "doc_ids.json", d / "docs.jsonl"), "doc"),
    "impacts as int8 (a valid header, same size)": (
        lambda d: _npy(d / "postings_impacts.npy", lambda a: a.view(np.int8)), "postings_impacts.npy"),
    "doc ids reshaped (a valid header, same size)": (
        lambda d: _npy(d / "postings_doc_idx.npy", lambda a: a.reshape(-1, 2) if len(a) % 2 == 0 else a[None, :]),
        "postings_doc_idx.npy"),
    "zeroed doc ids": (lambda d: _npy(d / "postings_doc_idx.npy", lambda a: np.where(
        np.arange(len(a)) % 7 == 3, 0, a).astype(a.dtype)), "postings_doc_idx.npy"),
    "shifted offsets": (lambda d: _npy(d / "postings_offsets.npy", lambda a: np.concatenate(
        [a[:1], np.minimum(a[1:-1] + 1, a[-1]), a[-1:]])), "postings_offsets.npy"),
    "a wrong block maximum": (lambda d: _npy(d / "blockmax_impacts.npy", lambda a: np.where(
        np.arange(len(a)) == len(a) // 2, a + 1, a).astype(a.dtype)), "blockmax_impacts.npy"),
    "an edited impact": (lambda d: _npy(d / "forward_impacts.npy", lambda a: np.where(
        np.arange(len(a)) == len(a) // 3, np.maximum(a, 2) - 1, a).astype(a.dtype)), "impacts.npy"),
    "a title that is an object": (lambda d: _edit_docs(d / "docs.jsonl", lambda ls: _title(ls, {"x": 1})),
                                  "docs.jsonl"),
    "an edited title": (lambda d: _edit_docs(d / "docs.jsonl", lambda ls: _title(ls, "an edited title")),
                        "docs.jsonl"),
    "a bad UTF-8 byte in docs.jsonl": (lambda d: (d / "docs.jsonl").write_bytes(
        (d / "docs.jsonl").read_bytes().replace(b'"title": "', b'"title": "\xff', 1)), "docs.jsonl"),
    "docs.jsonl without its last line": (lambda d: _edit_docs(d / "docs.jsonl", lambda ls: ls[:-1]), "docs.jsonl"),
    "a stray file in the folder": (lambda d: (d / "extra.npy").write_bytes(b"x"), "extra.npy"),
    "a 100k-deep meta.json": (lambda d: (d / "meta.json").write_text("[" * 100_000 + "]" * 100_000), "meta.json"),
}


def _swap(a, b):
    tmp = a.with_name("swap.tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damage_is_refused_naming_the_file(built, tmp_path, damage, verify):
    pristine, encoders, expected = built
    folder = tmp_path / "idx"
    shutil.copytree(pristine, folder)
    corrupt, name = DAMAGES[damage]
    corrupt(folder)
    try:
        service = SearchService(folder, verify_checksums=verify, **encoders)
    except IndexFormatError as e:
        message = str(e)
    else:  # it opened: then it must rank exactly as the pristine index, and full verification must refuse it
        for mode, hits in expected.items():
            assert service.search(query=QUERY, k=10, mode=mode) == hits, f"{damage}: wrong {mode} ranking"
        with pytest.raises(IndexFormatError) as info:
            verify_index(folder)
        message = str(info.value)
    assert "\n" not in message and name in message, message


def test_verify_command_is_one_line(cli, built, tmp_path):
    pristine, _, _ = built
    code, out, err = cli("index", "verify", pristine)
    assert code == 0 and "ok (" in out, err
    folder = tmp_path / "idx"
    shutil.copytree(pristine, folder)
    _flip(folder / "postings_impacts.npy")
    code, out, err = cli("index", "verify", folder)
    assert code == 2 and err.startswith("error: ") and "postings_impacts.npy" in err and err.count("\n") == 1, err


def test_serve_and_search_refuse_a_damaged_or_missing_index_in_one_line(cli, built, tmp_path):
    code, _, err = cli("serve", tmp_path / "nonexistent")
    assert code == 2 and err == f"error: {tmp_path / 'nonexistent'}: no such index folder\n", err
    pristine, _, _ = built
    folder = tmp_path / "idx"
    shutil.copytree(pristine, folder)
    (folder / "docs.jsonl").write_bytes(b"\xff\n")
    for args in (["serve", folder], ["search", folder, "cancer"]):
        code, _, err = cli(*args)
        assert code == 2 and err.startswith("error: ") and "docs.jsonl" in err and err.count("\n") == 1, err
