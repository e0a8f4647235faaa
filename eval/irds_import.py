"""`lsr data import FOLDER --irds beir/NAME`: the BEIR archive ir_datasets would download, placed at the path
it reads it from (`$IR_DATASETS_HOME/beir/scifact/source.zip`), so `irds:beir/scifact/test` then runs with no
network (see `import_beir` for what is verified)."""
from __future__ import annotations

import io
import shutil
import zipfile
from collections import Counter
from pathlib import Path

from lsr.index import LsrError
from lsr.index.files import atomic_write

from .beir import read_jsonl, read_qrels
from .irds import IRDS_PREFIX, _ir_datasets, _quiet, _splits_of

# What ir_datasets caches beside a BEIR archive once it has read it (ir_datasets/datasets/beir.py): stale when
# the archive is replaced, so `import_beir(..., overwrite=True)` removes them with it.
BEIR_DERIVED = ("docs.pklz4", "queries.json", "irds_version.txt", "*.qrels")


def _beir_entry(irds_id: str) -> tuple[str, dict]:
    """(name, ir_datasets' download entry) for `beir/<name>`; anything else is one line."""
    irds = _ir_datasets()
    dataset_id = irds_id.removeprefix(IRDS_PREFIX)
    downloads = irds.util.DownloadConfig.context("beir").contents()
    name = dataset_id.removeprefix("beir/")
    entry = downloads.get(name) if dataset_id.startswith("beir/") else None
    if not entry or name == "cqadupstack" or not entry.get("cache_path", "").endswith("source.zip"):
        known = sorted(n for n, e in downloads.items() if n != "cqadupstack" and "cache_path" in e)
        raise LsrError(f"--irds {irds_id!r}: lsr data import takes a BEIR dataset id, beir/<name> with name one of "
                       f"{', '.join(known)}")
    return name, entry


def _published_counts(name: str) -> dict[str, dict]:
    """What ir_datasets publishes for beir/<name> (its etc/metadata.json): documents, queries, and per split
    the qrels count and the count of each relevance value."""
    irds = _ir_datasets()
    meta = irds.util.metadata.default_metadata_provider
    dataset_id = f"beir/{name}"
    splits = {s.rsplit("/", 1)[-1]: s for s in _splits_of(dataset_id)}
    if not splits:  # one split, registered as beir/<name> itself: BEIR's single-split sets are all "test"
        splits = {"test": dataset_id}
    return {"docs": meta.get_metadata(dataset_id, "docs"), "queries": meta.get_metadata(dataset_id, "queries"),
            "qrels": {split: meta.get_metadata(sid, "qrels") for split, sid in splits.items()}}


def _check_folder(folder: Path, name: str) -> dict:
    """The folder's counts against ir_datasets' published ones; every difference named in one line."""
    expected = _published_counts(name)
    docs = len(read_jsonl(folder / "corpus.jsonl", ("_id",)))
    queries = len(read_jsonl(folder / "queries.jsonl", ("_id", "text")))
    found = {"docs": docs, "queries": queries, "qrels": {}}
    wrong = []
    for what, count in (("documents", docs), ("queries", queries)):
        want = expected["docs" if what == "documents" else "queries"].get("count")
        if want is not None and want != count:
            wrong.append(f"{count} {what} (ir_datasets: {want})")
    for split, meta in expected["qrels"].items():
        qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
        by_value = Counter(str(r) for judged in qrels.values() for r in judged.values())
        found["qrels"][split] = sum(by_value.values())
        if meta.get("count") is not None and meta["count"] != found["qrels"][split]:
            wrong.append(f"{found['qrels'][split]} {split} qrels (ir_datasets: {meta['count']})")
        want_values = meta.get("fields", {}).get("relevance", {}).get("counts_by_value")
        if want_values is not None and dict(by_value) != want_values:
            wrong.append(f"{split} relevance counts {dict(by_value)} (ir_datasets: {want_values})")
    if wrong:
        raise LsrError(f"{folder} is not ir_datasets' beir/{name}: {'; '.join(wrong)}")
    return found


def _write_archive(folder: Path, name: str, splits) -> bytes:
    """The BEIR archive's layout (`<name>/corpus.jsonl`, `<name>/queries.jsonl`, `<name>/qrels/<split>.tsv`),
    the files' bytes as they are, fixed timestamps: the same folder gives the same archive."""
    buffer = io.BytesIO()
    top = name.split("/")[0]  # beir.py: members live under the first part of the name (webis-touche2020/v2)
    members = ["corpus.jsonl", "queries.jsonl", *(f"qrels/{s}.tsv" for s in splits)]
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for member in members:
            info = zipfile.ZipInfo(f"{top}/{member}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(folder / member, "rb") as src, z.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return buffer.getvalue()


def _read_back(name: str, splits) -> dict:
    """What ir_datasets itself reads from the placed archive: documents, queries and each split's qrels."""
    irds = _ir_datasets()
    dataset_id = f"beir/{name}"
    with _quiet():
        counts = {"docs": sum(1 for _ in irds.load(dataset_id).docs_iter()),
                  "queries": sum(1 for _ in irds.load(dataset_id).queries_iter()), "qrels": {}}
        for split in splits:
            split_id = f"{dataset_id}/{split}" if f"{dataset_id}/{split}" in set(irds.registry) else dataset_id
            counts["qrels"][split] = sum(1 for _ in irds.load(split_id).qrels_iter())
    return counts


def import_beir(source: str | Path, irds_id: str, *, overwrite: bool = False) -> dict:
    """Place a local BEIR copy (an extracted folder or the official zip) where ir_datasets reads `irds_id`
    (`beir/<name>`) from: `$IR_DATASETS_HOME/beir/<cache_path>` (`scifact/source.zip`).

    What is verified, and how:
    - the official zip: its MD5 against the one ir_datasets expects (ir_datasets' own check, `HashStream`,
      the check every download of it passes), then copied as it is;
    - an extracted folder: the zip ir_datasets expects is not there to hash, and a zip rebuilt from the
      extracted files never has the official MD5 (timestamps, compression), so the MD5 is *not* verified.
      Instead the documents, queries, each split's qrels and their relevance values are counted against the
      figures ir_datasets publishes for the dataset (its metadata.json), before anything is written, and the
      placed archive is read back through ir_datasets' own readers and counted again. The contents of the
      records (texts, ids) are not checked against the official files: nothing here holds their hashes.
    An archive already in place is kept unless it is byte-identical (nothing to do) or `overwrite` (then
    ir_datasets' caches derived from it go too)."""
    irds = _ir_datasets()
    name, entry = _beir_entry(irds_id)
    source = Path(source).expanduser()
    target = Path(irds.util.home_path()) / "beir" / entry["cache_path"]
    splits = list(_published_counts(name)["qrels"])
    if source.is_file() and source.suffix == ".zip":
        hasher = irds.util.HashVerifier(entry["expected_md5"], "md5")
        try:
            with open(source, "rb") as f, hasher:
                while chunk := f.read(1 << 20):
                    hasher.update(chunk)
        except irds.util.HashVerificationError as e:
            raise LsrError(f"{source} is not the archive ir_datasets expects for beir/{name}: {e}") from None
        archive, verified = source.read_bytes(), f"MD5 {entry['expected_md5']} as ir_datasets expects"
    elif (source / "corpus.jsonl").is_file():
        found = _check_folder(source, name)
        archive = _write_archive(source, name, splits)
        verified = (f"{found['docs']} documents, {found['queries']} queries, qrels "
                    + ", ".join(f"{s} {n}" for s, n in found["qrels"].items())
                    + " as ir_datasets publishes (rebuilt archive: the official MD5 is not checked)")
    else:
        raise LsrError(f"{source}: not a BEIR folder (no corpus.jsonl) nor the dataset's .zip archive")
    if target.exists():
        if target.is_file() and target.read_bytes() == archive:
            return {"target": target, "verified": verified, "placed": False}
        if not overwrite:
            raise LsrError(f"{target} already holds another copy of beir/{name}; --overwrite replaces it (and "
                           "ir_datasets' caches derived from it)")
        for pattern in BEIR_DERIVED:
            for derived in target.parent.glob(pattern):
                shutil.rmtree(derived) if derived.is_dir() else derived.unlink()
    atomic_write(target, archive)
    read = _read_back(name, splits)
    if source.suffix != ".zip" and read != found:
        target.unlink()
        raise LsrError(f"ir_datasets read back {read} from {target}, not {found}: removed it")
    return {"target": target, "verified": verified, "placed": True, "counts": read}
