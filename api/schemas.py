"""Request and response schemas of the REST API (pydantic v2). Requests forbid unknown fields; JSON bodies are
typed strictly (a string is not a number, a number is not a boolean)."""
from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, field_validator

MAX_QUERY_CHARS = 1000
MAX_K = 1000
MAX_DOC_ID_CHARS = 512


class Mode(str, Enum):
    sparse = "sparse"
    dense = "dense"
    hybrid = "hybrid"


class Fusion(str, Enum):
    linear = "linear"
    rrf = "rrf"


class PrfPlacement(str, Enum):
    before = "before"
    after = "after"
    both = "both"


QueryText = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_QUERY_CHARS)]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText = Field(description=f"query text, 1 to {MAX_QUERY_CHARS} characters, not only whitespace")
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = Field(10, description="number of hits")
    mode: Mode = Mode.sparse
    fusion: Fusion = Field(Fusion.linear, description="hybrid fusion: min-max interpolation or RRF")
    alpha: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)] = Field(
        0.5, description="hybrid weight of the sparse list (linear fusion)")
    prf: StrictBool = Field(False, description="pseudo-relevance feedback (Rocchio / Vector-PRF)")
    prf_placement: PrfPlacement = Field(PrfPlacement.both, description="hybrid: interpolate before, after or "
                                        "both before and after PRF")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must contain a non-whitespace character")
        if "\x00" in value:
            raise ValueError("query must not contain NUL characters")
        return value


class HitOut(BaseModel):
    rank: int
    doc_id: str
    score: float
    title: str | None = None
    snippet: str | None = None


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    k: int
    prf: bool
    took_ms: float
    hits: list[HitOut]


class DocumentOut(BaseModel):
    doc_id: str
    title: str | None
    text: str | None


class StatsOut(BaseModel):
    num_docs: int
    vocab_size: int
    num_postings: int
    avg_doc_nnz: float
    quantization: dict
    sparse_model: str | None
    dense_model: str | None
    dense_dim: int | None
    dense_backend: str | None
    has_documents: bool
    index_bytes: int
    modes: list[Mode]
    dataset: str | None
    backend: str = Field(description="sparse search backend: lsr (ours) or lucene (Lucene impact search)")


class HealthOut(BaseModel):
    status: str
    num_docs: int


class ErrorOut(BaseModel):
    detail: str | list
