"""Text encoders: SPLADE (masked-LM backbones) and the model resolver."""
from .dense import DenseEncoder
from .registry import ModelSpec, registered_names, resolve_model
from .splade import SpladeEncoder, detach_output_head

__all__ = ["DenseEncoder", "ModelSpec", "SpladeEncoder", "detach_output_head", "registered_names", "resolve_model"]
