"""Published model layouts through lsr: folders that sentence-transformers itself saves (SparseEncoder with
SpladePooling, the inference-free router), OpenSearch's idf.json beside an MLM, and `lsr model export`;
lsr's vectors must equal sentence-transformers' on the same folder. Tiny random-weight models (no downloads)
plus the bundled SPLADE-tiny."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lsr.encoders import SpladeEncoder, resolve_model
from lsr.index import LsrError

TOL = 1e-5  # max |lsr - sentence-transformers| per weight
DOCS = ["Microbial communities in the gut shape the immune response of the host.",
        "A randomized trial of vitamin D supplementation on bone density in older adults, with a much longer "
        "abstract that runs on and on about methods, cohorts, dosing schedules and the statistics used.",
        "0-dimensional biomaterials show inductive properties.", "short", "CRISPR gene editing in T cells"]
QUERIES = ["gut microbiome immunity", "vitamin D bones", "biomaterials", "what is CRISPR?"]


def one_error_line(err: str) -> str:
    """The CLI's stderr holds one error line (progress bars of model loading aside) and no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _dense(batch) -> np.ndarray:
    return batch.to_scipy().toarray()


def _st_dense(tensor) -> np.ndarray:
    return (tensor.to_dense() if tensor.is_sparse else tensor).cpu().numpy()


def assert_equal_to_st(folder, docs=DOCS, queries=QUERIES, **options) -> dict:
    """lsr and sentence-transformers encode the same texts from `folder`; returns the max |diff| per side."""
    from sentence_transformers import SparseEncoder

    st = SparseEncoder(str(folder), device="cpu")
    ours = SpladeEncoder(str(folder), show_progress=False, device="cpu", **options)
    diffs = {}
    for side, texts, theirs, mine in (("document", docs, st.encode_document, ours.encode_documents),
                                      ("query", queries, st.encode_query, ours.encode_queries)):
        ref = _st_dense(theirs(texts, convert_to_tensor=True, batch_size=3))
        got = _dense(mine(texts))
        assert ref.shape == got.shape
        diffs[side] = float(np.abs(ref - got).max())
        assert diffs[side] <= TOL, (folder, side, diffs[side])
        assert ((ref > 0) == (got > 0)).all() or diffs[side] <= TOL  # same support up to the tolerance
        assert (got > 0).sum() > 0
    return diffs


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("splade-tiny").source)


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory, tokenizer):
    """A random-weight 1-layer BERT masked LM on SPLADE-tiny's vocabulary (seeded)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    folder = tmp_path_factory.mktemp("mlm") / "tiny"
    BertForMaskedLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _st_splade(mlm, out, *, pooling="max", activation="relu", prompts=None, **transformer):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    model = SparseEncoder(modules=[Transformer(str(mlm), transformer_task="fill-mask", **transformer),
                                   SpladePooling(pooling, activation)], prompts=prompts, device="cpu")
    model.save(str(out))
    return out


def _st_router(mlm, out, weight, *, tokenizer=None, max_seq_length=None):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling
    from transformers import AutoTokenizer

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(mlm))
    document = [Transformer(str(mlm), transformer_task="fill-mask", max_seq_length=max_seq_length),
                SpladePooling("max")]
    query = [SparseStaticEmbedding(tokenizer, weight=weight, frozen=True)]
    SparseEncoder(modules=[Router.for_query_document(query, document)], device="cpu").save(str(out))
    return out


@pytest.mark.parametrize("pooling, activation", [("max", "relu"), ("sum", "relu"), ("max", "log1p_relu"),
                                                 ("sum", "log1p_relu")])
def test_sparse_encoder_poolings_and_activations(tiny_mlm, tmp_path, pooling, activation):
    folder = _st_splade(tiny_mlm, tmp_path / "st", pooling=pooling, activation=activation)
    assert json.loads((folder / "1_SpladePooling" / "config.json").read_text())["activation_function"] == activation
    assert_equal_to_st(folder)
    ours = SpladeEncoder(str(folder), show_progress=False)
    assert (ours.pooling, ours.activation) == (pooling, activation)


def test_sparse_encoder_prompts_and_lengths(tiny_mlm, tmp_path):
    folder = _st_splade(tiny_mlm, tmp_path / "st", prompts={"query": "query: ", "document": "passage: "},
                        max_seq_length=24, query_length=8)
    ours = SpladeEncoder(str(folder), show_progress=False)
    assert ours.prompts == {"query": "query: ", "document": "passage: "}
    assert (ours.max_length, ours.query_max_length) == (24, 8)
    assert_equal_to_st(folder)
    # the prompt is really used: without it the document vectors differ
    plain = _st_splade(tiny_mlm, tmp_path / "plain", max_seq_length=24)
    assert np.abs(_dense(SpladeEncoder(str(plain), show_progress=False).encode_documents(DOCS[:2]))
                  - _dense(ours.encode_documents(DOCS[:2]))).max() > 1e-3


def test_router_inference_free(tiny_mlm, tmp_path, tokenizer):
    torch.manual_seed(1)
    weight = torch.rand(len(tokenizer)) * 4
    folder = _st_router(tiny_mlm, tmp_path / "router", weight, max_seq_length=32)
    ours = SpladeEncoder(str(folder), show_progress=False)
    assert ours.inference_free and ours.layout.layout == "st-router" and ours.max_length == 32
    assert_equal_to_st(folder)
    # the query side is the table, not the network
    q = ours.encode_queries(["gut microbiome"])
    ids = tokenizer("gut microbiome", add_special_tokens=False)["input_ids"]
    np.testing.assert_allclose(_dense(q)[0, ids], weight.numpy()[ids], rtol=1e-6)


def test_router_with_differing_vocabularies_is_one_line(tiny_mlm, tmp_path, cli):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(str(tiny_mlm))
    other.add_tokens(["zzzlsrtoken"])
    folder = _st_router(tiny_mlm, tmp_path / "router", torch.ones(len(other)), tokenizer=other)
    with pytest.raises(LsrError, match="vocabulary .* differs"):
        SpladeEncoder(str(folder), show_progress=False)
    code, _, err = cli("model", "export", folder, "--out", tmp_path / "x")
    assert code == 2 and "differs" in one_error_line(err)


def test_opensearch_idf_json_layout(tiny_mlm, tmp_path, tokenizer):
    """OpenSearch doc-v*: idf.json keyed by token strings beside the MLM; queries: the table (as
    sentence-transformers' SparseStaticEmbedding.from_json reads it), documents: special tokens zeroed."""
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

    folder = tmp_path / "opensearch"
    shutil.copytree(tiny_mlm, folder)
    rng = np.random.default_rng(0)
    vocab = tokenizer.get_vocab()
    table = {tok: float(rng.uniform(0.1, 5)) for tok in list(vocab)[:20000] if tok not in tokenizer.all_special_tokens}
    (folder / "idf.json").write_text(json.dumps(table))
    ours = SpladeEncoder(str(folder), show_progress=False)
    assert ours.layout.layout == "opensearch-ifree" and ours.layout.drop_special_tokens
    static = SparseStaticEmbedding.from_json(str(folder / "idf.json"), tokenizer=tokenizer, frozen=True)
    features = static.preprocess(QUERIES)
    ref = static(features)["sentence_embedding"].detach().numpy()
    np.testing.assert_allclose(_dense(ours.encode_queries(QUERIES)), ref, rtol=1e-6)
    docs = _dense(ours.encode_documents(DOCS))
    assert (docs[:, tokenizer.all_special_ids] == 0).all() and (docs > 0).sum() > 0
    plain = SpladeEncoder(str(tiny_mlm), show_progress=False)  # the same MLM without the table
    keep = np.setdiff1d(np.arange(docs.shape[1]), tokenizer.all_special_ids)
    np.testing.assert_allclose(docs[:, keep], _dense(plain.encode_documents(DOCS))[:, keep], atol=1e-6)


def test_folder_in_no_known_layout_is_one_line(tmp_path, cli):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "pytorch_model.bin").write_bytes(b"")
    code, _, err = cli("model", "export", tmp_path / "weights", "--out", tmp_path / "x")
    assert code == 2 and "expected config.json" in one_error_line(err) and "modules.json" in err


def test_splade_tiny_as_sentence_transformers_layouts(tmp_path, tokenizer, data_dir):
    """The issue's figure: SPLADE-tiny saved by sentence-transformers as a SparseEncoder, and an inference-free
    router built from it, encode through lsr within 1e-5 of encode_document / encode_query."""
    from lsr.eval.beir import load_beir

    ds = load_beir("scifact", "test", data_dir, limit=16)
    docs, queries = [d.contents for d in ds.corpus.values()], list(ds.queries.values())[:16]
    tiny = resolve_model("splade-tiny").source
    splade = _st_splade(tiny, tmp_path / "splade-tiny-st")
    idf = torch.from_numpy(SpladeEncoder(resolve_model("lsr-ifree-tiny").source, show_progress=False)
                           .query_encoder.idf.copy())
    router = _st_router(tiny, tmp_path / "splade-tiny-router", idf)
    measured = {"SparseEncoder": assert_equal_to_st(splade, docs, queries),
                "router": assert_equal_to_st(router, docs, queries)}
    print(f"\nmax |lsr - sentence-transformers| over {len(docs)} scifact documents, {len(queries)} queries: "
          f"{json.dumps(measured)}")


# -- lsr model export -----------------------------------------------------------------------------------

def test_export_inference_free_round_trip(tmp_path, cli):
    out = tmp_path / "exported"
    code, stdout, err = cli("model", "export", "lsr-ifree-tiny", "--format", "sentence-transformers", "--out", out)
    assert code == 0, err
    assert json.loads((out / "router_config.json").read_text())["structure"]["query"] == ["query_0_SparseStaticEmbedding"]
    card = (out / "README.md").read_text()
    assert "lsr train --config training/configs/lsr-ifree-tiny.toml" in card and "0.3034" in card
    assert "library_name: sentence-transformers" in card
    diffs = assert_equal_to_st(out)  # SparseEncoder(out) encodes as lsr-ifree-tiny does in lsr
    original = SpladeEncoder(resolve_model("lsr-ifree-tiny").source, show_progress=False)
    np.testing.assert_allclose(_dense(SpladeEncoder(str(out), show_progress=False).encode_documents(DOCS)),
                               _dense(original.encode_documents(DOCS)), atol=1e-6)
    assert diffs["query"] == 0.0


def test_export_siamese_round_trip(tiny_mlm, tmp_path, cli):
    out = tmp_path / "exported"
    code, _, err = cli("model", "export", tiny_mlm, "--out", out)
    assert code == 0, err
    assert not (out / "router_config.json").exists() and (out / "modules.json").is_file()
    assert "No training record" in (out / "README.md").read_text()
    assert_equal_to_st(out)
    np.testing.assert_allclose(_dense(SpladeEncoder(str(out), show_progress=False).encode_queries(QUERIES)),
                               _dense(SpladeEncoder(str(tiny_mlm), show_progress=False).encode_queries(QUERIES)),
                               atol=1e-6)


def test_export_never_replaces_what_it_should_not(tiny_mlm, tmp_path, cli):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = cli("model", "export", tiny_mlm, "--out", mine)
    assert code == 2 and "not empty" in one_error_line(err)
    code, _, err = cli("model", "export", tiny_mlm, "--out", mine, "--overwrite")
    assert code == 2 and "not a sentence-transformers model folder" in err
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    out = tmp_path / "st"
    assert cli("model", "export", tiny_mlm, "--out", out)[0] == 0
    assert cli("model", "export", tiny_mlm, "--out", out)[0] == 2  # exists: refused without --overwrite
    (out / "stale.txt").write_text("old export")
    code, _, err = cli("model", "export", tiny_mlm, "--out", out, "--overwrite")
    assert code == 0, err
    assert not (out / "stale.txt").exists() and (out / "modules.json").is_file()
    code, _, err = cli("model", "export", "bm25", "--out", tmp_path / "bm25")
    assert code == 2 and "only SPLADE" in err and not (tmp_path / "bm25").exists()


def test_hub_id_of_a_sentence_transformers_repo_resolves_through_the_cache(tiny_mlm, tmp_path, tokenizer):
    """`--model OWNER/NAME` of a SparseEncoder repo: its snapshot from the Hugging Face cache (laid out here as
    huggingface_hub lays it out; HF_HUB_OFFLINE, so nothing is fetched), read as the folder it is."""
    import os
    import subprocess
    import sys

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--lsr-test--tiny-router"
    _st_router(tiny_mlm, repo / "snapshots" / commit, torch.rand(len(tokenizer)) * 3)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = ("from lsr.encoders import resolve_model, load_sparse_encoder\n"
              "spec = resolve_model('lsr-test/tiny-router')\n"
              "enc = load_sparse_encoder(spec, show_progress=False)\n"
              "print(spec.kind, enc.layout.layout, enc.encode_queries(['gut microbiome']).nnz)")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    kind, layout, nnz = done.stdout.split()
    assert (kind, layout) == ("splade", "st-router") and int(nnz) == len(set(tokenizer("gut microbiome",
                                                                              add_special_tokens=False)["input_ids"]))
