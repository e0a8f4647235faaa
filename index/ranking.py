"""The ranking configuration: one typed value that says how a query is ranked, owned by the search layer and
reused by the REST schemas, the CLI options and evaluation, so each default lives here and nowhere else.

- `mode`: sparse (SPLADE query vector over the impact index), dense (inner product over the dense store), or
  hybrid (both lists, each to `depth`, fused).
- `fusion`: linear (min-max interpolation, `alpha * sparse + (1 - alpha) * dense`, a missing document given
  that list's minimum) or rrf. `alpha` 0.5 was chosen on nfcorpus dev.
- `fuse_in`: lsr (ours, above) or backend: the index's engine fuses (Milvus's hybrid search: its RRF scores
  are ours, its linear fusion normalises by arctan rather than min-max; milvus.py).
- `prf`: pseudo-relevance feedback (Rocchio on the sparse query vector in sparse mode, Vector-PRF on the dense
  one in dense and hybrid mode) from the top `prf_depth` documents, `q' = prf_query_weight * q +
  prf_feedback_weight * mean(feedback)`, placed before, after or both before and after fusion ("To Interpolate
  or not to Interpolate", SIGIR 2022: both was best there).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

from .errors import LsrError


class Mode(str, Enum):
    sparse = "sparse"
    dense = "dense"
    hybrid = "hybrid"


class Fusion(str, Enum):
    linear = "linear"
    rrf = "rrf"


class FuseIn(str, Enum):
    lsr = "lsr"
    backend = "backend"


class PrfPlacement(str, Enum):
    before = "before"
    after = "after"
    both = "both"


MODES = tuple(m.value for m in Mode)
FUSIONS = tuple(f.value for f in Fusion)
FUSE_IN = tuple(f.value for f in FuseIn)
PRF_PLACEMENTS = tuple(p.value for p in PrfPlacement)


@dataclass(frozen=True)
class Ranking:
    mode: Mode = Mode.sparse
    fusion: Fusion = Fusion.linear
    alpha: float = 0.5          # linear fusion: weight of the sparse list (chosen on nfcorpus dev)
    depth: int = 100            # each list's depth before fusion (DESIGN.md: min-max hybrid over the top 100)
    fuse_in: FuseIn = FuseIn.lsr
    prf: bool = False
    prf_placement: PrfPlacement = PrfPlacement.both
    prf_depth: int = 5          # feedback documents (pyserini's Rocchio setting)
    prf_query_weight: float = 0.4
    prf_feedback_weight: float = 0.6

    def __post_init__(self) -> None:
        for name, kind in (("mode", Mode), ("fusion", Fusion), ("fuse_in", FuseIn), ("prf_placement", PrfPlacement)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value.value if isinstance(value, Enum) else value))
            except ValueError:
                raise LsrError(f"{name} must be one of {', '.join(k.value for k in kind)}, got {value!r}") from None
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not 0.0 <= self.alpha <= 1.0:
            raise LsrError(f"alpha must be in [0, 1], got {self.alpha!r}")
        for name in ("depth", "prf_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise LsrError(f"{name} must be a positive integer, got {value!r}")
        for name in ("prf_query_weight", "prf_feedback_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise LsrError(f"{name} must be a non-negative number, got {value!r}")
        if not isinstance(self.prf, bool):
            raise LsrError(f"prf must be true or false, got {self.prf!r}")

    def with_(self, **changes: Any) -> Ranking:
        """A copy with some fields changed (None values ignored), validated again."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        return {k: v.value if isinstance(v, Enum) else v for k, v in asdict(self).items()}

    @property
    def label(self) -> str:
        return f"{self.mode.value}{', prf' if self.prf else ''}"
