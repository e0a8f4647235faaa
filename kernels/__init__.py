"""Fused SPLADE head kernels behind one function."""
from .splade_head import BACKENDS, splade_head, splade_head_reference

__all__ = ["BACKENDS", "splade_head", "splade_head_reference"]
