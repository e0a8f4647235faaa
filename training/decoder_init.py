"""A small decoder-only LM that can be trained here: no pretrained decoder weights can be downloaded, so the
Echo SPLADE student (lsr-echo-tiny) starts from a Mistral-, Llama- or Qwen2-architecture model that shares a
masked-LM SPLADE model's WordPiece vocabulary, with its input embeddings (and the tied `lm_head`) copied from
that model and fresh transformer layers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from lsr.index import LsrError

ARCHITECTURES = ("mistral", "llama", "qwen2")


def build_decoder(embeddings_from: str, out: str | Path, *, architecture: str = "mistral", layers: int = 2,
                  heads: int = 4, kv_heads: int = 2, intermediate: int = 512, vocab_bias: float = -4.5,
                  seed: int = 0) -> Path:
    """Write a causal-LM checkpoint (weights, config, tokenizer, a constant vocabulary bias) to `out`.

    Without a bias nearly every logit h . E_v is positive (BERT embeddings share a common direction), so
    every vector would hold all 30,522 terms; a constant bias of -4.5 starts documents at a few hundred
    nonzeros (lsr.encoders.echo.VOCAB_BIAS_FILE; the bias is trained with the rest)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, LlamaConfig, MistralConfig
    from transformers import Qwen2Config

    from safetensors.torch import save_file

    from lsr.encoders import resolve_model
    from lsr.encoders.echo import VOCAB_BIAS_FILE

    if architecture not in ARCHITECTURES:
        raise LsrError(f"unknown decoder architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}")
    source = resolve_model(embeddings_from).source
    tokenizer = AutoTokenizer.from_pretrained(source)
    donor = AutoModelForMaskedLM.from_pretrained(source)
    embeddings = donor.get_input_embeddings().weight.detach()
    vocab, hidden = embeddings.shape
    if hidden % heads or heads % kv_heads:
        raise LsrError(f"hidden size {hidden} must split into {heads} heads, and heads into {kv_heads} groups")
    config_cls = {"mistral": MistralConfig, "llama": LlamaConfig, "qwen2": Qwen2Config}[architecture]
    config = config_cls(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                        max_position_embeddings=2048, tie_word_embeddings=True,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                        eos_token_id=tokenizer.sep_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(embeddings)
    model.tie_weights()
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_file({"bias": torch.full((vocab,), float(vocab_bias))}, out / VOCAB_BIAS_FILE)
    return out
