"""SPLADE encoder for any masked-LM checkpoint: backbone -> fused SPLADE head -> sparse vectors."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lsr.index import LsrError, SparseBatch
from lsr.kernels import splade_head

from .idf import IdfQueryEncoder, has_idf
from .registry import DEFAULT_MAX_LENGTH, checked_texts, read_encoder_settings, write_encoder_settings


def detach_output_head(model: torch.nn.Module) -> torch.nn.Linear:
    """Swap the model's vocabulary projection for an identity and return the projection.

    The model's forward then yields the hidden states right before the projection (after the MLM transform
    layer for BERT-style heads, or the final norm for decoder `lm_head`s), and the head function computes
    projection, activation and pooling without materialising (batch, tokens, vocab) logits. The returned
    module keeps the original parameters, so weights stay tied to the input embeddings.
    """
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise LsrError(f"{type(model).__name__}: output embeddings are {type(head).__name__}, expected Linear")
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if child is head:
                setattr(parent, child_name, torch.nn.Identity())
                return head
    raise LsrError(f"{type(model).__name__}: could not find the output projection module")


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
        if max_length < 2:
            raise LsrError(f"max_length must be at least 2, got {max_length}")
        if batch_size < 1:
            raise LsrError(f"batch_size must be positive, got {batch_size}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForMaskedLM.from_pretrained(source)
        except OSError as e:
            raise LsrError(f"cannot load model {source!r}: {str(e).splitlines()[0]}") from e
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
        return {"input_ids": batch["input_ids"].to(self.device), "attention_mask": batch["attention_mask"].to(self.device)}

    def save(self, folder: str | Path) -> None:
        """save_pretrained of the model (the tied projection and its bias included), the tokenizer and the
        encoder settings; the IDF table of an inference-free model is the query side's to save."""
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        write_encoder_settings(folder, {"max_length": self.max_length})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) SPLADE weights for one padded batch (differentiable)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # pre-projection states
        return splade_head(hidden, self.head_module.weight, self.head_module.bias, attention_mask=attention_mask,
                           backend=self.head)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], desc: str = "texts") -> SparseBatch:
        texts = checked_texts(texts)
        if not texts:
            return SparseBatch.empty(self.vocab_size)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=True)["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        rows: list[sp.csr_matrix] = [None] * len(texts)  # type: ignore[list-item]
        with tqdm(total=len(texts), desc=f"encoding {desc}", unit="text", disable=not self.show_progress or len(texts) <= self.batch_size) as bar:
            for start in range(0, len(texts), self.batch_size):
                batch_idx = order[start:start + self.batch_size]
                padded = self.tokenizer.pad({"input_ids": [ids[i] for i in batch_idx]}, return_tensors="pt")
                out = self.forward(padded["input_ids"].to(self.device), padded["attention_mask"].to(self.device))
                block = sp.csr_matrix(out.float().cpu().numpy())
                for j, i in enumerate(batch_idx):
                    rows[i] = block[j]
                bar.update(len(batch_idx))
        return SparseBatch.from_scipy(sp.vstack(rows, format="csr"))
