"""Linear quantisation of weights into integer impacts: impact = round(weight * scale), clipped to
[0, 2**bits - 1]. The bits and scale live in the index meta, never in a helper's constants."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import LsrError

IMPACT_DTYPES = {8: np.uint8, 16: np.uint16}


@dataclass(frozen=True)
class Quantization:
    bits: int
    scale: float  # impacts per unit of weight

    def __post_init__(self) -> None:
        if self.bits not in IMPACT_DTYPES:
            raise LsrError(f"quantisation bits must be one of {sorted(IMPACT_DTYPES)}, got {self.bits}")
        if not (self.scale > 0 and np.isfinite(self.scale)):
            raise LsrError(f"quantisation scale must be positive and finite, got {self.scale}")

    @classmethod
    def fit(cls, max_weight: float, bits: int = 8) -> Quantization:
        """The scale that maps the largest weight to the largest impact."""
        levels = (1 << bits) - 1
        return cls(bits=bits, scale=levels / max_weight if max_weight > 0 else 1.0)

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return IMPACT_DTYPES[self.bits]

    def quantize(self, weights: np.ndarray) -> np.ndarray:
        if len(weights) and weights.min() < 0:
            raise LsrError("cannot quantise negative weights into impacts")
        levels = (1 << self.bits) - 1
        return np.clip(np.rint(weights.astype(np.float64) * self.scale), 0, levels).astype(self.dtype)

    def dequantize(self, impacts: np.ndarray) -> np.ndarray:
        return impacts.astype(np.float32) / np.float32(self.scale)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Quantization:
        return cls(bits=int(d["bits"]), scale=float(d["scale"]))
