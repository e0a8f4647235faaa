"""Echo SPLADE for decoder-only language models (Mistral-SPLADE, 2024): Mistral, Llama, Qwen2, any causal LM.

A causal LM's token t sees only tokens <= t, so SPLADE max-pooling over a single pass would give early tokens
a view of the text's beginning only. Echo feeds the text twice and pools only the second copy, whose every
token has attended to the whole text once.

Template (`template={"prefix": ..., "separator": ...}`, token ids built here, never by the tokenizer's chat
or special-token logic)::

    echo=True:   [bos]  prefix  copy  separator  copy      pooled: the second `copy` only
    echo=False:  [bos]  copy                               pooled: `copy` (the ablation baseline)

`copy` is the text tokenised once without special tokens and truncated so the whole sequence fits in
`max_length` (about max_length // 2 tokens each with echo); `[bos]` is present when the tokenizer defines a
BOS token (Mistral, Llama; Qwen2 has none). The default template is the one of Echo embeddings
(Springer et al., 2024): "Rewrite the passage: <text> Rewritten passage: <text>".

Masks: `attention_mask` covers every real token (BOS, template, both copies); `pool_mask` covers only the
pooled copy, so BOS, template, separator, the first copy and padding never contribute a weight.

Padding: the batch is built here with the tokenizer's `padding_side` (pad id = pad_token_id, else
eos_token_id, else 0), and explicit `position_ids = clamp(cumsum(attention_mask) - 1, 0)` are passed, so left
padding neither shifts rotary positions nor changes the vectors: left and right padding agree.

The vocabulary projection (`lm_head`) is detached (lsr.encoders.base.detach_output_head): the network
returns final normed hidden states and lsr.kernels.splade_head does projection, log1p(relu) and the masked
max without (B, T, V) logits. Optional LoRA (peft) trains adapters on the attention projections only;
`merge_lora()` folds them into the base weights. `save(folder)` writes the merged weights with the lm_head put
back, the tokenizer, and `lsr_encoder.json` ({"max_length", "echo", "template", "tokenizer_class"}) that
loading restores.
Training code must build batches with `tokenize(texts)` and call `forward(**batch)`: a plain tokenizer
batch has no echo and no pooling mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lsr.index import LsrError, SparseBatch
from lsr.kernels import check_backend, splade_head

from .base import (DEFAULT_MAX_LENGTH, check_sizes, checked_texts, detach_output_head, encode_sorted,
                   final_hidden_states, length_batches, read_encoder_settings, write_encoder_settings)
from .device import resolve_device, to_device

# A learned vocabulary bias for the head (SPLADE's MLM decoder has one; decoder lm_heads do not): kept beside
# the Hugging Face weights so the checkpoint stays a plain causal LM. Absent for hub models: no bias.
VOCAB_BIAS_FILE = "splade_vocab_bias.safetensors"
DEFAULT_TEMPLATE = {"prefix": "Rewrite the passage:", "separator": "Rewritten passage:"}
LORA_DEFAULTS = {"r": 16, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def _head_name(model: torch.nn.Module) -> str:
    head = model.get_output_embeddings()
    return next((name for name, module in model.named_modules() if module is head), "lm_head")


class EchoSpladeEncoder:
    """Echo SPLADE vectors from a causal LM; satisfies lsr.index's QueryEncoder and DocumentEncoder."""

    query_encoder = None  # always the network on both sides

    def __init__(self, source: str, *, max_length: int | None = None, batch_size: int = 32, head: str = "auto",
                 device: str | None = None, show_progress: bool = True, echo: bool | None = None,
                 template: dict[str, str] | None = None, lora: dict[str, Any] | None = None) -> None:
        """Load a checkpoint (hub id or folder). echo/template None: the folder's lsr_encoder.json, else echo on
        with DEFAULT_TEMPLATE."""
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_backend(head)  # before a large model is loaded
        resolve_device(device)  # a bad or unavailable device too
        saved = read_encoder_settings(source)
        if max_length is None:
            max_length = int(saved.get("max_length", DEFAULT_MAX_LENGTH))
        # the class recorded by save(): AutoTokenizer picks by model type for some models (Qwen2)
        tokenizer_cls = getattr(transformers, saved.get("tokenizer_class", ""), None) or AutoTokenizer
        try:
            tokenizer = tokenizer_cls.from_pretrained(source)
            model, info = AutoModelForCausalLM.from_pretrained(source, output_loading_info=True)
        except OSError as e:
            raise LsrError(f"cannot load model {source!r}: {str(e).splitlines()[0]}") from e
        head_key = f"{_head_name(model)}.weight"
        if head_key in info.get("missing_keys", ()) and not model.config.get_text_config().tie_word_embeddings:
            raise LsrError(f"{source}: checkpoint has no {head_key} (saved with the head detached?); "
                           "save encoders with EchoSpladeEncoder.save")
        vocab_bias = None
        if (Path(source) / VOCAB_BIAS_FILE).is_file():
            from safetensors.torch import load_file

            vocab_bias = load_file(Path(source) / VOCAB_BIAS_FILE)["bias"]
        self._setup(model, tokenizer, max_length=max_length, batch_size=batch_size, head=head, device=device,
                    show_progress=show_progress, echo=saved.get("echo", True) if echo is None else echo,
                    template=template or saved.get("template"), lora=lora, vocab_bias=vocab_bias)

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: Any, *, max_length: int = 256, batch_size: int = 32,
                   head: str = "auto", device: str | None = None, show_progress: bool = True,
                   echo: bool = True, template: dict[str, str] | None = None,
                   lora: dict[str, Any] | None = None, vocab_bias: torch.Tensor | None = None) -> EchoSpladeEncoder:
        """Wrap an already built causal LM (its lm_head is detached in place)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, max_length=max_length, batch_size=batch_size, head=head, device=device,
                    show_progress=show_progress, echo=echo, template=template, lora=lora, vocab_bias=vocab_bias)
        return self

    def _setup(self, model, tokenizer, *, max_length, batch_size, head, device, show_progress, echo, template,
               lora, vocab_bias=None) -> None:
        check_sizes(batch_size=batch_size)  # max_length: checked against the template below
        check_backend(head)  # lsr.kernels.HeadError for an unknown backend
        self.tokenizer = tokenizer
        self.echo = bool(echo)
        self.template = {**DEFAULT_TEMPLATE, **(template or {})}
        self.max_length = max_length
        self.batch_size = batch_size
        self.head = head
        self.show_progress = show_progress
        self.device = resolve_device(device)

        self._bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self._prefix = tokenizer(self.template["prefix"], add_special_tokens=False)["input_ids"] if echo else []
        self._separator = tokenizer(self.template["separator"], add_special_tokens=False)["input_ids"] if echo else []
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = 0 if pad is None else int(pad)
        fixed = len(self._bos) + len(self._prefix) + len(self._separator)
        self._copy_length = (max_length - fixed) // (2 if echo else 1)
        if self._copy_length < 1:
            raise LsrError(f"max_length {max_length} leaves no room for the text (template takes {fixed} tokens)")

        self._head_key = f"{_head_name(model)}.weight"
        self.head_module = detach_output_head(model)  # before peft wraps the model
        self.vocab_size = int(self.head_module.weight.shape[0])
        self.has_vocab_bias = vocab_bias is not None
        if vocab_bias is not None:
            if self.head_module.bias is not None or tuple(vocab_bias.shape) != (self.vocab_size,):
                raise LsrError(f"vocabulary bias of shape {tuple(vocab_bias.shape)} does not fit a head of "
                               f"{self.vocab_size} rows{' that has a bias already' if self.head_module.bias is not None else ''}")
            self.head_module.bias = torch.nn.Parameter(vocab_bias.detach().float().clone())
        self.lora = None
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            unknown = set(lora) - set(LORA_DEFAULTS)
            if unknown:
                raise LsrError(f"unknown LoRA options {sorted(unknown)}; use {sorted(LORA_DEFAULTS)}")
            self.lora = {**LORA_DEFAULTS, **lora}
            model = get_peft_model(model, LoraConfig(
                r=self.lora["r"], lora_alpha=self.lora["alpha"], lora_dropout=self.lora["dropout"],
                target_modules=list(self.lora["target_modules"]), bias="none"))
            self.head_module.requires_grad_(False)  # untied heads too: only adapters train
        self.model = model.to(self.device).eval()
        self.head_module.to(self.device)

    @property
    def inference_free(self) -> bool:
        return False

    # -- batches --------------------------------------------------------------------------------------
    def _sequence(self, copy: list[int]) -> tuple[list[int], list[int]]:
        """(ids, pool) for one text's token ids; see the module docstring."""
        head = self._bos + self._prefix + copy + self._separator if self.echo else self._bos
        ids = head + copy
        if not ids:  # an empty text with no BOS: one unpooled token keeps the model's input non-empty
            return [self._pad_id], [0]
        return ids, [0] * len(head) + [1] * len(copy)

    def _sequences(self, texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        texts = checked_texts(texts)
        if not texts:
            return []
        copies = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self._copy_length,
                                verbose=False)["input_ids"]
        return [self._sequence(list(c)) for c in copies]

    def _pad(self, sequences: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in sequences)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        input_ids = torch.full((len(sequences), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        pool_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, (ids, pool) in enumerate(sequences):
            cols = slice(width - len(ids), width) if left else slice(0, len(ids))
            input_ids[row, cols] = torch.tensor(ids)
            attention_mask[row, cols] = 1
            pool_mask[row, cols] = torch.tensor(pool)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        return {name: to_device(t, self.device) for name, t in (
            ("input_ids", input_ids), ("attention_mask", attention_mask), ("pool_mask", pool_mask),
            ("position_ids", position_ids))}

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """One padded batch for `forward(**batch)`: input_ids, attention_mask, pool_mask, position_ids."""
        sequences = self._sequences(texts)
        if not sequences:
            raise LsrError("tokenize: no texts")
        return self._pad(sequences)

    # -- the network ----------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, vocab) SPLADE weights for one padded batch (differentiable). Without pool_mask every attended
        token is pooled (right for echo=False inputs only); without position_ids they come from the mask."""
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        hidden = final_hidden_states(self.model, input_ids=input_ids, attention_mask=attention_mask,
                                     position_ids=position_ids, use_cache=False)
        return splade_head(hidden, self.head_module.weight, self.head_module.bias,
                           attention_mask=attention_mask if pool_mask is None else pool_mask, backend=self.head)

    def encode_queries(self, texts: Sequence[str]) -> SparseBatch:
        return self.encode(texts, desc="queries")

    def encode_documents(self, texts: Sequence[str]) -> SparseBatch:
        return self.encode(texts, desc="documents")

    def document_batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The batches `encode_documents(texts)` runs, as positions into `texts` (see `length_batches`)."""
        return length_batches([len(ids) for ids, _ in self._sequences(texts)], self.batch_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], desc: str = "texts") -> SparseBatch:
        sequences = self._sequences(texts)
        return encode_sorted(sequences, [len(ids) for ids, _ in sequences],
                             lambda batch: self.forward(**self._pad(batch)), vocab_size=self.vocab_size,
                             batch_size=self.batch_size, desc=desc, show_progress=self.show_progress)

    # -- LoRA and checkpoints -------------------------------------------------------------------------
    def merge_lora(self) -> None:
        """Fold the LoRA adapters into the base weights (for inference); afterwards the model is plain."""
        if self.lora is None:
            return
        self.model = self.model.merge_and_unload().eval()
        self.model.requires_grad_(True)
        self.head_module.requires_grad_(True)
        self.lora = None

    def _state_dict(self) -> dict[str, torch.Tensor]:
        """The base model's weights with adapters folded in (without touching the model) and the head back."""
        if self.lora is None:
            state = dict(self.model.state_dict())
        else:
            from peft.tuners.lora import LoraLayer

            base = self.model.get_base_model()
            state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}
            with torch.no_grad():
                for name, module in base.named_modules():
                    if isinstance(module, LoraLayer) and not module.merged:
                        delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                        state[f"{name}.weight"] = module.get_base_layer().weight + delta
        state[self._head_key] = self.head_module.weight
        if self.head_module.bias is not None and not self.has_vocab_bias:
            state[self._head_key[:-len("weight")] + "bias"] = self.head_module.bias
        return {k: v.detach().contiguous() for k, v in state.items()}

    def save(self, folder: str | Path) -> None:
        """save_pretrained of the (merged) model with its lm_head, the tokenizer and lsr_encoder.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        base = self.model if self.lora is None else self.model.get_base_model()
        base.save_pretrained(folder, state_dict=self._state_dict())
        self.tokenizer.save_pretrained(folder)
        if self.has_vocab_bias:
            from safetensors.torch import save_file

            save_file({"bias": self.head_module.bias.detach().cpu().contiguous()}, folder / VOCAB_BIAS_FILE)
        write_encoder_settings(folder, {"max_length": self.max_length, "echo": self.echo, "template": self.template,
                                        "tokenizer_class": type(self.tokenizer).__name__})
