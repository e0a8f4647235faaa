"""The REST endpoint: `create_app(settings)` builds a FastAPI app whose `SearchService` loads in `lifespan`.

Routes: GET / (a search page), POST /search, GET /search?q=..., GET /documents/{doc_id}, GET /stats,
GET /health. Bad input is a 4xx with a one-line `detail` (LsrError -> 400, unknown doc_id -> 404, schema
violations -> 422, oversized bodies -> 413, URLs or bodies that are not UTF-8 -> 400); blocking work
(encoding, search) runs in a worker thread.

    uvicorn --factory lsr.api.app:app_from_env     # reads LSR_INDEX_DIR, ...
"""
from __future__ import annotations

import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, AsyncIterator, Literal
from urllib.parse import unquote_to_bytes

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from lsr.index import LsrError

from .schemas import (MAX_DOC_ID_CHARS, MAX_K, MAX_QUERY_CHARS, DocumentOut, ErrorOut, Fusion, HealthOut, HitOut,
                      Mode, PrfPlacement, SearchRequest, SearchResponse, StatsOut)
from .service import DocumentNotFound, SearchService

MAX_BODY_BYTES = 64 * 1024
STATIC = Path(__file__).parent / "static"


class Settings(BaseSettings):
    """Service settings, from arguments or `LSR_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="LSR_", extra="ignore")

    index_dir: Path
    verify_checksums: bool = True
    dense_backend: Literal["auto", "faiss", "numpy"] = "auto"
    snippet_chars: int = 300
    max_body_bytes: int = MAX_BODY_BYTES
    warm_up: bool = True  # one query through every mode at startup (first-call costs out of user requests)
    # The service has no write or admin routes; an API key, when set, guards the read routes (search,
    # documents, stats) if `protect_reads` is on. /health and the page stay open (the page sends no key).
    api_key: SecretStr | None = None
    protect_reads: bool = False
    # Worker threads for blocking work (encoding, search). Each thread that runs the encoders keeps its own
    # buffers, so anyio's default of 40 makes memory creep up under load for no gain on a few cores.
    worker_threads: int = Field(4, ge=1, le=64)


def get_service(request: Request) -> SearchService:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def require_api_key(request: Request,
                    x_api_key: Annotated[str | None, Header(description="the API key, when reads are protected")] = None
                    ) -> None:
    settings: Settings = request.app.state.settings
    if settings.api_key is None or not settings.protect_reads:
        return
    if not secrets.compare_digest((x_api_key or "").encode(), settings.api_key.get_secret_value().encode()):
        raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")


ServiceDep = Annotated[SearchService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


# -- search ----------------------------------------------------------------------------------------------
search_router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)])


async def _search(service: SearchService, settings: Settings, req: SearchRequest) -> SearchResponse:
    start = time.perf_counter()
    hits = await run_in_threadpool(service.search, query=req.query, k=req.k, mode=req.mode.value,
                                   fusion=req.fusion.value, alpha=req.alpha, prf=req.prf,
                                   prf_placement=req.prf_placement.value)
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


@search_router.get("/search", response_model=SearchResponse)
async def search_get(service: ServiceDep, settings: SettingsDep,
                     q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="query text")],
                     k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, mode: Mode = Mode.sparse,
                     fusion: Fusion = Fusion.linear, alpha: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5,
                     prf: bool = False, prf_placement: PrfPlacement = PrfPlacement.both) -> SearchResponse:
    try:
        req = SearchRequest(query=q, k=k, mode=mode, fusion=fusion, alpha=alpha, prf=prf, prf_placement=prf_placement)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_input=False)) from None
    return await _search(service, settings, req)


# -- documents --------------------------------------------------------------------------------------------
documents_router = APIRouter(tags=["documents"], dependencies=[Depends(require_api_key)])


@documents_router.get("/documents/{doc_id:path}", response_model=DocumentOut, responses={404: {"model": ErrorOut}})
async def document(doc_id: str, service: ServiceDep) -> DocumentOut:
    if len(doc_id) > MAX_DOC_ID_CHARS:
        raise DocumentNotFound(f"no document with a {len(doc_id)}-character doc_id in this index")
    doc = service.document(doc_id=doc_id)
    return DocumentOut(doc_id=doc.doc_id, title=doc.title, text=doc.text)


# -- service ----------------------------------------------------------------------------------------------
meta_router = APIRouter(tags=["service"])


@meta_router.get("/stats", response_model=StatsOut, dependencies=[Depends(require_api_key)])
async def stats(service: ServiceDep) -> StatsOut:
    return StatsOut(**service.stats())


@meta_router.get("/", include_in_schema=False)
async def search_page() -> HTMLResponse:
    page = STATIC / "index.html"
    if not page.is_file():
        return HTMLResponse("<p>lsr search: the search page is not installed; use POST /search.</p>", status_code=404)
    return HTMLResponse(page.read_text(encoding="utf-8"))


@meta_router.get("/health", response_model=HealthOut)
async def health(service: ServiceDep) -> HealthOut:
    return HealthOut(status="ok", num_docs=service.reader.num_docs)


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


# -- the app ----------------------------------------------------------------------------------------------
def create_app(settings: Settings | None = None, *, service: SearchService | None = None) -> FastAPI:
    """The app for one index folder. `service` (tests) skips loading one in lifespan."""
    settings = settings or Settings()  # type: ignore[call-arg]  # LSR_INDEX_DIR from the environment

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        if getattr(app.state, "service", None) is None:
            app.state.service = await run_in_threadpool(
                SearchService, settings.index_dir, verify_checksums=settings.verify_checksums,
                dense_backend=settings.dense_backend)
            if settings.warm_up:
                await run_in_threadpool(app.state.service.warm_up)
        yield
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

    @app.middleware("http")
    async def check_request(request: Request, call_next):
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
            async for chunk in request.stream():
                size += len(chunk)
                if size > settings.max_body_bytes:
                    return JSONResponse(status_code=413, content={
                        "detail": f"request body is over the {settings.max_body_bytes}-byte limit"})
                chunks.append(chunk)
            body = b"".join(chunks)
            request._body = body  # what Request.body() caches; the route reads the body from here
            if not _utf8(body):
                return JSONResponse(status_code=400, content={"detail": "the request body is not valid UTF-8"})
        return await call_next(request)

    return app


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def app_from_env() -> FastAPI:
    """For `uvicorn --factory lsr.api.app:app_from_env`: settings from LSR_* variables."""
    return create_app(Settings())  # type: ignore[call-arg]
