"""Fused SPLADE head kernels behind one function.

`splade_head(..., backend=)` with backends `reference` (the spec), `torch` (tiled, CPU default) and `triton`
(CUDA default; imported lazily from lsr.kernels.triton_head so importing lsr never imports triton).
User mistakes (unknown backend, wrong input dtype or shape) raise `HeadError`, a ValueError.
"""
from .splade_head import BACKENDS, HeadError, check_backend, resolve_backend, splade_head, splade_head_reference
from .torch_head import splade_head_torch

__all__ = ["BACKENDS", "HeadError", "check_backend", "resolve_backend", "splade_head", "splade_head_reference",
           "splade_head_torch"]
