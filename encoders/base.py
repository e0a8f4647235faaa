"""What the encoders share: text and settings checks, the model's pre-projection states, the sorted-batch loop.

The bottom of lsr.encoders: splade, echo, idf, dense and registry import from here; this module imports none
of them (only lsr.index, below every encoder).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lsr.index import LsrError, SparseBatch

from .device import to_host_csr

DEFAULT_MAX_LENGTH = 256  # tokens per text when neither the caller nor the model's settings say
ENCODER_SETTINGS_FILE = "lsr_encoder.json"  # what a saved sparse encoder records beside its weights

Item = TypeVar("Item")


def check_sizes(*, batch_size: int, max_length: int | None = None) -> None:
    """The encoders' checks of their constructor's sizes (max_length only where given)."""
    if max_length is not None and max_length < 2:
        raise LsrError(f"max_length must be at least 2, got {max_length}")
    if batch_size < 1:
        raise LsrError(f"batch_size must be positive, got {batch_size}")


def checked_texts(texts) -> list[str]:
    """The texts an encoder was given, as a list; every one must be a string."""
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise LsrError("encode: every text must be a string")
    return texts


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from a model folder's file; a clear error naming the file and `what` it should hold."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LsrError(f"{path}: not a readable {what} ({e})") from e
    if not isinstance(value, dict):
        raise LsrError(f"{path}: expected a JSON object ({what})")
    return value


def read_encoder_settings(source: str | Path) -> dict:
    """The settings a checkpoint folder records for its encoder (max_length, echo, ...); {} for none."""
    path = Path(source) / ENCODER_SETTINGS_FILE
    return read_json_object(path, "encoder settings file") if path.is_file() else {}


def write_encoder_settings(folder: str | Path, settings: dict) -> None:
    (Path(folder) / ENCODER_SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")


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


def final_hidden_states(model: torch.nn.Module, **inputs) -> torch.Tensor:
    """(batch, tokens, hidden) states right before the vocabulary projection, from a model whose projection
    `detach_output_head` replaced by an identity.

    Hugging Face's *ForMaskedLM / *ForCausalLM outputs still call the field `.logits`, but with the projection
    an identity it holds these hidden states; this is the one place that reads it.
    """
    return model(**inputs).logits


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """The encoders' batches: positions sorted by length (longest first, ties in input order), `batch_size` at a
    time, so padding is minimal. Encoding one batch's texts alone, in this order, gives the same rows bit for
    bit as encoding them with the rest (whatever the thread count): what the distributed build relies on to
    equal the single-process one."""
    order = np.argsort([-n for n in lengths], kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def encode_sorted(items: Sequence[Item], lengths: Sequence[int], run_batch: Callable[[list[Item]], torch.Tensor],
                  *, vocab_size: int, batch_size: int, desc: str, show_progress: bool) -> SparseBatch:
    """The encoders' batched encode: items sorted by length (longest first, stable), `batch_size` at a time
    through `run_batch` (items -> (n, vocab) weights), so padding is minimal; rows come back in input order."""
    if not items:
        return SparseBatch.empty(vocab_size)
    rows: list[sp.csr_matrix] = [None] * len(items)  # type: ignore[list-item]
    with tqdm(total=len(items), desc=f"encoding {desc}", unit="text",
              disable=not show_progress or len(items) <= batch_size) as bar:
        for batch_idx in length_batches(lengths, batch_size):
            block = to_host_csr(run_batch([items[i] for i in batch_idx]))  # only the nonzeros cross
            for j, i in enumerate(batch_idx):
                rows[i] = block[j]
            bar.update(len(batch_idx))
    return SparseBatch.from_scipy(sp.vstack(rows, format="csr"))
