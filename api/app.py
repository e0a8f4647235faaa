"""The REST endpoint: `create_app(settings)` builds a FastAPI app whose `SearchService` loads in `lifespan`.

Routes: GET / (a search page), POST /search, GET /search?q=..., GET /documents/{doc_id}, GET /stats,
GET /health (GET routes answer HEAD too). Bad input is a 4xx with a one-line `detail` (LsrError -> 400,
unknown doc_id -> 404, schema violations -> 422, oversized bodies -> 413, URLs or bodies that are not UTF-8 ->
400, a body not received within `body_timeout_s` -> 408); a key, when set, is checked before anything else
(401). A search engine the index ranks through (Milvus) that is unreachable or fails is a 503 with one line. Blocking work (encoding, search) runs in a worker thread. `lsr serve` (api/server.py) adds the
connection-level limits uvicorn lacks: a deadline for the request head and a connection cap.

    uvicorn --factory lsr.api.app:app_from_env     # reads LSR_INDEX_DIR, ...; no request-head deadline
"""
from __future__ import annotations

import logging
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Literal
from urllib.parse import unquote_to_bytes

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import ClientDisconnect

from lsr.encoders.provider import open_service
from lsr.index import DocumentNotFound, EngineUnavailable, LsrError, SearchOptions, SearchService

from .schemas import (DEFAULT, MAX_DOC_ID_CHARS, MAX_K, MAX_QUERY_CHARS, DocumentOut, ErrorOut, FuseIn, Fusion,
                      HealthOut, HitOut, Mode, PrfPlacement, SearchRequest, SearchResponse, StatsOut)

MAX_BODY_BYTES = 64 * 1024
STATIC = Path(__file__).parent / "static"
PROTECTED = ("/search", "/documents", "/stats")  # the read routes a key guards; /health and the page stay open
log = logging.getLogger("lsr.api")


class Settings(BaseSettings):
    """Service settings, from arguments or `LSR_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="LSR_", extra="ignore")

    index_dir: Path
    verify_checksums: bool = True
    dense_backend: Literal["auto", "faiss", "numpy"] = "auto"
    # "ray": a sharded index's shards on Ray actors (ray_address: a running cluster, else a local Ray);
    # "local": the shards searched in threads of this process
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    # How the sparse list is searched (lsr.index.SearchOptions): our backend's algorithm (None: the one the
    # index records) and what makes it approximate (prune_factor < 1, budget, max_query_terms; rescore is
    # exact by itself); a Milvus-backed index: drop_ratio, the share of the smallest query weights ignored.
    search_algorithm: str | None = None
    prune_factor: float = Field(1.0, gt=0.0, le=1.0)
    budget: int | None = Field(None, ge=1)
    rescore: int | None = Field(None, ge=1)
    max_query_terms: int | None = Field(None, ge=1)
    drop_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    snippet_chars: int = 300
    max_body_bytes: int = MAX_BODY_BYTES
    warm_up: bool = True  # one query through every mode at startup (first-call costs out of user requests)
    # The service has no write or admin routes; an API key, when set, guards the read routes (search,
    # documents, stats) unless `protect_reads` is set to false explicitly. /health and the page stay open (the
    # page sends no key). An empty key, a non-ASCII one, or protect_reads without a key refuse to start.
    api_key: SecretStr | None = None
    protect_reads: bool | None = None
    # Worker threads for blocking work (encoding, search). Each thread that runs the encoders keeps its own
    # buffers, so anyio's default of 40 makes memory creep up under load for no gain on a few cores.
    worker_threads: int = Field(4, ge=1, le=64)
    # Connection limits (`lsr serve`): the request head (line and headers) must arrive within
    # header_timeout_s of the connection opening or of the previous response, the body within body_timeout_s
    # of the head; idle keep-alive connections close after keep_alive_s; beyond max_connections at once, new
    # requests get 503.
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    body_timeout_s: float = Field(10.0, gt=0, le=3600)
    keep_alive_s: int = Field(5, ge=1, le=3600)
    max_connections: int = Field(256, ge=1, le=100_000)

    @model_validator(mode="after")
    def _check_key(self) -> Settings:
        if self.api_key is not None:
            key = self.api_key.get_secret_value()
            if not key:
                raise ValueError("LSR_API_KEY is set but empty: set a key, or unset the variable")
            if not key.isascii() or not key.isprintable():
                raise ValueError("LSR_API_KEY must be printable ASCII (HTTP headers carry no other text reliably)")
            if self.protect_reads is None:
                self.protect_reads = True
        elif self.protect_reads:
            raise ValueError("LSR_PROTECT_READS is on but LSR_API_KEY is not set: nothing could be read")
        try:
            self.search_options()
        except LsrError as e:
            raise ValueError(str(e)) from None
        return self

    def search_options(self) -> SearchOptions:
        return SearchOptions(algorithm=self.search_algorithm, prune_factor=self.prune_factor, budget=self.budget,
                             rescore=self.rescore, max_query_terms=self.max_query_terms,
                             drop_ratio=self.drop_ratio)

    @property
    def key_required(self) -> bool:
        return self.api_key is not None and bool(self.protect_reads)

    def service_options(self) -> dict[str, Any]:
        """What `open_service` takes of these settings."""
        return {"verify_checksums": self.verify_checksums, "dense_backend": self.dense_backend,
                "engine": self.engine, "ray_address": self.ray_address, "search_options": self.search_options()}


def get_service(request: Request) -> SearchService:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def api_key_header(x_api_key: Annotated[str | None, Header(description="the API key, when reads are protected")]
                   = None) -> None:
    """Declares the header in the schema; the key itself is checked in the middleware, before the body is read
    or validated (a wrong key is 401 whatever the body)."""


def _key_ok(settings: Settings, request: Request) -> bool:
    if not settings.key_required or not request.url.path.startswith(PROTECTED):
        return True
    given = request.headers.get("x-api-key", "")
    return secrets.compare_digest(given.encode("latin-1", "replace"),
                                  settings.api_key.get_secret_value().encode())  # type: ignore[union-attr]


ServiceDep = Annotated[SearchService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


# -- search ----------------------------------------------------------------------------------------------
search_router = APIRouter(tags=["search"], dependencies=[Depends(api_key_header)])


async def _search(service: SearchService, settings: Settings, req: SearchRequest) -> SearchResponse:
    start = time.perf_counter()
    hits = await run_in_threadpool(service.search, query=req.query, k=req.k, ranking=req.ranking())
    took_ms = (time.perf_counter() - start) * 1e3
    out = []
    for rank, hit in enumerate(hits, start=1):
        doc = service.documents.get(hit.doc_id)
        snippet = doc.text[:settings.snippet_chars] if doc and doc.text else None
        out.append(HitOut(rank=rank, doc_id=hit.doc_id, score=hit.score, title=doc.title if doc else None,
                          snippet=snippet))
    return SearchResponse(query=req.query, mode=req.mode, k=req.k, prf=req.prf, took_ms=took_ms, hits=out)


@search_router.post("/search", response_model=SearchResponse)
async def search_post(body: SearchRequest, service: ServiceDep, settings: SettingsDep) -> SearchResponse:
    return await _search(service, settings, body)


@search_router.head("/search", include_in_schema=False)
@search_router.get("/search", response_model=SearchResponse)
async def search_get(service: ServiceDep, settings: SettingsDep,
                     q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="query text")],
                     k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, mode: Mode = DEFAULT.mode,
                     fusion: Fusion = DEFAULT.fusion, alpha: Annotated[float, Query(ge=0.0, le=1.0)] = DEFAULT.alpha,
                     prf: bool = DEFAULT.prf, prf_placement: PrfPlacement = DEFAULT.prf_placement,
                     fuse_in: FuseIn = DEFAULT.fuse_in) -> SearchResponse:
    try:
        req = SearchRequest(query=q, k=k, mode=mode, fusion=fusion, alpha=alpha, prf=prf, prf_placement=prf_placement,
                            fuse_in=fuse_in)
    except ValidationError as e:  # named as the URL names them: the text is `q` here, `query` in a POST body
        errors = e.errors(include_url=False, include_input=False)
        for error in errors:
            if tuple(error.get("loc", ())) [:1] == ("query",):
                error["loc"] = ("query", "q", *error["loc"][1:])
        raise RequestValidationError(errors) from None
    return await _search(service, settings, req)


# -- documents --------------------------------------------------------------------------------------------
documents_router = APIRouter(tags=["documents"], dependencies=[Depends(api_key_header)])


@documents_router.head("/documents/{doc_id:path}", include_in_schema=False)
@documents_router.get("/documents/{doc_id:path}", response_model=DocumentOut, responses={404: {"model": ErrorOut}})
async def document(doc_id: str, service: ServiceDep) -> DocumentOut:
    if len(doc_id) > MAX_DOC_ID_CHARS:
        raise DocumentNotFound(f"no document with a {len(doc_id)}-character doc_id in this index")
    doc = service.document(doc_id=doc_id)
    return DocumentOut(doc_id=doc.doc_id, title=doc.title, text=doc.text)


# -- service ----------------------------------------------------------------------------------------------
meta_router = APIRouter(tags=["service"])


@meta_router.head("/stats", include_in_schema=False)
@meta_router.get("/stats", response_model=StatsOut, dependencies=[Depends(api_key_header)])
async def stats(service: ServiceDep) -> StatsOut:
    return StatsOut(**service.stats())


@meta_router.head("/", include_in_schema=False)
@meta_router.get("/", include_in_schema=False)
async def search_page() -> HTMLResponse:
    page = STATIC / "index.html"
    if not page.is_file():
        return HTMLResponse("<p>lsr search: the search page is not installed; use POST /search.</p>", status_code=404)
    return HTMLResponse(page.read_text(encoding="utf-8"))


@meta_router.head("/health", include_in_schema=False)
@meta_router.get("/health", response_model=HealthOut)
async def health(service: ServiceDep) -> HealthOut:
    return HealthOut(status="ok", num_docs=service.index.num_docs)


# -- errors -----------------------------------------------------------------------------------------------
def _where(error: dict) -> str:
    if error.get("type") == "json_invalid":
        return "body"
    loc = [str(p) for p in error.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    return ".".join(loc) or "body"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # never echo the input back (a 1 MB query would come back whole)
    errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
    for e in errors:
        if e.get("type") == "json_invalid":
            e["loc"], e["msg"] = ("body",), "the request body is not valid JSON"
    message = "; ".join(f"{_where(e)}: {e.get('msg', 'invalid')}" for e in errors) or "invalid request"
    return JSONResponse(status_code=422, content={"detail": message, "errors": _jsonable(errors)})


def _jsonable(errors: list[dict]) -> list[dict]:
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors]


async def _not_found(request: Request, exc: DocumentNotFound) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _bad_input(request: Request, exc: LsrError) -> JSONResponse:
    return JSONResponse(status_code=400, content={"detail": str(exc)})


async def _engine_unavailable(request: Request, exc: EngineUnavailable) -> JSONResponse:
    log.warning("search engine unavailable: %s", exc)
    return JSONResponse(status_code=503, content={"detail": str(exc)})


# -- the app ----------------------------------------------------------------------------------------------
def create_app(settings: Settings | None = None, *, service: SearchService | None = None) -> FastAPI:
    """The app for one index folder. `service` (tests) skips loading one in lifespan."""
    settings = settings or Settings()  # type: ignore[call-arg]  # LSR_INDEX_DIR from the environment

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        opened = getattr(app.state, "service", None) is None
        if opened:
            app.state.service = await run_in_threadpool(open_service, settings.index_dir,
                                                        **settings.service_options())
            if settings.warm_up:
                await run_in_threadpool(app.state.service.warm_up)
        yield
        if opened:
            app.state.service.close()  # Milvus connections (and a Milvus Lite server) end with the app
        app.state.service = None

    app = FastAPI(title="lsr search", version="0.1.0", lifespan=lifespan,
                  description="Learned sparse retrieval: sparse, dense and hybrid ranking with PRF.")
    app.state.settings = settings
    app.state.service = service
    app.include_router(search_router)
    app.include_router(documents_router)
    app.include_router(meta_router)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(DocumentNotFound, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(LsrError, _bad_input)  # type: ignore[arg-type]
    app.add_exception_handler(EngineUnavailable, _engine_unavailable)  # type: ignore[arg-type]

    @app.middleware("http")
    async def check_request(request: Request, call_next):
        if not _key_ok(settings, request):
            return JSONResponse(status_code=401, content={"detail": "missing or wrong X-API-Key header"})
        if not _utf8(unquote_to_bytes(request.scope.get("query_string", b""))) or not _utf8(
                unquote_to_bytes(request.scope.get("raw_path") or b"")):
            return JSONResponse(status_code=400, content={"detail": "the URL is not valid UTF-8 once percent-decoded"})
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return JSONResponse(status_code=400, content={"detail": "invalid Content-Length header"})
            if int(length) > settings.max_body_bytes:
                return JSONResponse(status_code=413, content={
                    "detail": f"request body of {length} bytes is over the {settings.max_body_bytes}-byte limit"})
        if request.method == "POST":  # read with a cap: a chunked body has no Content-Length to check
            chunks, size = [], 0
            try:
                with anyio.fail_after(settings.body_timeout_s):
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > settings.max_body_bytes:
                            return JSONResponse(status_code=413, content={
                                "detail": f"request body is over the {settings.max_body_bytes}-byte limit"})
                        chunks.append(chunk)
            except TimeoutError:
                log.warning("%s: request body not received within %.0f s; answered 408", _peer(request),
                            settings.body_timeout_s)
                return JSONResponse(status_code=408, headers={"connection": "close"}, content={
                    "detail": f"the request body did not arrive within {settings.body_timeout_s:g} s"})
            except ClientDisconnect:
                log.warning("%s: client disconnected before sending the whole body", _peer(request))
                return JSONResponse(status_code=400, content={"detail": "client disconnected"})
            body = b"".join(chunks)
            request._body = body  # what Request.body() caches; the route reads the body from here
            if not _utf8(body):
                return JSONResponse(status_code=400, content={"detail": "the request body is not valid UTF-8"})
        return await call_next(request)

    return app


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "client"


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def app_from_env() -> FastAPI:
    """For `uvicorn --factory lsr.api.app:app_from_env`: settings from LSR_* variables."""
    return create_app(Settings())  # type: ignore[call-arg]
