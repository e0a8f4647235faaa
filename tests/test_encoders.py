"""The model resolver and the SPLADE encoder on the bundled SPLADE-tiny."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lsr.encoders import registered_names, resolve_model
from lsr.index import LsrError
from lsr.kernels import HeadError, splade_head


def test_resolver_finds_bundled_models():
    spec = resolve_model("splade-tiny")
    assert spec.kind == "splade" and spec.source.endswith("model")
    assert resolve_model("minilm").kind == "dense"
    assert resolve_model("bm25").kind == "bm25"
    assert resolve_model(spec.source).kind == "splade"  # the same weights as a local folder
    assert resolve_model("naver/splade-v3").source == "naver/splade-v3"
    assert {"splade-tiny", "minilm", "bm25"} <= set(registered_names())
    with pytest.raises(LsrError, match="unknown model 'nope'"):
        resolve_model("nope")


def test_head_equals_activation_before_max():
    """max-before-activation is an identity: compare with log1p(relu(logits)) maxed over real tokens."""
    g = torch.Generator().manual_seed(0)
    hidden, weight, bias = torch.randn(3, 7, 16, generator=g), torch.randn(50, 16, generator=g), torch.randn(50, generator=g)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [0] * 7])
    naive = torch.log1p(torch.relu(hidden @ weight.T + bias)) * mask.unsqueeze(-1)
    expected = naive.max(dim=1).values
    got = splade_head(hidden, weight, bias, attention_mask=mask, backend="reference")
    torch.testing.assert_close(got, expected)
    assert torch.all(got[2] == 0)  # an all-padding row is the zero vector
    with pytest.raises(ValueError, match="unknown SPLADE head backend"):
        splade_head(hidden, weight, bias, attention_mask=mask, backend="cuda-magic")


def test_batched_length_sorted_encoding_equals_one_by_one(splade_tiny):
    texts = ["p53 mutations in cancer", "a", "Vitamin D deficiency is associated with increased risk of "
             "multiple sclerosis in adults living at high latitudes " * 3, "BRCA1", "  spaces  around "]
    together = splade_tiny.encode_documents(texts).to_scipy().toarray()
    alone = np.vstack([splade_tiny.encode_documents([t]).to_scipy().toarray() for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert together.shape == (5, 30522) and (together > 0).sum(axis=1).min() > 0


def test_encoder_vectors_are_meaningful(splade_tiny):
    vec = splade_tiny.encode_queries(["tumor suppressor protein"])
    terms, weights = vec.row(0)
    top = splade_tiny.tokenizer.convert_ids_to_tokens(terms[np.argsort(-weights)[:5]].tolist())
    assert "tumor" in top
    assert np.all(weights > 0)


def test_encoder_truncates_and_rejects_bad_input(splade_tiny):
    huge = "word " * 100_000
    assert len(splade_tiny.encode_documents([huge])) == 1
    assert len(splade_tiny.encode_queries([])) == 0
    with pytest.raises(LsrError, match="must be a string"):
        splade_tiny.encode_queries([123])  # type: ignore[list-item]


def test_shipped_inference_free_model_loads_offline():
    from lsr.encoders import load_sparse_encoder

    spec = resolve_model("lsr-ifree-tiny")
    assert spec.kind == "splade" and "lsr-ifree-tiny" in registered_names()
    encoder = load_sparse_encoder(spec, show_progress=False)
    assert encoder.inference_free and encoder.max_length == 512
    terms, weights = encoder.encode_queries(["the tumor suppressor p53"]).row(0)
    tokens = set(encoder.tokenizer.convert_ids_to_tokens(terms.tolist()))
    assert {"tumor", "suppress"} <= tokens and tokens <= {"the", "tumor", "suppress", "##or", "p", "##53"}
    assert np.all(weights > 0)
    doc_terms, _ = encoder.encode_documents(["The tumor suppressor p53 is mutated in most cancers."]).row(0)
    assert len(doc_terms) > len(terms)  # documents are expanded by the network; queries are not


def test_shipped_echo_model_loads_offline():
    from lsr.encoders import load_sparse_encoder

    spec = resolve_model("lsr-echo-tiny")
    assert spec.kind == "echo"
    encoder = load_sparse_encoder(spec, show_progress=False, device="cpu")
    assert encoder.echo and encoder.has_vocab_bias and encoder.max_length == 256
    terms, weights = encoder.encode_queries(["tumor suppressor protein"]).row(0)
    assert 0 < len(terms) < 200 and np.all(weights > 0)
    assert "tumor" in encoder.tokenizer.convert_ids_to_tokens(terms[np.argsort(-weights)[:10]].tolist())


def test_inference_free_model_saves_what_it_loaded(tmp_path):
    """save writes back the IDF table (and lsr_encoder.json) it loaded: the saved folder is the same encoder."""
    from lsr.encoders import IDF_FILE, SpladeEncoder, load_sparse_encoder

    encoder = load_sparse_encoder(resolve_model("lsr-ifree-tiny"), show_progress=False)
    encoder.save(tmp_path)
    assert (tmp_path / IDF_FILE).is_file()
    reloaded = SpladeEncoder(str(tmp_path), show_progress=False)
    assert reloaded.inference_free and reloaded.max_length == encoder.max_length == 512
    queries = ["the tumor suppressor p53", "vitamin D and multiple sclerosis", "a", ""]
    before, after = encoder.encode_queries(queries), reloaded.encode_queries(queries)
    np.testing.assert_array_equal(after.to_scipy().toarray(), before.to_scipy().toarray())
    assert before.to_scipy().nnz > 0
    docs = ["The tumor suppressor p53 is mutated in most cancers."]
    np.testing.assert_array_equal(reloaded.encode_documents(docs).to_scipy().toarray(),
                                  encoder.encode_documents(docs).to_scipy().toarray())


def test_unknown_head_backend_is_refused_before_the_model_loads(tmp_path):
    from lsr.encoders import EchoSpladeEncoder, SpladeEncoder

    for cls in (SpladeEncoder, EchoSpladeEncoder):
        with pytest.raises(HeadError, match="choose from auto, reference, torch, triton"):
            cls(str(tmp_path / "no-model-here"), head="bogus")


def test_vectors_cross_to_the_host_as_their_nonzeros_only():
    """lsr.encoders.device.to_host_csr equals scipy's conversion of the dense array (what encoding did before),
    zero rows, -0.0 and a row with every column set included."""
    import scipy.sparse as sp

    from lsr.encoders.device import to_host_csr

    g = torch.Generator().manual_seed(0)
    weights = torch.relu(torch.randn(6, 50, generator=g))
    weights[2] = 0.0
    weights[3, :5] = -0.0
    weights[4] = torch.rand(50, generator=g) + 0.1
    got, want = to_host_csr(weights), sp.csr_matrix(weights.numpy())
    assert got.dtype == np.float32 and got.shape == want.shape and got.has_sorted_indices
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)
    assert to_host_csr(torch.zeros(0, 7)).shape == (0, 7)


def test_batches_stay_put_on_the_cpu():
    from lsr.encoders.device import to_device

    batch = torch.ones(2, 3)
    moved = to_device(batch, torch.device("cpu"))
    assert moved is batch and not moved.is_pinned()  # pinned memory only for a CUDA target


@pytest.mark.parametrize("name,message", [
    ("gpu", "unknown device 'gpu': use auto, cpu, cuda or cuda:N"),
    ("cuda:", "unknown device 'cuda:'"),
    ("CPU", "unknown device 'CPU'"),
    (3, "unknown device 3"),
])
def test_bad_device_names_are_one_line_errors(name, message):
    from lsr.encoders.device import resolve_device

    with pytest.raises(LsrError) as info:
        resolve_device(name)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) == resolve_device("auto")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
