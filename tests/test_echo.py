"""Echo SPLADE (lsr.encoders.echo) on tiny random Mistral, Llama and Qwen2 models with the bundled WordPiece
tokenizer: pooling checked by hand, padding invariance, LoRA gradients, merge and save/load round trips."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lsr.encoders import resolve_model
from lsr.encoders.echo import DEFAULT_TEMPLATE, EchoSpladeEncoder
from lsr.index import LsrError, SparseBatch

ARCHS = ("mistral", "llama", "qwen2")
TEXTS = ["sparse retrieval", "a much longer text about learned sparse retrieval with decoder models",
         "x", "echo embeddings repeat the text twice"]


def _tokenizer(arch: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model("splade-tiny").source)
    if arch in ("mistral", "llama"):  # decoders with a BOS token; qwen2 has none
        tok.bos_token = "[CLS]"
    if arch == "llama":  # no pad token: padding falls back to EOS
        tok.eos_token = "[SEP]"
        tok.pad_token = None
    return tok


def _model(arch: str, vocab_size: int, tie: bool):
    import transformers

    config_cls, model_cls = {"mistral": ("MistralConfig", "MistralForCausalLM"),
                             "llama": ("LlamaConfig", "LlamaForCausalLM"),
                             "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}[arch]
    config = getattr(transformers, config_cls)(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=256, tie_word_embeddings=tie)
    torch.manual_seed(0)
    return getattr(transformers, model_cls)(config).eval()


def _make(arch: str, tie: bool | None = None, **options):
    """(encoder, untouched full copy of its model with the lm_head, tokenizer); qwen2 ties its head by default."""
    tok = _tokenizer(arch)
    model = _model(arch, len(tok), arch == "qwen2" if tie is None else tie)
    reference = copy.deepcopy(model)
    options = {"max_length": 64, "show_progress": False, "device": "cpu", **options}
    return EchoSpladeEncoder.from_model(model, tok, **options), reference, tok


def _dense(batch: SparseBatch) -> np.ndarray:
    return batch.to_scipy().toarray()


def _by_hand(reference, ids: list[int], pooled: slice) -> np.ndarray:
    with torch.no_grad():
        logits = reference(input_ids=torch.tensor([ids])).logits[0]  # full model, lm_head included
    return torch.log1p(torch.relu(logits[pooled])).max(dim=0).values.numpy()


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("arch", ARCHS)
def test_echo_pools_exactly_the_second_copy(arch):
    enc, reference, tok = _make(arch)
    text = TEXTS[1]
    text_ids = _ids(tok, text)
    bos = [] if tok.bos_token_id is None else [tok.bos_token_id]
    ids = bos + _ids(tok, DEFAULT_TEMPLATE["prefix"]) + text_ids + _ids(tok, DEFAULT_TEMPLATE["separator"]) + text_ids
    expected = _by_hand(reference, ids, slice(len(ids) - len(text_ids), len(ids)))
    got = _dense(enc.encode([text]))[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    everything = _by_hand(reference, ids, slice(0, len(ids)))
    assert not np.allclose(got, everything, atol=1e-3)  # the pooling mask matters

    batch = enc.tokenize([text])
    assert batch["input_ids"][0].tolist() == ids
    assert batch["pool_mask"][0].tolist() == [0] * (len(ids) - len(text_ids)) + [1] * len(text_ids)


@pytest.mark.parametrize("arch", ARCHS)
def test_no_echo_pools_the_single_copy(arch):
    enc, reference, tok = _make(arch, echo=False)
    text = TEXTS[3]
    bos = [] if tok.bos_token_id is None else [tok.bos_token_id]
    ids = bos + _ids(tok, text)
    expected = _by_hand(reference, ids, slice(len(bos), len(ids)))
    np.testing.assert_allclose(_dense(enc.encode([text]))[0], expected, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_equals_one_by_one_and_padding_side_does_not_matter(arch):
    enc, _, tok = _make(arch, batch_size=3)
    one_by_one = np.vstack([_dense(enc.encode([t])) for t in TEXTS])
    tok.padding_side = "right"
    right = _dense(enc.encode(TEXTS))
    tok.padding_side = "left"
    left = _dense(enc.encode(TEXTS))
    padded = enc.tokenize(TEXTS[:3])
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    assert padded["attention_mask"][2, 0] == 0 and padded["input_ids"][2, 0] == pad_id  # "x" is left padded
    assert padded["position_ids"][2, -1] == padded["attention_mask"][2].sum() - 1
    np.testing.assert_allclose(right, one_by_one, atol=1e-5)
    np.testing.assert_allclose(left, one_by_one, atol=1e-5)
    assert (one_by_one > 0).sum(axis=1).min() > 0


def _randomise_lora_b(enc) -> None:
    """peft initialises lora_B to zero (adapter = identity); make the adapters do something."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in enc.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_lora_only_when_lora_is_on(arch):
    enc, _, _ = _make(arch, lora={"r": 4})
    _randomise_lora_b(enc)
    enc.forward(**enc.tokenize(TEXTS)).sum().backward()
    named = dict(enc.model.named_parameters())
    lora = {n: p for n, p in named.items() if "lora_" in n}
    assert len(lora) == 2 * 4 * 2  # layers x (q, k, v, o) x (A, B)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())
    assert all(p.grad is None and not p.requires_grad for n, p in named.items() if "lora_" not in n)
    assert enc.head_module.weight.grad is None

    enc, _, _ = _make(arch)
    enc.forward(**enc.tokenize(TEXTS)).sum().backward()
    params = [*enc.model.parameters(), enc.head_module.weight]
    assert all(p.grad is not None for p in params)
    assert enc.head_module.weight.grad.abs().sum() > 0
    q_proj = next(p for n, p in enc.model.named_parameters() if "q_proj.weight" in n)
    assert q_proj.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_and_merge_keep_vectors(arch, tmp_path):
    enc, _, _ = _make(arch, lora={"r": 4})
    _randomise_lora_b(enc)
    before = _dense(enc.encode(TEXTS))
    enc.save(tmp_path / "adapters")  # adapters folded into the saved weights, the live model untouched
    assert enc.lora is not None
    loaded = EchoSpladeEncoder(str(tmp_path / "adapters"), max_length=64, show_progress=False, device="cpu")
    np.testing.assert_allclose(_dense(loaded.encode(TEXTS)), before, atol=1e-5)

    enc.merge_lora()
    np.testing.assert_allclose(_dense(enc.encode(TEXTS)), before, atol=1e-5)
    enc.save(tmp_path / "merged")
    loaded = EchoSpladeEncoder(str(tmp_path / "merged"), max_length=64, show_progress=False, device="cpu")
    np.testing.assert_allclose(_dense(loaded.encode(TEXTS)), before, atol=1e-5)


def test_folder_restores_echo_settings(tmp_path):
    template = {"prefix": "Document:", "separator": "Once more:"}
    enc, _, _ = _make("qwen2", echo=False, template=template)
    enc.save(tmp_path)
    loaded = EchoSpladeEncoder(str(tmp_path), max_length=64, show_progress=False, device="cpu")
    assert loaded.echo is False and loaded.template == template
    np.testing.assert_allclose(_dense(loaded.encode(TEXTS)), _dense(enc.encode(TEXTS)), atol=1e-5)
    assert EchoSpladeEncoder(str(tmp_path), max_length=64, show_progress=False, device="cpu", echo=True).echo


def test_folder_saved_with_detached_head(tmp_path):
    # no lsr_echo.json here, so AutoTokenizer decides: it would give a qwen2 model a Qwen2Tokenizer
    enc, _, tok = _make("mistral", tie=True)  # tied head: the embeddings restore it
    enc.model.save_pretrained(tmp_path / "tied")
    tok.save_pretrained(tmp_path / "tied")
    loaded = EchoSpladeEncoder(str(tmp_path / "tied"), max_length=64, show_progress=False, device="cpu")
    np.testing.assert_allclose(_dense(loaded.encode(TEXTS)), _dense(enc.encode(TEXTS)), atol=1e-5)

    enc, _, tok = _make("mistral")  # untied head lost: refuse rather than load a random projection
    enc.model.save_pretrained(tmp_path / "untied")
    tok.save_pretrained(tmp_path / "untied")
    with pytest.raises(LsrError, match="lm_head"):
        EchoSpladeEncoder(str(tmp_path / "untied"), show_progress=False, device="cpu")


def test_bad_input():
    enc, _, _ = _make("llama")
    for bad in ([1, 2], ["ok", None], [b"bytes"]):
        with pytest.raises(LsrError):
            enc.encode(bad)
    empty = enc.encode([])
    assert isinstance(empty, SparseBatch) and len(empty) == 0 and empty.vocab_size == enc.vocab_size
    assert enc.encode_queries(["", "a"]).row_nnz()[0] == 0  # an empty text is an empty row, not an error
    assert enc.tokenize(["word " * 500])["input_ids"].shape[1] <= enc.max_length  # both copies truncated to fit
    assert not enc.inference_free and enc.query_encoder is None
    with pytest.raises(LsrError):
        _make("llama", max_length=8)  # the template alone does not leave room for two copies


def test_vocab_bias_is_applied_and_round_trips(tmp_path):
    enc, reference, tok = _make("mistral", tie=True)
    plain = _dense(enc.encode_documents(TEXTS))
    bias = torch.full((len(tok),), -0.05)
    biased, _, _ = _make("mistral", tie=True, vocab_bias=bias)
    with_bias = _dense(biased.encode_documents(TEXTS))
    # log1p(relu(max + b)) with b constant: exactly the logits shifted before the activation
    expected = np.log1p(np.maximum(np.expm1(plain) - 0.05, 0)) * (plain > 0)
    np.testing.assert_allclose(with_bias, expected, atol=1e-5)
    biased.save(tmp_path)
    again = EchoSpladeEncoder(str(tmp_path), max_length=64, show_progress=False, device="cpu")
    assert again.has_vocab_bias
    np.testing.assert_allclose(_dense(again.encode_documents(TEXTS)), with_bias, atol=1e-5)


def test_decoder_built_from_splade_tiny_is_an_echo_model(tmp_path):
    from lsr.training.decoder_init import build_decoder

    folder = build_decoder("splade-tiny", tmp_path / "decoder", layers=1, intermediate=64)
    spec = resolve_model(str(folder))
    assert spec.kind == "echo"
    enc = EchoSpladeEncoder(str(folder), max_length=64, show_progress=False, device="cpu")
    from transformers import AutoModelForMaskedLM

    donor = AutoModelForMaskedLM.from_pretrained(resolve_model("splade-tiny").source)
    torch.testing.assert_close(enc.head_module.weight, donor.get_input_embeddings().weight)  # tied, copied
    nnz = enc.encode_documents(TEXTS).row_nnz()
    assert 0 < nnz.min() and nnz.max() < 2000  # the -4.5 bias keeps vectors sparse from the start
