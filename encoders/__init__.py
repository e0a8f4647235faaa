"""Text encoders: SPLADE (masked-LM backbones, optionally inference-free, in the published layouts that
lsr.encoders.layouts reads), Echo SPLADE (decoder-only LMs), dense, the model resolver, and the export to
sentence-transformers (lsr.encoders.export, imported on use).

Layers, each importing only those below it: base (shared helpers) -> idf, dense -> layouts -> splade, echo ->
registry -> provider, export.
"""
from .base import (DEFAULT_MAX_LENGTH, ENCODER_SETTINGS_FILE, detach_output_head, encode_sorted,
                   final_hidden_states, read_encoder_settings, write_encoder_settings)
from .dense import DenseEncoder
from .echo import VOCAB_BIAS_FILE, EchoSpladeEncoder
from .idf import IDF_FILE, IdfQueryEncoder, bm25_idf, has_idf
from .layouts import SparseLayout, read_layout
from .registry import KINDS, SPARSE_KINDS, ModelSpec, load_sparse_encoder, registered_names, resolve_model
from .splade import SpladeEncoder

__all__ = [
    # encoders
    "SpladeEncoder", "EchoSpladeEncoder", "IdfQueryEncoder", "DenseEncoder",
    # resolving and loading models
    "KINDS", "SPARSE_KINDS", "ModelSpec", "load_sparse_encoder", "registered_names", "resolve_model",
    "SparseLayout", "read_layout",
    # shared pieces and the files a model folder holds
    "DEFAULT_MAX_LENGTH", "ENCODER_SETTINGS_FILE", "IDF_FILE", "VOCAB_BIAS_FILE", "bm25_idf", "detach_output_head",
    "encode_sorted", "final_hidden_states", "has_idf", "read_encoder_settings", "write_encoder_settings",
]
