"""Milvus as a backend for our index folders: `lsr index build --backend milvus` (and `lsr export milvus`:
`folder.export_to_milvus`, which writes the same collection with `write_collection`).

What runs where. The folder keeps everything our own index has (meta, doc ids, the quantised postings and
forward index that PRF, the stats and `lsr export` read, `docs.jsonl`, the dense store's `dense.npy` that
Vector-PRF reads); Milvus holds one collection with a row per document: `doc_idx` (INT64 primary key, the
row of our index), `doc_id`, `sparse` (SPARSE_FLOAT_VECTOR of the document's integer impacts, the very
values our index holds) and, with `--dense`, `dense` (FLOAT_VECTOR). Sparse and dense top-k run in Milvus
(inner product; `SPARSE_INVERTED_INDEX` with `drop_ratio_search` 0 is exact, `SPARSE_WAND` and a drop ratio
are opt-in approximate modes); encoding, fusion, PRF and the REST API stay in lsr (`SearchService`).

Scores. Milvus computes float32 inner products of the float32 query weights and the integer impacts; a hit's
score is that divided by the index's quantisation scale (on our scale: sum(w * impact) / scale), and hits are
ranked score descending, ties to the smaller doc_idx (`hits.ranking_order`), as `Searcher.search_vector`
ranks. A few more hits than asked are fetched (TIE_MARGIN) so documents tied at the k-th score are cut the
way ours are. Against our float64 scores they differ by float32 rounding only (relative ~1e-7), so rankings
are ours except where two scores lie within float32 precision of each other.

The URI. Default: a Milvus Lite file inside the folder, `milvus/milvus.db` (recorded relative to the folder,
so a moved folder keeps working); `--milvus-uri` names another one (`http://host:19530` for a server or a
cluster, or a Milvus Lite file path). A server's token comes from `LSR_MILVUS_TOKEN`, never from the meta.
Milvus Lite opens a file in one process at a time: a second process gets a one-line error.

Coverage decision (meta.json covers every file by checksum, and a Milvus Lite file changes whenever it is
opened): the `milvus/` subfolder is listed in the meta's `uncovered` and left out of the file coverage;
instead the meta's `info.milvus` records the collection, its row count and a content fingerprint (SHA-256 over
the doc_idx, doc_id and sparse vector of FINGERPRINT_ROWS evenly spaced documents), which every open checks
against Milvus with one `get` and the row count against the collection's statistics; a mismatch is an
IndexFormatError naming the collection. The same check covers collections on a server.

Atomic build. The embedded file is written inside the writer's staged folder, so it appears with the folder
in its one rename or is discarded with it. On a server the collection is created under a build-unique name,
`NAME_<time>_<hex>` (Milvus Lite cannot rename collections or make aliases), and becomes ready only by being
named in the folder's meta, which is written last: a failed build drops its collection; a killed one leaves
an orphan that no meta names (never served). Errors: an unreachable or failing Milvus is `EngineUnavailable`
(one line in the CLI, 503 from the API); a collection that does not match the folder is an IndexFormatError.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .dense import DenseStore
from .errors import EngineUnavailable, IndexFormatError, LsrError
from .files import failpoint
from .fusion import RRF_K
from .hits import ranking_order
from .search import HitsFromVectors
from .sparse import SparseBatch
from .storage import IndexReader

MILVUS_DIR = "milvus"
LITE_FILE = f"{MILVUS_DIR}/milvus.db"  # the default URI, relative to the index folder
DEFAULT_COLLECTION = "lsr"
PK, DOC_ID, SPARSE, DENSE = "doc_idx", "doc_id", "sparse", "dense"
SPARSE_INDEXES = ("SPARSE_INVERTED_INDEX", "SPARSE_WAND")
SEARCH_LIMIT = 16_384  # Milvus's largest top-k
TIE_MARGIN = 16
FINGERPRINT_ROWS = 32
INSERT_BATCH = 1_000
TOKEN_ENV, TIMEOUT_ENV = "LSR_MILVUS_TOKEN", "LSR_MILVUS_TIMEOUT_S"


def _timeout() -> int:
    """Seconds a Milvus call may take, retries included (pymilvus bounds its retries only by an int timeout;
    otherwise it retries an unreachable server 75 times, over 3 minutes)."""
    try:
        return max(1, int(round(float(os.environ.get(TIMEOUT_ENV, "10")))))
    except ValueError:
        raise LsrError(f"{TIMEOUT_ENV} must be a number of seconds, got {os.environ[TIMEOUT_ENV]!r}") from None


def is_local(uri: str) -> bool:
    """A Milvus Lite file (a path), not a server address."""
    return "://" not in uri


def resolve_uri(folder: str | Path, uri: str) -> str:
    """A recorded URI as MilvusClient takes it: a relative Lite file is relative to the index folder."""
    return str((Path(folder) / uri).resolve()) if is_local(uri) and not Path(uri).is_absolute() else uri


# -- connections ---------------------------------------------------------------------------------------------
# pymilvus shares one connection between the MilvusClients of one URI (and closing any closes it for all), so
# the clients of this process are shared and counted here: `connect` takes one, `release` gives it back.
_clients: dict[str, list] = {}
_clients_lock = threading.Lock()


def _quiet_pymilvus() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    for name in ("pymilvus", "pymilvus.decorators", "pymilvus.milvus_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # its errors come back to us as exceptions


def connect(uri: str):
    """A MilvusClient for `uri` (shared within the process); EngineUnavailable when it cannot be reached."""
    with _clients_lock:
        if uri in _clients:
            _clients[uri][1] += 1
            return _clients[uri][0]
        _quiet_pymilvus()
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise LsrError("the Milvus backend needs pymilvus and milvus-lite: pip install pymilvus==2.5.18 "
                           "milvus-lite==2.5.1") from None
        if is_local(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            client = MilvusClient(uri, token=os.environ.get(TOKEN_ENV, ""), timeout=_timeout())
        except Exception as e:  # pymilvus raises MilvusException, grpc errors or OSError
            raise unavailable(uri, e) from None
        _clients[uri] = [client, 1]
        return client


def release(uri: str) -> None:
    """Give back a client from `connect`; the last one closes the connection (and a Milvus Lite server)."""
    with _clients_lock:
        entry = _clients.get(uri)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _clients[uri]
            try:
                entry[0].close()
            except Exception:
                pass
            if is_local(uri):  # pymilvus leaves a Milvus Lite server running until the process exits
                try:
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(uri)
                except Exception:
                    pass


def _reason(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())[:300]


def unavailable(uri: str, error: BaseException) -> EngineUnavailable:
    reason = _reason(error)
    if is_local(uri) and "Open local milvus failed" in reason:
        reason += " (Milvus Lite opens a file in one process at a time: is another lsr using this index?)"
    return EngineUnavailable(f"Milvus at {uri} is unavailable: {reason}")


# -- the collection ------------------------------------------------------------------------------------------
def _rows_of(indptr, term_ids, impacts, lo: int, hi: int) -> list[dict[int, float]]:
    rows = []
    for i in range(lo, hi):
        a, b = int(indptr[i]), int(indptr[i + 1])
        rows.append(dict(zip(np.asarray(term_ids[a:b]).tolist(), np.asarray(impacts[a:b], np.float64).tolist())))
    return rows


def fingerprint_rows(num_docs: int) -> list[int]:
    return sorted(set(np.linspace(0, num_docs - 1, min(num_docs, FINGERPRINT_ROWS)).astype(np.int64).tolist()))


def fingerprint(entries: Sequence[tuple[int, str, dict]]) -> str:
    """SHA-256 over (doc_idx, doc_id, sorted (term, impact)) of sampled rows: what the folder records and every
    open recomputes from Milvus."""
    canon = [[int(i), str(d), sorted((int(t), int(round(float(w)))) for t, w in v.items())] for i, d, v in entries]
    return hashlib.sha256(json.dumps(sorted(canon)).encode()).hexdigest()


def _schema(client, num_docs: int, id_chars: int, dense_dim: int | None):
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(PK, DataType.INT64, is_primary=True)
    schema.add_field(DOC_ID, DataType.VARCHAR, max_length=max(1, min(65_535, id_chars * 4)))
    schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
    if dense_dim:
        schema.add_field(DENSE, DataType.FLOAT_VECTOR, dim=int(dense_dim))
    return schema


def _index_params(client, sparse_index: str, dense: bool):
    if sparse_index not in SPARSE_INDEXES:
        raise LsrError(f"Milvus sparse index must be one of {', '.join(SPARSE_INDEXES)}, got {sparse_index!r}")
    params = client.prepare_index_params()
    params.add_index(SPARSE, index_type=sparse_index, metric_type="IP")
    if dense:
        params.add_index(DENSE, index_type="FLAT", metric_type="IP")
    return params


def write_collection(uri: str, collection: str, *, indptr, term_ids, impacts, doc_ids: Sequence[str],
                     dense: np.ndarray | None = None, sparse_index: str = "SPARSE_INVERTED_INDEX",
                     batch_size: int = INSERT_BATCH, progress: bool = False, drop_on_failure: bool = True
                     ) -> dict[str, Any]:
    """Create `collection` at `uri` and stream the documents into it in batches (row i = doc_idx i: its doc_id,
    its integer impacts from the CSR arrays, its dense vector); index, load and check it. Returns the record
    the folder's meta keeps. The collection must not exist; on failure it is dropped."""
    num_docs = len(doc_ids)
    if batch_size < 1:
        raise LsrError(f"batch size must be positive, got {batch_size}")
    if dense is not None and (dense.ndim != 2 or dense.shape[0] != num_docs):
        raise LsrError(f"{dense.shape[0]} dense vectors for {num_docs} documents")
    values = np.asarray(impacts)
    if len(values) and (values.min() < 0 or not np.array_equal(values, np.rint(values))):
        raise LsrError("the Milvus backend takes integer impacts >= 0 (quantise the documents first)")
    client = connect(uri)
    created = False
    try:
        try:
            if client.has_collection(collection):
                raise LsrError(f"Milvus at {uri} already holds a collection {collection!r} (choose another "
                               "--collection)")
            client.create_collection(collection, schema=_schema(client, num_docs, max(map(len, doc_ids)),
                                                                 None if dense is None else dense.shape[1]))
            created = True
            bar = _progress(num_docs, f"into Milvus {collection}") if progress else None
            for lo in range(0, num_docs, batch_size):
                hi = min(num_docs, lo + batch_size)
                sparse_rows = _rows_of(indptr, term_ids, impacts, lo, hi)
                rows = [{PK: i, DOC_ID: str(doc_ids[i]), SPARSE: sparse_rows[i - lo]} for i in range(lo, hi)]
                if dense is not None:
                    block = np.asarray(dense[lo:hi], dtype=np.float32)
                    for r, vector in zip(rows, block):
                        r[DENSE] = vector.tolist()
                client.insert(collection, rows, timeout=max(60, _timeout()))
                if bar:
                    bar.update(hi - lo)
                failpoint("milvus-inserting")
            if bar:
                bar.close()
            client.flush(collection)
            start = time.perf_counter()
            client.create_index(collection, _index_params(client, sparse_index, dense is not None))
            client.load_collection(collection)
            index_s = time.perf_counter() - start
            sample = fingerprint_rows(num_docs)
            expected = fingerprint([(i, doc_ids[i], _rows_of(indptr, term_ids, impacts, i, i + 1)[0]) for i in sample])
            record = {"uri": uri, "collection": collection, "num_rows": num_docs, "fingerprint": expected,
                      "sparse_index": sparse_index, "dense_field": dense is not None, "index_s": index_s}
            check_collection(client, record, num_docs)
        except (LsrError, KeyboardInterrupt):
            raise
        except Exception as e:
            raise unavailable(uri, e) from None
    except BaseException:
        if created and drop_on_failure:
            try:
                client.drop_collection(collection)
            except Exception:
                pass
        raise
    finally:
        release(uri)
    return record


def _progress(total: int, what: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", desc=what, leave=False)


def check_collection(client, record: dict[str, Any], num_docs: int) -> None:
    """The collection a folder records holds its rows: the row count and the sampled rows' fingerprint."""
    name = record["collection"]
    where = f"Milvus collection {name!r} at {record['uri']}"
    if not client.has_collection(name):
        raise IndexFormatError(f"{where} does not exist (dropped? rebuild the index or `lsr export milvus` it)")
    rows = int(client.get_collection_stats(name).get("row_count", -1))
    if rows != record["num_rows"] or rows != num_docs:
        raise IndexFormatError(f"{where} holds {rows} rows, the index records {record['num_rows']} and has "
                               f"{num_docs} documents (changed after the build)")
    sample = fingerprint_rows(num_docs)
    got = client.get(name, ids=sample, output_fields=[PK, DOC_ID, SPARSE])
    found = fingerprint([(r[PK], r[DOC_ID], r[SPARSE]) for r in got])
    if len(got) != len(sample) or found != record["fingerprint"]:
        raise IndexFormatError(f"{where}: its rows differ from the index's (fingerprint mismatch: changed after "
                               "the build)")


def build_collection_name(collection: str | None, uri_is_embedded: bool) -> str:
    name = collection or DEFAULT_COLLECTION
    if not name.replace("_", "").isalnum() or not (name[0].isalpha() or name[0] == "_"):
        raise LsrError(f"Milvus collection names are letters, digits and '_', starting with a letter: {name!r}")
    if uri_is_embedded:  # a fresh file inside the staged folder: nothing to collide with
        return name
    return f"{name}_{time.strftime('%Y%m%d%H%M%S')}_{secrets.token_hex(3)}"


class MilvusPart:
    """An index-folder part (`IndexWriter(parts=...)`): the folder's impacts (and `dense`) into a Milvus
    collection. It returns what the meta records (`info.milvus` and the uncovered `milvus/` subfolder); if the
    build fails after it, `discard()` drops a collection it made on a server (the embedded file goes with the
    staged folder)."""

    def __init__(self, uri: str | None = None, collection: str | None = None, *, dense: np.ndarray | None = None,
                 sparse_index: str = "SPARSE_INVERTED_INDEX", batch_size: int = INSERT_BATCH,
                 progress: bool = False) -> None:
        build_collection_name(collection, True)  # checked before any encoding
        self.uri, self.collection, self.dense = uri, collection, dense
        self.sparse_index, self.batch_size, self.progress = sparse_index, batch_size, progress
        self._made: tuple[str, str] | None = None

    def __call__(self, folder: Path, impacts, doc_ids: Sequence[str]) -> dict[str, Any]:
        embedded = self.uri is None
        recorded = LITE_FILE if embedded else self.uri
        target = resolve_uri(folder, recorded)
        name = build_collection_name(self.collection, embedded)
        impacts = impacts.tocsr()
        record = write_collection(target, name, indptr=impacts.indptr, term_ids=impacts.indices,
                                  impacts=impacts.data, doc_ids=doc_ids, dense=self.dense,
                                  sparse_index=self.sparse_index, batch_size=self.batch_size, progress=self.progress)
        record["uri"] = recorded
        inside = embedded or (is_local(recorded) and _inside(folder, target))
        if not inside:
            self._made = (target, name)
        out: dict[str, Any] = {"info": {"backend": "milvus", "milvus": record}}
        if inside:
            out["uncovered"] = [MILVUS_DIR]
        return out

    def discard(self) -> None:
        if self._made is not None:
            drop_collection(*self._made)
            self._made = None


milvus_part = MilvusPart


def drop_collection(uri: str, name: str) -> None:
    """Drop a collection a failed build made (best effort: an unreachable Milvus keeps an orphan no folder names)."""
    try:
        client = connect(uri)
    except LsrError:
        return
    try:
        client.drop_collection(name)
    except Exception:
        pass
    finally:
        release(uri)


def _inside(folder: Path, path: str) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


# -- searching -----------------------------------------------------------------------------------------------
def milvus_record(reader: IndexReader) -> dict[str, Any]:
    record = reader.info.get("milvus")
    ok = (isinstance(record, dict) and isinstance(record.get("uri"), str) and isinstance(record.get("collection"), str)
          and isinstance(record.get("num_rows"), int) and isinstance(record.get("fingerprint"), str))
    if not ok:
        raise IndexFormatError(f"{reader.path}: meta.json records the Milvus backend but no valid info.milvus "
                               "(corrupted index)")
    return record


class MilvusCollection:
    """The collection an index folder records, connected and checked (one per searcher / dense store)."""

    def __init__(self, reader: IndexReader, folder: str | Path) -> None:
        self.record = milvus_record(reader)
        self.name = self.record["collection"]
        self.uri = resolve_uri(folder, self.record["uri"])
        self.client = connect(self.uri)
        self._closed = False
        try:
            check_collection(self.client, self.record, reader.num_docs)
            state = self.client.get_load_state(self.name).get("state")
            if "Loaded" not in str(state):
                self.client.load_collection(self.name)
        except LsrError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise unavailable(self.uri, e) from None

    def search(self, data: list, field: str, limit: int, params: dict[str, Any]) -> list:
        try:
            return self.client.search(self.name, data=data, anns_field=field, limit=limit,
                                      search_params={"metric_type": "IP", "params": params}, timeout=_timeout())
        except Exception as e:
            raise unavailable(self.uri, e) from None

    def size_bytes(self) -> int:
        if is_local(self.uri) and Path(self.uri).parent.is_dir():
            return sum(p.stat().st_size for p in Path(self.uri).parent.rglob("*") if p.is_file())
        return 0  # on a server: its storage is the server's

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            release(self.uri)


def _ranked(result, k: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    idx = np.fromiter((h["id"] for h in result), dtype=np.int64, count=len(result))
    scores = np.fromiter((h["distance"] for h in result), dtype=np.float64, count=len(result)) / scale
    order = ranking_order(idx, scores)[:k]
    return idx[order], scores[order]


class MilvusSparseSearcher(HitsFromVectors):
    """Sparse top-k through Milvus; the `SparseSearcher` interface plus `search_vector`, like `Searcher`.

    `drop_ratio` > 0 (Milvus's `drop_ratio_search`: the smallest query weights ignored) is approximate, as is
    a collection built with `SPARSE_WAND` where Milvus prunes."""

    def __init__(self, reader: IndexReader, folder: str | Path, *, drop_ratio: float = 0.0) -> None:
        if not 0.0 <= drop_ratio < 1.0:
            raise LsrError(f"drop_ratio must be in [0, 1), got {drop_ratio}")
        self.reader = reader
        self.collection = MilvusCollection(reader, folder)
        self.drop_ratio = float(drop_ratio)
        self._scale = float(reader.quantization.scale)

    @property
    def exact(self) -> bool:
        return self.drop_ratio == 0.0

    def _query(self, terms: np.ndarray, weights: np.ndarray) -> dict[int, float]:
        terms = np.asarray(terms, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        if len(terms) != len(weights):
            raise LsrError(f"{len(terms)} query terms but {len(weights)} weights")
        if len(terms) and (terms.min() < 0 or terms.max() >= self.reader.vocab_size):
            raise LsrError(f"query term_id outside the index vocabulary [0, {self.reader.vocab_size})")
        if not np.all(np.isfinite(weights)):
            raise LsrError("query weights must be finite")
        if len(weights) and weights.min() < 0:
            raise LsrError("the Milvus backend takes non-negative query weights (Milvus would score them as "
                           "given; our own backend handles negative ones)")
        keep = weights > 0
        return dict(zip(terms[keep].tolist(), weights[keep].tolist()))

    def _limit(self, k: int) -> tuple[int, int]:
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise LsrError(f"k must be positive, got {k}")
        k_eff = min(int(k), self.reader.num_docs)
        if k_eff > SEARCH_LIMIT:
            raise LsrError(f"the Milvus backend returns at most {SEARCH_LIMIT:,} hits per query, asked for {k}")
        return k_eff, min(k_eff + TIE_MARGIN, SEARCH_LIMIT, self.reader.num_docs)

    def search_vector(self, terms: np.ndarray, weights: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx, score) of the top k documents for one sparse query vector, as `Searcher.search_vector`."""
        k_eff, limit = self._limit(k)
        query = self._query(terms, weights)
        if not query:  # an empty vector scores nothing (Milvus would take it without complaint)
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        result = self.collection.search([query], SPARSE, limit, {"drop_ratio_search": self.drop_ratio})
        return _ranked(result[0], k_eff, self._scale)

    def search_batch_vectors(self, queries: SparseBatch, k: int = 10, threads: int | None = None, batch: int = 256
                             ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(doc_idx, score) per query; non-empty queries go to Milvus `batch` at a time (one request each)."""
        k_eff, limit = self._limit(k)
        vectors = [self._query(*queries.row(i)) for i in range(len(queries))]
        out = [(np.zeros(0, np.int64), np.zeros(0, np.float64)) for _ in vectors]
        todo = [i for i, v in enumerate(vectors) if v]
        for lo in range(0, len(todo), batch):
            chunk = todo[lo:lo + batch]
            results = self.collection.search([vectors[i] for i in chunk], SPARSE, limit,
                                             {"drop_ratio_search": self.drop_ratio})
            for i, result in zip(chunk, results):
                out[i] = _ranked(result, k_eff, self._scale)
        return out

    def hybrid(self, terms: np.ndarray, weights: np.ndarray, vector: np.ndarray, k: int, fusion: str,
               alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx, fused score) of the top k, and up to TIE_MARGIN more (the caller cuts ties at the k-th
        score its own way), by Milvus's own hybrid search over the collection's sparse and dense fields, each
        searched to k: `RRFRanker(RRF_K)` for fusion "rrf" (our RRF's scores), and
        for "linear" `WeightedRanker(alpha, 1 - alpha)`, which Milvus normalises by 0.5 + arctan(score) / pi
        for inner products (not our min-max: its scores and rankings differ from ours). The sparse query goes
        with 1/scale folded in, so Milvus sees scores on our scale."""
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        if not self.collection.record.get("dense_field"):
            raise LsrError(f"the Milvus collection {self.collection.name!r} holds no dense vectors (rebuild the "
                           "index with --dense)")
        k_eff, limit = self._limit(k)
        query = {t: w / self._scale for t, w in self._query(terms, weights).items()}
        dense = np.asarray(vector, dtype=np.float32).ravel()
        if not np.all(np.isfinite(dense)):
            raise LsrError("the dense query vector must be finite")
        # each list to k, as our fusion takes them; the fused list to k and a margin, ties cut as ours
        requests = [AnnSearchRequest(data=[dense.tolist()], anns_field=DENSE, param={"metric_type": "IP"},
                                     limit=k_eff)]
        if query:  # an empty sparse vector contributes nothing (Milvus would take it without complaint)
            requests.insert(0, AnnSearchRequest(data=[query], anns_field=SPARSE, limit=k_eff, param={
                "metric_type": "IP", "params": {"drop_ratio_search": self.drop_ratio}}))
        if fusion == "rrf":
            ranker = RRFRanker(RRF_K)
        else:
            ranker = WeightedRanker(*((alpha, 1.0 - alpha) if query else (1.0 - alpha,)))
        try:
            result = self.collection.client.hybrid_search(self.collection.name, requests, ranker=ranker,
                                                          limit=limit, timeout=_timeout())
        except Exception as e:
            raise unavailable(self.collection.uri, e) from None
        return _ranked(result[0], limit, 1.0)

    def size_bytes(self) -> int:
        """Our index files and, for a Milvus Lite file, its folder."""
        return self.reader.size_bytes() + self.collection.size_bytes()

    def close(self) -> None:
        self.collection.close()


class MilvusDenseStore(DenseStore):
    """The folder's dense store (its vectors stay readable for Vector-PRF) searched through Milvus's `dense`
    field (FLAT, inner product): `search_vector(vector, k)` as `DenseStore.search_vector`."""

    def __init__(self, reader: IndexReader, folder: str | Path, *, verify_checksums: bool = True) -> None:
        super().__init__(folder, verify_checksums=verify_checksums, backend="numpy", doc_ids=reader.doc_ids)
        self.collection = MilvusCollection(reader, folder)
        if not self.collection.record.get("dense_field"):
            self.collection.close()
            raise IndexFormatError(f"{folder}: the Milvus collection {self.collection.name!r} holds no dense "
                                   "vectors (rebuild the index with --dense)")
        self.backend = "milvus"

    def search_vector(self, query: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        q = self.checked_query(query, k)
        k_eff = min(int(k), self.num_docs)
        if k_eff > SEARCH_LIMIT:
            raise LsrError(f"the Milvus backend returns at most {SEARCH_LIMIT:,} hits per query, asked for {k}")
        result = self.collection.search([q.tolist()], DENSE, min(k_eff + TIE_MARGIN, SEARCH_LIMIT, self.num_docs), {})
        return _ranked(result[0], k_eff, 1.0)

    def close(self) -> None:
        self.collection.close()
