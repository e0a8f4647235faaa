"""Text encoders: SPLADE (masked-LM backbones, optionally inference-free), Echo SPLADE (decoder-only LMs),
dense, and the model resolver."""
from .dense import DenseEncoder
from .registry import SPARSE_KINDS, ModelSpec, load_sparse_encoder, registered_names, resolve_model
from .splade import SpladeEncoder, detach_output_head

__all__ = ["SPARSE_KINDS", "DenseEncoder", "ModelSpec", "load_sparse_encoder", "SpladeEncoder", "detach_output_head", "registered_names", "resolve_model"]
