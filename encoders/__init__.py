"""Text encoders: SPLADE (masked-LM backbones) and the model resolver."""
from .registry import ModelSpec, registered_names, resolve_model
from .splade import SpladeEncoder, detach_output_head

__all__ = ["ModelSpec", "SpladeEncoder", "detach_output_head", "registered_names", "resolve_model"]
