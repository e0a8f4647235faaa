"""`lsr index build --engine ray`: the corpus encoded by a pool of Ray Data encoder actors, written as a sharded
index folder (`lsr.index.shards`) that equals the single-process build exactly.

How it runs:
- The driver reads and checks the corpus with the same reader as the plain build (one error path for bad
  files) and plans the encoder's batches (`document_batches`: length-sorted, as `encode_documents` runs
  them). Consecutive batches are grouped into work units of about `UNIT_DOCS` documents.
- Ray Data runs the units through `map_batches` on an `ActorPoolStrategy` of `workers` stateful actors: one
  model load per actor (a GPU per actor where the cluster has them, else a fraction of the CPUs, so the
  actors plus Ray Data's own task never ask for more than Ray has: it hangs silently otherwise). Each actor
  encodes each batch alone, which gives the same rows bit for bit as the single process (`length_batches`).
  A dead actor is restarted by Ray and its unit retried (`MAX_RETRIES`); past that the build fails with one line.
- The driver collects the rows, fits the one quantisation scale over all of them (as the plain build does),
  and writes each shard with `IndexWriter` into the staged folder; the manifest last, every shard checked,
  one rename publishes it (`ShardedWriter`).

Without `ray_address` a local Ray is started on 127.0.0.1 with the machine's cores; with it, the same code runs
on a cluster (the output folder must then be on storage the driver writes). The driver holds the encoded
vectors until the scale is known (the same memory as a plain build); the shards are written one at a time.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lsr.encoders.dense import dense_batches
from lsr.encoders.provider import load_dense_encoder, model_identity
from lsr.index import LsrError, SparseBatch
from lsr.index.errors import EngineUnavailable
from lsr.index.files import FAILPOINT_ENV, FAILPOINT_ONCE_ENV, check_writable_target, failpoint
from lsr.index.ray_shards import start_ray
from lsr.index.shards import shard_ranges
from lsr.index.storage import is_lsr_index

from .beir import BeirDataset

Log = Callable[[str], None]
UNIT_DOCS = 256  # documents per Ray Data row (a few encoder batches): small enough to spread, large to amortise
MAX_RETRIES = 3  # restarts of a dead encoder actor, and retries of its unit, before the build fails


def check_ray_build(workers: int, shards: int, num_docs: int) -> None:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise LsrError(f"--workers must be a positive integer, got {workers!r}")
    shard_ranges(num_docs, shards)


def _units(batches: list[np.ndarray], unit_docs: int) -> list[list[np.ndarray]]:
    units, current, size = [], [], 0
    for b in batches:
        current.append(b)
        size += len(b)
        if size >= unit_docs:
            units.append(current)
            current, size = [], 0
    return units + ([current] if current else [])


class EncodeActor:
    """A Ray Data actor: loads the models once, then encodes work units (rows of planned batches)."""

    def __init__(self, model: str, options: dict[str, Any], dense: str | None, dense_max_length: int | None,
                 threads: int) -> None:
        import torch

        from .pipeline import EncoderOptions, load_sparse_encoder

        torch.set_num_threads(max(1, threads))
        opts = EncoderOptions(**{**options, "show_progress": False})
        self.sparse = load_sparse_encoder(model, opts)
        self.dense = (load_dense_encoder(dense, max_length=dense_max_length, batch_size=opts.batch_size)
                      if dense else None)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"unit": [], "kind": [], "indptr": [], "term_ids": [], "weights": [], "dense": []}
        for unit, kind, texts, sizes in zip(rows["unit"], rows["kind"], rows["texts"], rows["sizes"]):
            failpoint("ray-encode")
            texts, bounds = list(texts), np.cumsum([0, *sizes])
            encoder = self.sparse if kind == "sparse" else self.dense
            assert encoder is not None
            parts = [encoder.encode_documents(texts[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
            out["unit"].append(int(unit))
            out["kind"].append(str(kind))
            if kind == "sparse":
                batch = SparseBatch.concat(parts)
                out["indptr"].append(batch.indptr.astype(np.int64).tobytes())
                out["term_ids"].append(batch.term_ids.astype(np.int32).tobytes())
                out["weights"].append(batch.weights.astype(np.float32).tobytes())
                out["dense"].append(b"")
            else:
                out["indptr"].append(b"")
                out["term_ids"].append(b"")
                out["weights"].append(b"")
                out["dense"].append(np.concatenate(parts).astype(np.float32).tobytes())
        return out


def _in_corpus_order(units: list[list[np.ndarray]]) -> np.ndarray:
    """The permutation that puts the concatenated unit rows back in corpus order."""
    positions = np.concatenate([np.concatenate(u) for u in units]).astype(np.int64)
    return np.argsort(positions, kind="stable")


def build_index_ray(dataset: BeirDataset, model: str, out: str | Path, options, *, workers: int = 2,
                    shards: int = 1, ray_address: str | None = None, dense: str | None = None, bits: int = 8,
                    overwrite: bool = False, documents: bool = True, log: Log | None = None,
                    unit_docs: int = UNIT_DOCS, quantization=None,
                    max_retries: int = MAX_RETRIES) -> dict[str, Any]:
    """The sharded index of `dataset` built on Ray (see the module docstring); the build's figures. An encoder
    actor that dies is restarted, and its unit retried, `max_retries` times before the build fails."""
    from tqdm.auto import tqdm

    from .pipeline import _documents, check_build, collection_parts, load_sparse_encoder, write_shards

    out = Path(out)
    texts = [d.contents for d in dataset.corpus.values()]
    check_build(model, dense=dense, bits=bits, backend="lsr")
    check_ray_build(workers, shards, len(texts))
    check_writable_target(out, is_lsr_index if overwrite else None)
    start = time.perf_counter()
    resources = start_ray(ray_address)
    ray_start_s = time.perf_counter() - start
    import ray

    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    # the actors' CPUs plus one Ray Data task must fit in what Ray has, or Ray Data waits forever
    actor_cpus = 0 if gpus else max(0.1, round((cpus - 1) / workers, 2)) if cpus > 1 else 0.5 / workers
    threads = max(1, int((os.cpu_count() or 1) // workers)) if not ray_address else max(1, int(actor_cpus))

    encoder = load_sparse_encoder(model, options)  # plans the batches, and records what the index needs
    plans = {"sparse": _units(encoder.document_batches(texts), unit_docs)}
    dense_max_length, dim = None, 0
    if dense:
        dense_encoder = load_dense_encoder(dense, max_length=options.max_length, batch_size=options.batch_size)
        dense_max_length, dim = dense_encoder.max_length, dense_encoder.dim
        plans["dense"] = _units(dense_batches(texts, options.batch_size), unit_docs)
    rows = [{"unit": i, "kind": kind, "texts": [texts[j] for b in unit for j in b], "sizes": [len(b) for b in unit]}
            for kind, units in plans.items() for i, unit in enumerate(units)]
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO lines and progress notes; ours counts documents
    ray.data.DataContext.get_current().enable_progress_bars = False
    option_fields = {"max_length": options.max_length, "batch_size": options.batch_size, "head": options.head}
    # crash tests' failpoints travel to the actors (a local Ray's workers do not inherit this process's environment)
    failpoints = {k: os.environ[k] for k in (FAILPOINT_ENV, FAILPOINT_ONCE_ENV) if k in os.environ}
    encode_start = time.perf_counter()
    with warnings.catch_warnings():  # Ray 2.60 names no parameter for restarts yet; its kwargs still work
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            EncodeActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_args=(model, option_fields, dense, dense_max_length, threads),
            num_cpus=actor_cpus or None, num_gpus=1 if gpus else None,
            runtime_env={"env_vars": failpoints} if failpoints else None,
            max_restarts=max_retries, max_task_retries=max_retries)
    results: dict[str, list] = {kind: [None] * len(units) for kind, units in plans.items()}
    try:
        with tqdm(total=len(texts) * len(plans), desc="encoding documents (ray)", unit="doc",
                  disable=not options.show_progress) as bar:
            for row in ds.iter_rows():
                i, kind = int(row["unit"]), str(row["kind"])
                if kind == "sparse":
                    indptr = np.frombuffer(row["indptr"], dtype=np.int64).copy()
                    results[kind][i] = SparseBatch(indptr, np.frombuffer(row["term_ids"], np.int32).copy(),
                                                   np.frombuffer(row["weights"], np.float32).copy(),
                                                   encoder.vocab_size)
                else:
                    results[kind][i] = np.frombuffer(row["dense"], np.float32).reshape(-1, dim).copy()
                bar.update(sum(len(b) for b in plans[kind][i]))
    except (ray.exceptions.RayError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EngineUnavailable(f"the Ray build failed (an encoder worker died {max_retries + 1} times or Ray "
                                f"stopped): {first[:300]}") from None
    encode_s = time.perf_counter() - encode_start
    if any(r is None for kind in results for r in results[kind]):
        raise LsrError("the Ray build returned fewer units than it was given")
    docs = SparseBatch.concat(results["sparse"]).select(_in_corpus_order(plans["sparse"]))
    vectors = (np.concatenate(results["dense"])[_in_corpus_order(plans["dense"])]
               if dense else None)
    figures = {"encode_s": encode_s, "docs_per_s": len(texts) / max(encode_s, 1e-9), "ray_start_s": ray_start_s,
               "workers": workers, "shards": shards}
    info = {**model_identity(model), "max_length": encoder.max_length, "dataset": dataset.name,
            "build": figures, "backend": "lsr", "engine": "ray"}
    dense_meta = ({**model_identity(dense), "max_length": dense_max_length, "dataset": dataset.name}
                  if dense else None)
    write_start = time.perf_counter()
    write_shards(out, docs, dataset.doc_ids, shards=shards, vocab_size=encoder.vocab_size, bits=bits, info=info,
                 vectors=vectors, dense_meta=dense_meta, documents=_documents(dataset) if documents else None,
                 overwrite=overwrite, log=log, show_progress=options.show_progress, quantization=quantization,
                 parts=collection_parts(encoder, dataset))
    return {**figures, "index_build_s": time.perf_counter() - write_start}
