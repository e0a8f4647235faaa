"""ir_datasets as a dataset source: `irds:<id>` wherever a command takes `--dataset` (`lsr data import`,
which places a local BEIR copy where ir_datasets looks for it, is lsr.eval.irds_import).

- `load_irds("beir/scifact/test")`: documents, the judged queries and the qrels, streamed through ir_datasets
  into the `BeirDataset` every pipeline takes (`lsr.eval.beir.load_beir` and `load_corpus` route `irds:` ids
  here). The split is part of the id (`beir/scifact/test`, `msmarco-passage/dev/small`).

ir_datasets itself is imported on first use only (it takes about a second).
"""
from __future__ import annotations

import contextlib
import difflib
import logging
from itertools import islice

from lsr.index import LsrError

from .dataset import IRDS_PREFIX, BeirDataset, Document

def _ir_datasets():
    import ir_datasets

    return ir_datasets


@contextlib.contextmanager
def _quiet():
    """ir_datasets' own log lines (download retries, "[starting] ...") held back to errors: a failure is our one
    line. Its progress bars (a real download, building its document store) still show."""
    logger = _ir_datasets().log.easy().logger()  # created (at INFO) on first use, so set it after
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _offline_is_one_line(dataset_id: str):
    """ir_datasets fetches missing files on first use; a failed fetch becomes one line naming what to fetch."""
    import requests

    hint = (f"; or `lsr data import FOLDER --irds {'/'.join(dataset_id.split('/')[:2])}` a local BEIR copy"
            if dataset_id.startswith("beir/") else "")
    try:
        yield
    except requests.exceptions.RequestException as e:
        url = getattr(getattr(e, "request", None), "url", None) or "its source files"
        raise LsrError(f"irds:{dataset_id} is not available offline: ir_datasets could not download {url} "
                       f"({type(e).__name__}); run once online to cache it under {_ir_datasets().util.home_path()}"
                       f"{hint}") from None
    except RuntimeError as e:  # several mirrors, all failed: RuntimeError('All download sources failed', errors)
        if not (e.args and e.args[0] == "All download sources failed"):
            raise
        urls = [getattr(m, "url", None) or str(getattr(m, "_path", m)) for m, _ in e.args[1]]
        raise LsrError(f"irds:{dataset_id} is not available offline: ir_datasets could not fetch any of "
                       f"{', '.join(urls)}{hint}") from None
    except FileNotFoundError as e:  # a file ir_datasets cannot download (a licence): placed by hand
        raise LsrError(f"irds:{dataset_id}: ir_datasets needs {e.filename or e} placed by hand (see "
                       f"https://ir-datasets.com/{dataset_id.split('/')[0]}.html){hint}") from None


def open_dataset(dataset_id: str):
    """The ir_datasets dataset for an id (with or without the `irds:` prefix); an unknown id is one line."""
    dataset_id = dataset_id.removeprefix(IRDS_PREFIX)
    irds = _ir_datasets()
    with _quiet():
        try:
            return irds.load(dataset_id)
        except KeyError:
            parent = dataset_id.rsplit("/", 1)[0]
            if "/" in dataset_id and parent in set(irds.registry):
                splits = _splits_of(parent)
                raise LsrError(f"irds:{parent} has no split {dataset_id.rsplit('/', 1)[1]!r}" + (
                    f" (its splits: {', '.join(s.rsplit('/', 1)[1] for s in splits)})" if splits else "")) from None
            close = difflib.get_close_matches(dataset_id, list(irds.registry), n=3)
            raise LsrError(f"unknown ir_datasets id {dataset_id!r}" + (f" (did you mean {', '.join(close)}?)" if close
                           else " (see https://ir-datasets.com)")) from None


def _splits_of(dataset_id: str) -> list[str]:
    """The ids directly under `dataset_id` that have qrels (the splits to name)."""
    irds = _ir_datasets()
    children = [k for k in irds.registry if k.startswith(dataset_id + "/") and "/" not in k[len(dataset_id) + 1:]]
    return [k for k in children if irds.load(k).has_qrels()]


def _document(doc) -> Document:
    """Title and text where the record has both (BEIR, MS MARCO, ...), else ir_datasets' `default_text()`."""
    if hasattr(doc, "text") and isinstance(doc.text, str):
        return Document(str(getattr(doc, "title", "") or ""), doc.text)
    return Document("", doc.default_text())


def load_irds(dataset_id: str, *, limit: int | None = None, with_queries: bool = True) -> BeirDataset:
    """Documents (the first `limit` if given), and with `with_queries` the judged queries and qrels, of an
    ir_datasets id, as the `BeirDataset` the pipelines take."""
    dataset_id = dataset_id.removeprefix(IRDS_PREFIX)
    ds = open_dataset(dataset_id)
    irds = _ir_datasets()
    name = IRDS_PREFIX + dataset_id
    if not ds.has_docs():
        raise LsrError(f"{name} has no documents")
    if with_queries and not (ds.has_qrels() and ds.has_queries()):
        splits = _splits_of(dataset_id)
        raise LsrError(f"{name} has no {'qrels' if not ds.has_qrels() else 'queries'}" +
                       (f": name a split ({', '.join(IRDS_PREFIX + s for s in splits)})" if splits else ""))
    if limit is not None and limit < 1:
        raise LsrError(f"--limit must be positive, got {limit}")
    docs_id = irds.docs_parent_id(dataset_id)
    with _quiet(), _offline_is_one_line(dataset_id):
        corpus: dict[str, Document] = {}
        records = ds.docs_iter() if limit is None else islice(ds.docs_iter(), limit)
        for count, doc in enumerate(records, start=1):
            corpus[str(doc.doc_id)] = _document(doc)
            if len(corpus) != count:
                raise LsrError(f"{name}: duplicate doc_id {doc.doc_id!r}")
        if not corpus:
            raise LsrError(f"{name}: empty corpus")
        if limit is not None and limit > len(corpus):
            raise LsrError(f"--limit {limit} is larger than the corpus ({len(corpus)} documents)")
        qrels: dict[str, dict[str, int]] = {}
        queries: dict[str, str] = {}
        if with_queries:
            for q in ds.qrels_iter():
                qrels.setdefault(str(q.query_id), {})[str(q.doc_id)] = int(q.relevance)
            if not qrels:
                raise LsrError(f"{name} judges no queries")
            for q in ds.queries_iter():
                if str(q.query_id) in qrels:
                    queries[str(q.query_id)] = q.text if isinstance(getattr(q, "text", None), str) else q.default_text()
            missing = [q for q in qrels if q not in queries]
            if missing:
                raise LsrError(f"{name}: {len(missing)} judged queries have no text (first: {missing[0]!r})")
    split = dataset_id[len(docs_id) + 1:] if dataset_id != docs_id else dataset_id.rsplit("/", 1)[-1]
    return BeirDataset(name=name, path=irds.util.home_path() / docs_id, corpus=corpus,
                       queries={q: queries[q] for q in qrels}, qrels=qrels, split=split if with_queries else "")
