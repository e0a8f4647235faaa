"""SPLADE encoder for any masked-LM checkpoint: backbone -> fused SPLADE head -> sparse vectors."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lsr.index import LsrError, SparseBatch
from lsr.index.termstats import CollectionStats
from lsr.kernels import check_backend, splade_head

from .base import (DEFAULT_MAX_LENGTH, check_sizes, checked_texts, detach_output_head, encode_sorted,
                   length_batches, final_hidden_states, read_encoder_settings, write_encoder_settings)
from .device import resolve_device, to_device
from .idf import IdfQueryEncoder
from .layouts import SparseLayout, read_layout


def _pooled_logits(logits: torch.Tensor, attention_mask: torch.Tensor, pooling: str, activation: str) -> torch.Tensor:
    """SPLADE weights from full (batch, tokens, vocab) logits for the poolings and activations the fused head
    does not cover (sentence-transformers' SpladePooling): log(1 + ReLU) (twice for `log1p_relu`) of the
    masked logits, max or summed over tokens."""
    x = torch.log1p(torch.relu(logits * attention_mask.unsqueeze(-1).to(logits.dtype)))
    if activation == "log1p_relu":
        x = torch.log1p(x)
    return x.amax(dim=1) if pooling == "max" else x.sum(dim=1)


class SpladeEncoder:
    """Encodes texts into SPLADE vectors; satisfies lsr.index's QueryEncoder and DocumentEncoder.

    Texts are tokenised once, sorted by length and batched, so padding is minimal; results come back in
    input order. The folder may be any layout lsr.encoders.layouts reads (a plain masked LM, an OpenSearch
    inference-free model, a sentence-transformers SparseEncoder with or without a router): inference-free
    models (an IDF table on the query side) encode documents through the network and queries only through
    the table. Pooling, activation, max lengths and prompts are the folder's own.
    """

    def __init__(self, source: str, *, max_length: int | None = None, batch_size: int = 32, head: str = "auto",
                 device: str | None = None, show_progress: bool = True,
                 collection_idf_weight: float | None = None) -> None:
        """max_length None: the folder's recorded settings (lsr_encoder.json, or the sentence-transformers
        lengths), else 256; a given max_length applies to queries and documents alike. collection_idf_weight
        None: the folder's recorded weight of the collection's IDF (lsr.encoders.idf), else 0."""
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        layout = read_layout(source)
        settings = read_encoder_settings(layout.mlm) if layout.mlm.is_dir() else {}
        doc_length = max_length or settings.get("max_length") or layout.document_max_length or DEFAULT_MAX_LENGTH
        query_length = (max_length or settings.get("query_max_length") or settings.get("max_length")
                        or layout.query_max_length or doc_length)
        check_sizes(batch_size=batch_size, max_length=int(doc_length))
        check_sizes(batch_size=batch_size, max_length=int(query_length))
        check_backend(head)  # lsr.kernels.HeadError before the model is loaded
        device = resolve_device(device)  # and a bad or unavailable device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(layout.mlm))
            model = AutoModelForMaskedLM.from_pretrained(str(layout.mlm))
        except OSError as e:
            raise LsrError(f"cannot load model {source!r}: {str(e).splitlines()[0]}") from e
        self.layout = layout
        self.pooling = settings.get("pooling", layout.pooling)
        self.activation = settings.get("activation", layout.activation)
        self.prompts = {"document": settings.get("document_prompt", layout.document_prompt),
                        "query": settings.get("query_prompt", layout.query_prompt)}
        self.device = device
        self.head_module = detach_output_head(model)
        self.model = model.to(self.device).eval()
        self.max_length = int(doc_length)
        self.query_max_length = int(query_length)
        self.batch_size = batch_size
        self.head = head
        self.show_progress = show_progress
        self.vocab_size = int(self.head_module.weight.shape[0])
        self.special_ids = sorted(i for i in set(self.tokenizer.all_special_ids) if i < self.vocab_size)
        self.query_encoder = self._query_side(layout) if layout.inference_free else None
        weight = settings.get("collection_idf_weight", 0.0) if collection_idf_weight is None else collection_idf_weight
        if not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise LsrError(f"{source}: collection_idf_weight must be a number in [0, 1], got {weight!r}")
        self.collection_idf_weight = float(weight)

    def _query_side(self, layout: SparseLayout) -> IdfQueryEncoder:
        """The IDF query encoder of an inference-free layout, on the document side's vocabulary."""
        from transformers import AutoTokenizer

        tokenizer = self.tokenizer
        if layout.query_tokenizer is not None and layout.query_tokenizer != layout.mlm:
            tokenizer = AutoTokenizer.from_pretrained(str(layout.query_tokenizer))
            if tokenizer.get_vocab() != self.tokenizer.get_vocab():
                raise LsrError(f"{layout.query_tokenizer}: the query side's vocabulary ({len(tokenizer)} tokens) "
                               f"differs from the document side's ({len(self.tokenizer)}, {layout.mlm}): the "
                               "router's two routes must share one vocabulary")
        if len(tokenizer) != self.vocab_size:
            raise LsrError(f"{layout.mlm}: the tokenizer has {len(tokenizer)} tokens, the model's output "
                           f"{self.vocab_size}")
        if layout.idf_weights is not None:
            return IdfQueryEncoder(tokenizer, layout.idf_weights, max_length=self.query_max_length)
        return IdfQueryEncoder.load(layout.idf_json, tokenizer, max_length=self.query_max_length)

    def _texts(self, texts: Sequence[str], side: str) -> list[str]:
        """The texts as the model reads them: its prompt for the side prepended, lowercased where it says."""
        texts = checked_texts(texts)
        prompt = self.prompts[side]
        texts = [prompt + t for t in texts] if prompt else texts
        return [t.lower() for t in texts] if self.layout.lowercase else texts

    @property
    def inference_free(self) -> bool:
        return self.query_encoder is not None

    def collection_stats(self, texts: Sequence[str]) -> CollectionStats | None:
        """What an index over these documents stores for the query side (lsr.index.termstats): the document
        frequencies of the query tokenizer's tokens in the documents' text (as the model reads it, no prompt),
        for an inference-free model; None for a siamese one."""
        if self.query_encoder is None:
            return None
        texts = checked_texts(texts)
        return self.query_encoder.collection_stats([t.lower() for t in texts] if self.layout.lowercase else texts)

    def for_collection(self, stats: CollectionStats) -> SpladeEncoder:
        """This encoder with its IDF table blended with the collection's (weight `collection_idf_weight`); itself
        when there is nothing to blend. The model's weights are shared, not copied."""
        if self.query_encoder is None or self.collection_idf_weight == 0.0:
            return self
        adapted = copy.copy(self)
        adapted.query_encoder = self.query_encoder.blended(stats, self.collection_idf_weight)
        return adapted

    def encode_queries(self, texts: Sequence[str]) -> SparseBatch:
        texts = self._texts(texts, "query")
        if self.query_encoder is not None:
            return self.query_encoder.encode_queries(texts)
        return self.encode(texts, desc="queries", max_length=self.query_max_length)

    def encode_documents(self, texts: Sequence[str]) -> SparseBatch:
        return self.encode(self._texts(texts, "document"), desc="documents")

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """One padded batch for `forward(**batch)` (training builds its batches with this)."""
        batch = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                               return_tensors="pt")
        return {"input_ids": to_device(batch["input_ids"], self.device),
                "attention_mask": to_device(batch["attention_mask"], self.device)}

    def save(self, folder: str | Path) -> None:
        """Everything loading read: save_pretrained of the model (the tied projection and its bias included),
        the tokenizer, the encoder settings (lsr_encoder.json) and, for an inference-free model, the IDF table
        (idf.json), so the saved folder loads back into the same encoder."""
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        settings = {"max_length": self.max_length}
        recorded = {"query_max_length": (self.query_max_length, self.max_length), "pooling": (self.pooling, "max"),
                    "activation": (self.activation, "relu"), "document_prompt": (self.prompts["document"], ""),
                    "query_prompt": (self.prompts["query"], ""),
                    "collection_idf_weight": (self.collection_idf_weight, 0.0)}
        settings.update({key: value for key, (value, default) in recorded.items() if value != default})
        write_encoder_settings(folder, settings)
        if self.query_encoder is not None:
            self.query_encoder.save(folder)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) SPLADE weights for one padded batch (differentiable)."""
        hidden = final_hidden_states(self.model, input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "max" and self.activation == "relu":
            weights = splade_head(hidden, self.head_module.weight, self.head_module.bias,
                                  attention_mask=attention_mask, backend=self.head)
        else:
            weights = _pooled_logits(self.head_module(hidden), attention_mask, self.pooling, self.activation)
        if self.layout.drop_special_tokens:
            weights = weights.index_fill(1, torch.tensor(self.special_ids, device=weights.device), 0.0)
        return weights

    def document_batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The batches `encode_documents(texts)` runs, as positions into `texts` (see `length_batches`)."""
        return length_batches([len(x) for x in self._token_ids(self._texts(texts, "document"))], self.batch_size)

    def _token_ids(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=max_length or self.max_length,
                              add_special_tokens=True)["input_ids"]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], desc: str = "texts", max_length: int | None = None) -> SparseBatch:
        """Texts as they are (no prompt) through the network, `max_length` tokens (the documents' by default)."""
        texts = checked_texts(texts)
        if not texts:
            return SparseBatch.empty(self.vocab_size)
        ids = self._token_ids(texts, max_length)

        def run_batch(batch: list[list[int]]) -> torch.Tensor:
            padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt")
            return self.forward(to_device(padded["input_ids"], self.device),
                                to_device(padded["attention_mask"], self.device))

        return encode_sorted(ids, [len(x) for x in ids], run_batch, vocab_size=self.vocab_size,
                             batch_size=self.batch_size, desc=desc, show_progress=self.show_progress)
