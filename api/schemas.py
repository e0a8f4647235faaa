"""Request and response schemas of the REST API (pydantic v2). Requests forbid unknown fields; JSON bodies are
typed strictly (a string is not a number, a number is not a boolean)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, field_validator

from lsr.index import FuseIn, Fusion, Mode, PrfPlacement, Ranking

MAX_QUERY_CHARS = 1000
MAX_K = 1000
MAX_DOC_ID_CHARS = 512


DEFAULT = Ranking()  # the search layer owns the ranking defaults


QueryText = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_QUERY_CHARS)]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText = Field(description=f"query text, 1 to {MAX_QUERY_CHARS} characters, not only whitespace")
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = Field(10, description="number of hits")
    mode: Mode = DEFAULT.mode
    fusion: Fusion = Field(DEFAULT.fusion, description="hybrid fusion: min-max interpolation or RRF")
    alpha: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)] = Field(
        DEFAULT.alpha, description="hybrid weight of the sparse list (linear fusion)")
    prf: StrictBool = Field(DEFAULT.prf, description="pseudo-relevance feedback (Rocchio / Vector-PRF)")
    prf_placement: PrfPlacement = Field(DEFAULT.prf_placement, description="hybrid: interpolate before, after or "
                                        "both before and after PRF")
    fuse_in: FuseIn = Field(DEFAULT.fuse_in, description="hybrid: fuse in lsr, or in the index's backend (Milvus's "
                            "hybrid search)")

    def ranking(self) -> Ranking:
        return DEFAULT.with_(mode=self.mode, fusion=self.fusion, alpha=self.alpha, prf=self.prf,
                             prf_placement=self.prf_placement, fuse_in=self.fuse_in)

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
    shards: int = Field(description="index shards searched (1: a plain index folder)")
    engine: str = Field(description="where the shards are searched: local (threads here) or ray (Ray actors)")
    drop_ratio: float = Field(description="Milvus backend: share of the smallest query weights its approximate "
                              "sparse search ignores (0: exact)")
    search_algorithm: str = Field("exhaustive", description="our backend's sparse algorithm: the one asked for "
                                  "(LSR_SEARCH_ALGORITHM), else the index's (exhaustive, or the one `lsr index "
                                  "reorder` recorded)")
    search_options: dict = Field(default_factory=dict, description="how the sparse list is searched: algorithm "
                                 "(null: the index's), prune_factor, budget, rescore, max_query_terms, drop_ratio")
    exact: bool = Field(True, description="whether the sparse search returns the exact top k (false: the options "
                        "above make it approximate)")
    collection_idf_weight: float | None = Field(None, description="inference-free model: weight of the indexed "
                                                "collection's own IDF blended with the model's table (null: "
                                                "the table alone, or a model that encodes its queries)")


class HealthOut(BaseModel):
    status: str
    num_docs: int


class ErrorOut(BaseModel):
    detail: str | list
