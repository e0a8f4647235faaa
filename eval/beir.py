"""Datasets, opened one way for every command: a local BEIR folder (corpus.jsonl, queries.jsonl,
qrels/<split>.tsv), a dataset name looked up under the data dir (`--data-dir`, else `LSR_DATA_DIR`, else a
user cache folder, where the official archive is downloaded when online), or an ir_datasets id
`irds:<id>` (`irds:beir/scifact/test`; read through ir_datasets by lsr.eval.irds)."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from lsr.index import LsrError

from .dataset import IRDS_PREFIX, BeirDataset, Document, is_irds  # noqa: F401  (importable from here, as before)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
# Splits carved from a dataset's train split for honest selection (docs/TRAINING.md): `train-dev` holds a
# fixed DEV_FRACTION of the train queries (drawn by DEV_SEED from the sorted query ids), `train-fit` the rest.
# Training reads `train-fit` of any dataset whose `train-dev` is used for choosing; nothing is chosen on test.
CARVED_SPLITS = {"train-dev": ("train", True), "train-fit": ("train", False)}
DEV_FRACTION = 0.2
DEV_SEED = 20261201
# Pseudo-queries from a corpus alone, no judgements (training's title pre-training, docs/TRAINING.md): each document
# with a title and a text gives a query, its title, judged against one document, its text without the title.
TITLES_SPLIT = "titles"
BEIR_NAMES = ("arguana", "climate-fever", "cqadupstack", "dbpedia-entity", "fever", "fiqa", "hotpotqa", "msmarco",
              "nfcorpus", "nq", "quora", "scidocs", "scifact", "trec-covid", "webis-touche2020")


def default_data_dir() -> Path:
    if os.environ.get("LSR_DATA_DIR"):
        return Path(os.environ["LSR_DATA_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "lsr" / "beir"


def locate_dataset(dataset: str | Path, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """A BEIR folder for a path or a name, downloading the official archive for a known name if needed."""
    path = Path(dataset).expanduser()
    if (path / "corpus.jsonl").is_file():
        return path
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    named = root / str(dataset)
    if (named / "corpus.jsonl").is_file():
        return named
    if path.exists():
        raise LsrError(f"{path}: not a BEIR folder (no corpus.jsonl)")
    if download and str(dataset) in BEIR_NAMES:
        return _download(str(dataset), root)
    raise LsrError(f"dataset {str(dataset)!r} not found: no {named}/corpus.jsonl; pass a BEIR folder, "
                   f"set LSR_DATA_DIR or --data-dir (known names: {', '.join(BEIR_NAMES)})")


def _download(name: str, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f"{name}.zip.part"
    url = BEIR_URL.format(name=name)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        with zipfile.ZipFile(archive) as z:
            z.extractall(root)
    except (urllib.error.URLError, OSError, zipfile.BadZipFile) as e:
        raise LsrError(f"dataset {name!r} is not under {root} and downloading {url} failed ({e})") from e
    finally:
        archive.unlink(missing_ok=True)
    return root / name


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Records of a JSONL file; a malformed line raises an error naming the file and line."""
    if not path.is_file():
        raise LsrError(f"{path}: no such file")
    records = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise LsrError(f"{path}:{lineno}: malformed JSON ({e.args[0]})") from None
                if not isinstance(record, dict) or any(k not in record for k in required):
                    raise LsrError(f"{path}:{lineno}: expected an object with {', '.join(required)}")
                records.append(record)
        except UnicodeDecodeError as e:
            raise LsrError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    return records


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC-style BEIR qrels (`query-id corpus-id score`, tab-separated, an optional header, CRLF allowed)."""
    if not path.is_file():
        splits = sorted(p.stem for p in path.parent.glob("*.tsv"))
        raise LsrError(f"{path}: no such qrels file (splits here: {', '.join(splits) or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if fields == [""]:
                continue
            if lineno == 1 and fields[0] == "query-id":
                continue
            if len(fields) != 3:
                raise LsrError(f"{path}:{lineno}: expected 3 tab-separated fields, got {len(fields)}")
            try:
                relevance = int(fields[2])
            except ValueError:
                raise LsrError(f"{path}:{lineno}: relevance {fields[2]!r} is not an integer") from None
            qrels.setdefault(fields[0], {})[fields[1]] = relevance
    return qrels


def carve_dev(query_ids, fraction: float = DEV_FRACTION, seed: int = DEV_SEED) -> set[str]:
    """The query ids of a carved dev split: round(fraction * n) of them, drawn by a fixed seed from the sorted
    ids, so the split is the same on every machine and independent of file order."""
    import numpy as np

    ids = sorted(query_ids)
    take = int(round(fraction * len(ids)))
    chosen = np.random.default_rng(seed).permutation(len(ids))[:take]
    return {ids[i] for i in chosen}


def read_split_qrels(folder: Path, split: str) -> dict[str, dict[str, int]]:
    """The qrels of a split: a qrels/<split>.tsv, or a carved split (CARVED_SPLITS) of its parent's file."""
    if split in CARVED_SPLITS and not (folder / "qrels" / f"{split}.tsv").is_file():
        parent, is_dev = CARVED_SPLITS[split]
        qrels = read_qrels(folder / "qrels" / f"{parent}.tsv")
        dev = carve_dev(qrels)
        return {q: rels for q, rels in qrels.items() if (q in dev) == is_dev}
    return read_qrels(folder / "qrels" / f"{split}.tsv")


def load_corpus(dataset: str | Path, data_dir: str | Path | None = None, limit: int | None = None) -> BeirDataset:
    """The corpus alone (first `limit` documents if given), with no queries."""
    if is_irds(dataset):
        from .irds import load_irds

        return load_irds(str(dataset), limit=limit, with_queries=False)
    path = locate_dataset(dataset, data_dir)
    records = read_jsonl(path / "corpus.jsonl", ("_id",))
    if not records:
        raise LsrError(f"{path / 'corpus.jsonl'}: empty corpus")
    if limit is not None:
        if limit < 1:
            raise LsrError(f"--limit must be positive, got {limit}")
        if limit > len(records):
            raise LsrError(f"--limit {limit} is larger than the corpus ({len(records)} documents)")
        records = records[:limit]
    corpus = {str(r["_id"]): Document(str(r.get("title") or ""), str(r.get("text") or "")) for r in records}
    if len(corpus) != len(records):
        raise LsrError(f"{path / 'corpus.jsonl'}: duplicate _id values")
    name = path.name if Path(dataset).expanduser().exists() else str(dataset)
    return BeirDataset(name=name, path=path, corpus=corpus, queries={}, qrels={}, split="")


def title_queries(ds: BeirDataset) -> BeirDataset:
    """`ds` as the `titles` split (TITLES_SPLIT): documents without their titles (those with no text left out), and
    each title a query whose one relevant document is its own. Query ids are the documents' ids."""
    pairs = {d: doc for d, doc in ds.corpus.items() if doc.title.strip() and doc.text.strip()}
    if not pairs:
        raise LsrError(f"{ds.path}: no document has both a title and a text, so there is no {TITLES_SPLIT!r} split")
    ds.corpus = {d: Document("", doc.text) for d, doc in ds.corpus.items() if doc.text.strip()}
    ds.queries = {d: doc.title.strip() for d, doc in pairs.items()}
    ds.qrels = {d: {d: 1} for d in pairs}
    ds.split = TITLES_SPLIT
    return ds


def load_beir(dataset: str | Path, split: str | None = None, data_dir: str | Path | None = None,
              limit: int | None = None) -> BeirDataset:
    """Corpus (first `limit` documents if given), the split's judged queries and their qrels. The split of a
    folder defaults to test (`train-dev` and `train-fit` are carved from train: CARVED_SPLITS; `titles` is made
    from the corpus alone: TITLES_SPLIT); an `irds:` id names its split itself (`irds:beir/scifact/test`), or takes it
    from `split` (`irds:beir/scifact` + `test`)."""
    if is_irds(dataset):
        from .irds import load_irds

        return load_irds(f"{dataset}/{split}" if split else str(dataset), limit=limit)
    split = split or "test"
    ds = load_corpus(dataset, data_dir, limit)
    if split == TITLES_SPLIT:
        return title_queries(ds)
    qrels = read_split_qrels(ds.path, split)
    all_queries = {str(r["_id"]): str(r["text"]) for r in read_jsonl(ds.path / "queries.jsonl", ("_id", "text"))}
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise LsrError(f"{ds.path}: {len(missing)} judged queries of split {split!r} are not in queries.jsonl "
                       f"(first: {missing[0]!r})")
    if not qrels:
        raise LsrError(f"{ds.path}: split {split!r} judges no queries")
    ds.queries = {q: all_queries[q] for q in qrels}
    ds.qrels = qrels
    ds.split = split
    return ds
