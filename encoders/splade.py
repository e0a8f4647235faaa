"""SPLADE encoder for any masked-LM checkpoint: backbone -> fused SPLADE head -> sparse vectors."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lsr.index import LsrError, SparseBatch
from lsr.kernels import check_backend, splade_head

from .base import (DEFAULT_MAX_LENGTH, check_sizes, checked_texts, detach_output_head, encode_sorted,
                   length_batches, final_hidden_states, read_encoder_settings, write_encoder_settings)
from .device import resolve_device, to_device
from .idf import IdfQueryEncoder, has_idf


class SpladeEncoder:
    """Encodes texts into SPLADE vectors; satisfies lsr.index's QueryEncoder and DocumentEncoder.

    Texts are tokenised once, sorted by length and batched, so padding is minimal; results come back in
    input order. A checkpoint folder holding an IDF table (`idf.json`, see lsr.encoders.idf) is an
    inference-free model: documents go through the network, queries only through the IDF table.
    """

    def __init__(self, source: str, *, max_length: int | None = None, batch_size: int = 32, head: str = "auto",
                 device: str | None = None, show_progress: bool = True) -> None:
        """max_length None: the folder's recorded setting (lsr_encoder.json), else 256."""
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        if max_length is None:
            max_length = int(read_encoder_settings(source).get("max_length", DEFAULT_MAX_LENGTH))
        check_sizes(batch_size=batch_size, max_length=max_length)
        check_backend(head)  # lsr.kernels.HeadError before the model is loaded
        device = resolve_device(device)  # and a bad or unavailable device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForMaskedLM.from_pretrained(source)
        except OSError as e:
            raise LsrError(f"cannot load model {source!r}: {str(e).splitlines()[0]}") from e
        self.device = device
        self.head_module = detach_output_head(model)
        self.model = model.to(self.device).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.head = head
        self.show_progress = show_progress
        self.vocab_size = int(self.head_module.weight.shape[0])
        self.query_encoder = (IdfQueryEncoder.load(source, self.tokenizer, max_length=max_length)
                              if has_idf(source) else None)

    @property
    def inference_free(self) -> bool:
        return self.query_encoder is not None

    def encode_queries(self, texts: Sequence[str]) -> SparseBatch:
        if self.query_encoder is not None:
            return self.query_encoder.encode_queries(texts)
        return self.encode(texts, desc="queries")

    def encode_documents(self, texts: Sequence[str]) -> SparseBatch:
        return self.encode(texts, desc="documents")

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
        write_encoder_settings(folder, {"max_length": self.max_length})
        if self.query_encoder is not None:
            self.query_encoder.save(folder)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) SPLADE weights for one padded batch (differentiable)."""
        hidden = final_hidden_states(self.model, input_ids=input_ids, attention_mask=attention_mask)
        return splade_head(hidden, self.head_module.weight, self.head_module.bias, attention_mask=attention_mask,
                           backend=self.head)

    def document_batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The batches `encode_documents(texts)` runs, as positions into `texts` (see `length_batches`)."""
        return length_batches([len(x) for x in self._token_ids(checked_texts(texts))], self.batch_size)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=True)["input_ids"]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], desc: str = "texts") -> SparseBatch:
        texts = checked_texts(texts)
        if not texts:
            return SparseBatch.empty(self.vocab_size)
        ids = self._token_ids(texts)

        def run_batch(batch: list[list[int]]) -> torch.Tensor:
            padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt")
            return self.forward(to_device(padded["input_ids"], self.device),
                                to_device(padded["attention_mask"], self.device))

        return encode_sorted(ids, [len(x) for x in ids], run_batch, vocab_size=self.vocab_size,
                             batch_size=self.batch_size, desc=desc, show_progress=self.show_progress)
