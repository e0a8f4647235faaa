"""Where encoders and training run: a device name resolved once, batches moved there, vectors brought back.

Names: `auto` (the first CUDA device if there is one, else the CPU), `cpu`, `cuda`, `cuda:N`. Anything else,
CUDA asked for on a machine without it, or a CUDA index past the last device is an LsrError (the CLI: one
line, exit 2). On CUDA, batches go through pinned memory (an asynchronous copy) and vectors come back as
their nonzeros only, so a GPU does not wait on copies of (batch x vocab) floats; on the CPU nothing moves.
"""
from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp
import torch

from lsr.index import LsrError

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str) -> str:
    """`name` if it is a device name (whether or not this machine has the device), else LsrError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LsrError(f"unknown device {name!r}: use {DEVICE_NAMES}")
    return name


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch.device a name means here (None: auto); LsrError, one line, for a bad or unavailable one."""
    if isinstance(name, torch.device):
        name = str(name)
    name = check_device_name("auto" if name is None else name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LsrError(f"device {name!r}: CUDA is not available here (torch {torch.__version__}); use auto "
                           "or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LsrError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; a CPU tensor bound for CUDA goes through pinned memory, asynchronously."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_host_csr(weights: torch.Tensor) -> sp.csr_matrix:
    """(n, V) weights, wherever they are, as a float32 CSR matrix on the host: the nonzeros are found on the
    tensor's device and only they (values, column ids, row counts) are copied."""
    weights = weights.detach().float()
    rows, cols = weights.nonzero(as_tuple=True)  # row-major order: the CSR order
    values = weights[rows, cols]
    indptr = torch.zeros(weights.shape[0] + 1, dtype=torch.int64, device=weights.device)
    indptr[1:] = torch.bincount(rows, minlength=weights.shape[0]).cumsum(0)
    return sp.csr_matrix((values.cpu().numpy(), cols.cpu().numpy().astype(np.int32),
                          indptr.cpu().numpy().astype(np.int32)), shape=tuple(weights.shape))
