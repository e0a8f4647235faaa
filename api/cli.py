"""The `lsr` command line: encode, index build/verify, search, serve, eval, train, data import, model export,
bench. Bad input exits 2 with one line (`error: ...`), before any model loads wherever it can be checked then."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lsr.index import ALGORITHMS, FuseIn, Fusion, LsrError, Mode, PrfPlacement, Ranking, SearchOptions
from lsr.index.reorder import BLOCK_SIZE as REORDER_BLOCK_SIZE

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Learned sparse retrieval: encode, index, search, serve and evaluate BEIR datasets.")
index_app = typer.Typer(no_args_is_help=True, help="Build and verify index folders.")
app.add_typer(index_app, name="index")
export_app = typer.Typer(no_args_is_help=True, help="Copy an index into another engine.")
app.add_typer(export_app, name="export")
model_app = typer.Typer(no_args_is_help=True, help="Models: export to other libraries' layouts.")
app.add_typer(model_app, name="model")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: place local copies where ir_datasets reads them.")
app.add_typer(data_app, name="data")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: the SPLADE head, encoding, query processing, "
                        "the REST API (rows written as JSON).")
app.add_typer(bench_app, name="bench")

# The SPLADE head backends: "auto" and lsr.kernels.BACKENDS (named here so the CLI starts without torch;
# tests/test_cli.py checks that the two agree).
HeadName = Enum("HeadName", {name: name for name in ("auto", "reference", "torch", "triton")}, type=str)
SearchBackend = Enum("SearchBackend", {name: name for name in ("lsr", "lucene", "milvus")},
                     type=str)  # index.lucene.BACKENDS
DEFAULT = Ranking()

Dataset = Annotated[str, typer.Option("--dataset", help="BEIR dataset name (under the data dir), folder, or "
                                       "irds:<ir_datasets id> (irds:beir/scifact/test)")]
Split = Annotated[Optional[str], typer.Option("--split", help="qrels split: test, dev, train, or train-dev / "
                                              "train-fit (carved from train: eval.beir.CARVED_SPLITS), or titles "
                                              "(each title a query for its own text: eval.beir.TITLES_SPLIT) [test; "
                                              "an irds: id names its own]")]
Model = Annotated[str, typer.Option("--model", help="registered name (splade-tiny, bm25, ...), folder or hub id")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="folder of BEIR datasets [env LSR_DATA_DIR]")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="only the first N corpus documents")]
MaxLength = Annotated[int, typer.Option("--max-length", min=1, help="tokens per text")]
ModelMaxLength = Annotated[Optional[int], typer.Option("--max-length", min=1, help="tokens per text [the model's "
                                                       "own setting (lsr_encoder.json), else 256]")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="texts per encoder batch")]
Head = Annotated[HeadName, typer.Option("--head", help="SPLADE head kernel")]
BackendOpt = Annotated[SearchBackend, typer.Option("--backend", help="search backend: lsr (ours), lucene (Lucene "
                                                   "impact search through pyserini, built into the folder) or "
                                                   "milvus (a Milvus collection, see --milvus-uri)")]
MilvusUri = Annotated[Optional[str], typer.Option("--milvus-uri", help="Milvus to write the collection to: "
                                                  "http://HOST:19530 or a Milvus Lite file [a Milvus Lite file in "
                                                  "the index folder]; token from LSR_MILVUS_TOKEN")]
Collection = Annotated[Optional[str], typer.Option("--collection", help="Milvus collection name [lsr]; on a "
                                                   "server a build-unique suffix is added")]
BitsChoice = Enum("BitsChoice", {"b8": "8", "b16": "16"}, type=str)  # index.quantize.IMPACT_DTYPES
Bits = Annotated[BitsChoice, typer.Option("--bits", help="impact quantisation bits")]
DenseModel = Annotated[Optional[str], typer.Option("--dense", help="also build a dense store with this model "
                                                    "(e.g. minilm)")]
ModeOpt = Annotated[Mode, typer.Option("--mode", help="sparse, dense or hybrid")]
PrfOpt = Annotated[bool, typer.Option("--prf", help="pseudo-relevance feedback (Rocchio / Vector-PRF)")]
FusionOpt = Annotated[Fusion, typer.Option("--fusion", help="hybrid fusion: linear (min-max interpolation) or rrf")]
AlphaOpt = Annotated[float, typer.Option("--alpha", min=0.0, max=1.0,
                                         help="hybrid weight of the sparse list (linear fusion)")]
PlacementOpt = Annotated[PrfPlacement, typer.Option("--prf-placement",
                                                    help="hybrid PRF: interpolate before, after or both")]
FuseInOpt = Annotated[FuseIn, typer.Option("--fuse-in", help="hybrid: fuse here (lsr) or in the index's backend "
                                           "(Milvus's hybrid search)")]
# how the sparse list is searched (lsr.index.SearchOptions; `lsr serve` reads each from LSR_<NAME> too)
AlgorithmName = Enum("AlgorithmName", {name: name for name in ALGORITHMS}, type=str)
SearchAlgorithm = Annotated[Optional[AlgorithmName], typer.Option(
    "--algorithm", help="our backend's sparse algorithm [the index's: exhaustive, or what `lsr index reorder` "
    "recorded]; exact unless the options below make it approximate")]
PruneFactor = Annotated[Optional[float], typer.Option(
    "--prune-factor", min=0.0, max=1.0, help="blockmax, maxscore: below 1, approximate (a block or term is "
    "skipped unless its bound times this beats the k-th best) [1: exact]")]
Budget = Annotated[Optional[int], typer.Option("--budget", min=1, help="impact: postings read per query "
                                               "(approximate) [all: exact]")]
Rescore = Annotated[Optional[int], typer.Option("--rescore", min=1, help="impact: the best N candidates by partial "
                                                "score scored exactly from the forward index")]
MaxQueryTerms = Annotated[Optional[int], typer.Option("--max-query-terms", min=1, help="approximate: the heaviest "
                                                      "N query terms only [all]")]
DropRatio = Annotated[Optional[float], typer.Option("--drop-ratio", min=0.0, max=0.99, help="Milvus backend: "
                                                    "approximate sparse search ignoring this share of the smallest "
                                                    "query weights (Milvus's drop_ratio_search) [0: exact]")]
MilvusIndexName = Enum("MilvusIndexName", {"inverted": "SPARSE_INVERTED_INDEX", "wand": "SPARSE_WAND"}, type=str)
MilvusIndex = Annotated[MilvusIndexName, typer.Option("--milvus-index", help="Milvus's sparse index: inverted "
                                                      "(exact) or wand (SPARSE_WAND, it prunes)")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace an existing lsr index folder (nothing else)")]
EngineName = Enum("EngineName", {name: name for name in ("local", "ray")}, type=str)
Shards = Annotated[int, typer.Option("--shards", help="split the index into N shards over consecutive document "
                                     "ranges (a sharded folder, searched as one)")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="a running Ray cluster (ray://HOST:PORT or "
                                                   "HOST:PORT) [default: start a local Ray on 127.0.0.1]")]
CollectionIdf = Annotated[Optional[float], typer.Option("--collection-idf-weight", min=0.0, max=1.0,
                          help="inference-free models: weight of the indexed collection's own BM25 IDF blended "
                          "with the trained table (0: the table alone, 1: the collection's) [the model's "
                          "recorded weight]")]
# where encoders (and `lsr train`) run: lsr.encoders.device resolves it before any model loads
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N [auto: CUDA if there is one]")]


def _device(name: str | None) -> str | None:
    """The --device name, checked here (bad names, CUDA where there is none: one line, exit 2)."""
    if name is None:
        return None
    from lsr.encoders.device import resolve_device

    resolve_device(name)
    return name


def _options(max_length: int | None, batch_size: int, head: HeadName, device: str = "auto",
             collection_idf_weight: float | None = None):
    from lsr.eval.pipeline import EncoderOptions

    return EncoderOptions(max_length=max_length, batch_size=batch_size, head=head.value,
                          show_progress=sys.stderr.isatty(), device=_device(device),
                          collection_idf_weight=collection_idf_weight)


def _search_given(algorithm: AlgorithmName | None, prune_factor: float | None, budget: int | None,
                  rescore: int | None, max_query_terms: int | None, drop_ratio: float | None) -> dict:
    """The search options given on the command line, by their `SearchOptions` names (None: not given)."""
    given = {"algorithm": algorithm.value if algorithm else None, "prune_factor": prune_factor, "budget": budget,
             "rescore": rescore, "max_query_terms": max_query_terms, "drop_ratio": drop_ratio}
    return {k: v for k, v in given.items() if v is not None}


def _ranking(mode: Mode, prf: bool, fusion: Fusion, alpha: float, placement: PrfPlacement,
             fuse_in: FuseIn = DEFAULT.fuse_in) -> Ranking:
    return DEFAULT.with_(mode=mode, prf=prf, fusion=fusion, alpha=alpha, prf_placement=placement, fuse_in=fuse_in)


def _note(message: str) -> None:
    typer.echo(message, err=True)


@app.command()
def encode(dataset: Dataset, model: Model, out: Annotated[Path, typer.Option("--out", help="output .npz")],
           split: Split = None, limit: Limit = None, queries: Annotated[bool, typer.Option(
               "--queries", help="encode the split's judged queries instead of the corpus")] = False,
           max_length: ModelMaxLength = None, batch_size: BatchSize = 32, head: Head = HeadName.auto,
           data_dir: DataDir = None, device: Device = "auto") -> None:
    """Encode corpus documents (file order) or queries into a scipy CSR float32 .npz."""
    from lsr.eval.beir import load_beir
    from lsr.eval.pipeline import load_sparse_encoder

    options = _options(max_length, batch_size, head, device)
    ds = load_beir(dataset, split, data_dir, limit)
    encoder = load_sparse_encoder(model, options)
    if queries:
        vectors = encoder.encode_queries(list(ds.queries.values()))
    else:
        vectors = encoder.encode_documents([d.contents for d in ds.corpus.values()])
    out.parent.mkdir(parents=True, exist_ok=True)
    vectors.save_npz(out)
    typer.echo(f"wrote {len(vectors)} vectors ({vectors.nnz / len(vectors):.1f} nonzeros each) to {out}")


@index_app.command("build")
def index_build(dataset: Dataset, model: Model, out: Annotated[Path, typer.Option("--out", help="index folder")],
                dense: DenseModel = None, limit: Limit = None, bits: Bits = BitsChoice.b8, overwrite: Overwrite = False,
                max_length: ModelMaxLength = None, batch_size: BatchSize = 32, head: Head = HeadName.auto,
                backend: BackendOpt = SearchBackend.lsr, milvus_uri: MilvusUri = None, collection: Collection = None,
                milvus_index: MilvusIndex = MilvusIndexName.inverted, data_dir: DataDir = None,
                device: Device = "auto",
                engine: Annotated[EngineName, typer.Option("--engine", help="local: this process; ray: a pool of "
                                                           "Ray Data encoder actors (a sharded folder)")] = EngineName.local,
                workers: Annotated[int, typer.Option("--workers", help="Ray encoder actors (--engine ray)")] = 2,
                shards: Shards = 1, ray_address: RayAddress = None,
                quantization_from: Annotated[Optional[Path], typer.Option(
                    "--quantization-from", help="take the impact scale of this index, so the new one can be "
                    "merged with it (`lsr index merge`)")] = None) -> None:
    """Encode a BEIR corpus into an index folder OUT: the impact index, the documents' text, a dense store with
    --dense, a Lucene index with --backend lucene, a Milvus collection with --backend milvus; --shards N writes
    N shards, --engine ray encodes on Ray. The folder appears whole, in one rename, once everything is written
    and verified; until then an index already at OUT stays as it was."""
    from lsr.eval.beir import load_corpus
    from lsr.eval.distributed import build_index_ray, check_ray_build
    from lsr.eval.pipeline import build_index, check_build, check_milvus_options, quantization_of
    from lsr.index.files import check_writable_target
    from lsr.index.storage import is_lsr_index

    check_build(model, dense=dense, bits=int(bits.value), backend=backend.value)  # before the corpus and any model load
    if (engine == EngineName.ray or shards != 1) and backend != SearchBackend.lsr:
        raise LsrError("--engine ray and --shards build the lsr backend only (for Milvus: `lsr export milvus` "
                       "the sharded folder afterwards)")
    if engine != EngineName.ray and (workers != 2 or ray_address):
        raise LsrError("--workers and --ray-address need --engine ray")
    if engine == EngineName.ray and device != "auto":
        raise LsrError("--device goes with --engine local (Ray places each actor on a GPU where it has them)")
    options = _options(max_length, batch_size, head, device)
    check_ray_build(workers, shards, max(shards, 1))
    check_milvus_options(backend.value, milvus_uri, collection, milvus_index.value)
    check_writable_target(out, is_lsr_index if overwrite else None)
    ds = load_corpus(dataset, data_dir, limit)
    check_ray_build(workers, shards, len(ds.corpus))
    quant = quantization_of(quantization_from, int(bits.value)) if quantization_from else None
    if engine == EngineName.ray:
        figures = build_index_ray(ds, model, out, options, workers=workers, shards=shards, ray_address=ray_address,
                                  dense=dense, bits=int(bits.value), overwrite=overwrite, log=_note,
                                  quantization=quant)
    else:
        figures = build_index(ds, model, out, options, dense=dense, bits=int(bits.value), overwrite=overwrite,
                              backend=backend.value, shards=shards, log=_note, milvus_uri=milvus_uri,
                              collection=collection, milvus_index=milvus_index.value, quantization=quant)
    typer.echo(f"indexed {len(ds.corpus)} documents into {out}" + (f" ({shards} shards)" if shards > 1 else "")
               + f" ({figures['docs_per_s']:.1f} docs/s encoding"
               + (f", dense {figures['dense_docs_per_s']:.1f} docs/s" if dense and 'dense_docs_per_s' in figures
                  else "") + ")")


@index_app.command("merge")
def index_merge(out: Annotated[Path, typer.Argument(help="the sharded index folder to write")],
                indexes: Annotated[list[Path], typer.Argument(help="index folders (plain or sharded), in order")],
                shards: Annotated[Optional[int], typer.Option("--shards", help="re-cut the documents into N even "
                                                              "shards [default: keep every input shard]")] = None,
                overwrite: Overwrite = False) -> None:
    """Fold indexes of distinct documents into one sharded folder OUT (their documents in the order given), or
    re-shard one index with --shards N. Inputs must share model, quantisation and parts."""
    from lsr.index.shards import merge_indexes

    done = merge_indexes(out, indexes, shards=shards, overwrite=overwrite, log=_note)
    typer.echo(f"merged {done['inputs']} index(es), {done['input_shards']} shard(s), {done['num_docs']:,} documents "
               f"into {out} ({done['shards']} shards)")


@index_app.command("reorder")
def index_reorder(index: Annotated[Path, typer.Argument(help="index folder to read (left as it is)")],
                  out: Annotated[Path, typer.Argument(help="the reordered index folder to write")],
                  block_size: Annotated[int, typer.Option(
                      "--block-size", min=1, help="documents per block of the block maxima (16 measured faster "
                      "than 32 at 1M and 10M documents)")] = REORDER_BLOCK_SIZE,
                  seed: Annotated[int, typer.Option("--seed", help="the clustering's seed")] = 0,
                  algorithm: Annotated[str, typer.Option(
                      "--algorithm", help="the exact algorithm OUT is searched with (search, serve, eval)")]
                  = "blockmax",
                  overwrite: Overwrite = False) -> None:
    """Write INDEX again at OUT with similar documents next to each other (a recursive spherical k-means order),
    searched with exact blockmax, which skips more there: same hits, documents' text and dense vectors carried."""
    import time

    from lsr.index.reorder import reorder_index

    start = time.perf_counter()
    reorder_index(index, out, block_size=block_size, seed=seed, algorithm=algorithm, overwrite=overwrite, log=_note)
    typer.echo(f"reordered {index} into {out} in {time.perf_counter() - start:.1f} s")


@export_app.command("milvus")
def export_milvus(index: Annotated[Path, typer.Argument(help="index folder (an lsr or lucene one, plain or sharded)")],
                  milvus_uri: MilvusUri = None, collection: Collection = None,
                  milvus_index: MilvusIndex = MilvusIndexName.inverted,
                  batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="documents per insert")]
                  = 1000) -> None:
    """Stream an index's impacts (and dense vectors) into a new Milvus collection (one per shard of a sharded
    folder), then re-publish the folder (atomically) recording it: search, serve and eval on INDEX then rank
    through Milvus."""
    from lsr.index.shards import export_any_to_milvus

    records = export_any_to_milvus(index, uri=milvus_uri, collection=collection, batch_size=batch_size,
                                   sparse_index=milvus_index.value, progress=sys.stderr.isatty(), log=_note)
    for i, record in enumerate(records):
        where = f" shard {i}:" if len(records) > 1 else ""
        typer.echo(f"{index}:{where} {record['num_rows']:,} documents in Milvus collection {record['collection']!r} "
                   f"at {record['uri']}")


@index_app.command("verify")
def index_verify(index: Annotated[Path, typer.Argument(help="index folder")]) -> None:
    """Check every file of an index folder: SHA-256 against meta.json, every structural invariant of the
    postings, forward index and block maxima, the dense store and docs.jsonl typed and matched to the index."""
    import time

    from lsr.index.shards import verify_any

    start = time.perf_counter()
    checked = verify_any(index)
    typer.echo(f"{index}: ok ({checked['files']} files, {checked['bytes']:,} bytes, {checked['num_docs']:,} "
               f"documents, {checked['num_postings']:,} postings) in {time.perf_counter() - start:.1f} s")
    if checked["not_covered"]:
        typer.echo(f"note: built by an older lsr; not covered by checksums: {', '.join(checked['not_covered'])} "
                   "(rebuild to cover them)")


@app.command()
def search(index: Annotated[Path, typer.Argument(help="index folder")],
           query: Annotated[str, typer.Argument(help="query text")],
           k: Annotated[int, typer.Option("-k", min=1, max=100_000, help="hits to return")] = 10,
           mode: ModeOpt = DEFAULT.mode, prf: PrfOpt = DEFAULT.prf, fusion: FusionOpt = DEFAULT.fusion,
           alpha: AlphaOpt = DEFAULT.alpha, prf_placement: PlacementOpt = DEFAULT.prf_placement,
           fuse_in: FuseInOpt = DEFAULT.fuse_in, algorithm: SearchAlgorithm = None,
           prune_factor: PruneFactor = None, budget: Budget = None, rescore: Rescore = None,
           max_query_terms: MaxQueryTerms = None, drop_ratio: DropRatio = None,
           as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Search an index folder with the model(s) it was built with."""
    from lsr.encoders.provider import open_service

    if not query.strip():
        raise LsrError("empty query")
    ranking = _ranking(mode, prf, fusion, alpha, prf_placement, fuse_in)
    options = SearchOptions(**_search_given(algorithm, prune_factor, budget, rescore, max_query_terms, drop_ratio))
    service = open_service(index, search_options=options)
    hits = service.search(query=query, k=k, ranking=ranking)
    if as_json:
        typer.echo(json.dumps([{"doc_id": h.doc_id, "score": h.score} for h in hits]))
        return
    for rank, hit in enumerate(hits, start=1):
        doc = service.documents.get(hit.doc_id)
        title = f"  {doc.title[:80]}" if doc and doc.title else ""
        typer.echo(f"{rank:>3}  {hit.score:9.4f}  {hit.doc_id}{title}")


@app.command()
def serve(index: Annotated[Path, typer.Argument(help="index folder")],
          host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
          engine: Annotated[Optional[EngineName], typer.Option("--engine", help="local: shards searched in threads "
                                                               "here; ray: on Ray actors [env LSR_ENGINE]")] = None,
          ray_address: RayAddress = None, algorithm: SearchAlgorithm = None, prune_factor: PruneFactor = None,
          budget: Budget = None, rescore: Rescore = None, max_query_terms: MaxQueryTerms = None,
          drop_ratio: DropRatio = None) -> None:
    """Serve the REST API and the search page over an index folder, plain or sharded (settings from LSR_*
    variables: timeouts, connection cap, API key, the search options as LSR_SEARCH_ALGORITHM, LSR_PRUNE_FACTOR,
    LSR_BUDGET, ...; see the README's Operations section)."""
    from pydantic import ValidationError

    from lsr.api.app import Settings
    from lsr.api.server import run
    from lsr.encoders.provider import open_service

    given = _search_given(algorithm, prune_factor, budget, rescore, max_query_terms, drop_ratio)
    if "algorithm" in given:
        given["search_algorithm"] = given.pop("algorithm")
    given.update({k: v for k, v in (("engine", engine.value if engine else None), ("ray_address", ray_address))
                  if v is not None})
    try:
        settings = Settings(index_dir=index, **given)
    except ValidationError as e:
        raise LsrError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
    service = open_service(index, **settings.service_options())
    if settings.warm_up:
        service.warm_up()
    run(settings, host=host, port=port, service=service)


@app.command("eval")
def eval_(dataset: Dataset, model: Model, split: Split = None, limit: Limit = None, dense: DenseModel = None,
          mode: ModeOpt = DEFAULT.mode, prf: PrfOpt = DEFAULT.prf, fusion: FusionOpt = DEFAULT.fusion,
          alpha: AlphaOpt = DEFAULT.alpha, prf_placement: PlacementOpt = DEFAULT.prf_placement,
          fuse_in: FuseInOpt = DEFAULT.fuse_in, algorithm: SearchAlgorithm = None,
          prune_factor: PruneFactor = None, budget: Budget = None, rescore: Rescore = None,
          max_query_terms: MaxQueryTerms = None, drop_ratio: DropRatio = None,
          depth: Annotated[int, typer.Option("--depth", min=1, max=100_000, help="hits ranked per query "
                                             "(the run's depth)")] = DEFAULT.depth,
          index: Annotated[Optional[Path], typer.Option("--index", help="reuse or keep the index here")] = None,
          json_out: Annotated[Optional[Path], typer.Option("--json", help="write the report as JSON")] = None,
          run_out: Annotated[Optional[Path], typer.Option("--run", help="write the TREC run file")] = None,
          bits: Bits = BitsChoice.b8, max_length: ModelMaxLength = None, batch_size: BatchSize = 32, head: Head = HeadName.auto,
          backend: BackendOpt = SearchBackend.lsr, milvus_uri: MilvusUri = None, data_dir: DataDir = None,
          device: Device = "auto", collection_idf_weight: CollectionIdf = None) -> None:
    """Evaluate a model on a BEIR split through the search service: nDCG@10, R@100, RR@10 and efficiency (with
    approximate search options, also recall@10 against the exact ranking)."""
    from lsr.eval.beir import load_beir
    from lsr.eval.pipeline import check_milvus_options, evaluate
    from lsr.eval.report import print_report
    from lsr.index import write_trec_run

    ranking = _ranking(mode, prf, fusion, alpha, prf_placement, fuse_in)
    search_options = SearchOptions(**_search_given(algorithm, prune_factor, budget, rescore, max_query_terms,
                                                   drop_ratio))
    check_milvus_options(backend.value, milvus_uri)
    options = _options(max_length, batch_size, head, device, collection_idf_weight)
    ds = load_beir(dataset, split, data_dir, limit)
    report = evaluate(ds, model, options, index_dir=index, bits=int(bits.value), dense=dense, ranking=ranking,
                      depth=depth, backend=backend.value, milvus_uri=milvus_uri,
                      search_options=search_options)
    print_report(report)
    if json_out:
        from lsr.index.files import atomic_write

        atomic_write(json_out, json.dumps(report.to_json(), indent=2))
    if run_out:
        run_out.parent.mkdir(parents=True, exist_ok=True)
        write_trec_run(report.run, run_out, tag=Path(model).name)


@data_app.command("import")
def data_import(folder: Annotated[Path, typer.Argument(help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) "
                                                   "or the dataset's official .zip")],
                irds: Annotated[str, typer.Option("--irds", help="the ir_datasets id it is (beir/scifact)")],
                overwrite: Annotated[bool, typer.Option("--overwrite", help="replace another copy already there")]
                = False) -> None:
    """Place a local BEIR copy where ir_datasets reads it (under $IR_DATASETS_HOME, default ~/.ir_datasets),
    checked against what ir_datasets publishes, so `--dataset irds:ID/SPLIT` works with no network."""
    from lsr.eval.irds_import import import_beir

    done = import_beir(folder, irds, overwrite=overwrite)
    typer.echo(f"{'placed' if done['placed'] else 'already in place'}: {done['target']} ({done['verified']})")


ExportFormat = Enum("ExportFormat", {"sentence_transformers": "sentence-transformers"}, type=str)  # encoders.export.FORMATS


@model_app.command("export")
def model_export(model: Annotated[str, typer.Argument(help="registered name (lsr-ifree-tiny, ...), folder or hub id")],
                 out: Annotated[Path, typer.Option("--out", help="the folder to write")],
                 fmt: Annotated[ExportFormat, typer.Option("--format", help="the layout to write")]
                 = ExportFormat.sentence_transformers,
                 overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a sentence-transformers "
                                                         "model folder already at --out")] = False,
                 push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="also upload the folder "
                                                                    "to this hub repo (owner/name; needs a login)")]
                 = None) -> None:
    """Write MODEL as a sentence-transformers SparseEncoder folder (inference-free models as its router layout:
    IDF queries, MLM documents) with a model card; SparseEncoder(OUT) loads it."""
    from lsr.encoders.export import export_model

    export_model(model, out, fmt=fmt.value, overwrite=overwrite, push_to_hub=push_to_hub, log=typer.echo)


@app.command()
def train(config: Annotated[Path, typer.Option("--config", help="training config (TOML)")],
          restart: Annotated[bool, typer.Option("--restart", help="discard the run in `out` and start over")] = False,
          data_dir: DataDir = None,
          device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N [the config's "
                                                        "`device`, else auto]")] = None,
          seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="the config's `seed`, replaced "
                                                      "(one config, several seeds)")] = None,
          out: Annotated[Optional[Path], typer.Option("--out", help="the config's `out`, replaced")] = None,
          init: Annotated[Optional[str], typer.Option("--init", help="the config's `init` (the model training "
                                                      "starts from), replaced: a second phase after a first")] = None
          ) -> None:
    """Train a SPLADE student (inference-free or siamese) by ensemble distillation; resumes `out` if it holds a
    checkpoint of the same configuration."""
    from lsr.eval.beir import load_beir
    from lsr.training import load_config
    from lsr.training.loop import train as run

    _device(device)
    cfg = load_config(config)
    changes = {key: value for key, value in (("device", device), ("seed", seed), ("out", out), ("init", init))
               if value is not None}
    cfg = cfg.model_copy(update=changes)
    _device(cfg.device)
    datasets = [load_beir(d.name, d.split, data_dir) for d in cfg.data.datasets]
    summary = run(cfg, datasets, restart=restart, log=typer.echo)
    typer.echo(f"done in {summary['wall_s']:.0f} s: {summary['model']}")


JsonOut = Annotated[Optional[Path], typer.Option("--json", help="append the result rows to this JSON file")]

# -- benchmarks: the commands parse options and call lsr.eval.bench, which holds the defaults, the value sets
# and the row formats (its modules import torch and the engines only when a benchmark runs)
from lsr.eval.bench import decoder as bench_decoder_lib, encode as bench_encode_lib  # noqa: E402
from lsr.eval.bench import head as bench_head_lib, loadtest as bench_serve_lib  # noqa: E402
from lsr.eval.bench import query as bench_query_lib  # noqa: E402
from lsr.eval.bench import gpu as bench_gpu_lib  # noqa: E402


def _choice(name: str, values) -> type[Enum]:
    """A fixed value set as an option type: any other value is a usage error (exit 2)."""
    return Enum(name, {v: v for v in values}, type=str)


def _values(chosen):
    """Enum members (one, a list or None) as the plain strings the benchmarks take."""
    if chosen is None:
        return None
    return [c.value for c in chosen] if isinstance(chosen, list) else chosen.value


HeadBackend = _choice("HeadBackend", bench_head_lib.HEAD_BACKENDS)
DType = _choice("DType", bench_head_lib.DTYPES)
QueryEngine = _choice("QueryEngine", bench_query_lib.ENGINE_CHOICES)
ServeMode = _choice("ServeMode", bench_serve_lib.MODES)
BenchDType = Annotated[Optional[DType], typer.Option("--dtype", help="[float32 on CPU, bfloat16 on CUDA]")]
BenchHeads = Annotated[Optional[list[HeadBackend]], typer.Option(
    "--head", help="head backend (repeatable) [reference and the available fast ones]")]


@bench_app.command("head")
def bench_head(json_out: JsonOut = None,
               batch: Annotated[int, typer.Option("--batch", help="batch size B")] = bench_head_lib.BATCH,
               seq: Annotated[int, typer.Option("--seq", help="tokens per text T")] = bench_head_lib.SEQ,
               dim: Annotated[Optional[int], typer.Option("--dim", help="hidden size h [128 on CPU, 768 on CUDA]")] = None,
               vocab: Annotated[Optional[list[int]], typer.Option("--vocab", help="vocabulary size V (repeatable) "
                                                                  "[30522 on CPU; 30522 and 250002 on CUDA]")] = None,
               dtype: BenchDType = None,
               head: Annotated[Optional[list[HeadBackend]], typer.Option(
                   "--head", help="SPLADE head kernel (repeatable) [all available]")] = None,
               repeats: Annotated[int, typer.Option("--repeats", help="timed calls after the first")]
               = bench_head_lib.REPEATS) -> None:
    """The head alone: median time and peak memory per backend, forward and forward+backward."""
    rows = bench_head_lib.bench_head(batch=batch, seq=seq, vocabs=vocab, dtype=_values(dtype),
                                     backends=_values(head), repeats=repeats, dim=dim, json_path=json_out)
    for r in rows:
        typer.echo(bench_head_lib.format_row(r))


@bench_app.command("encode")
def bench_encode(json_out: JsonOut = None, dataset: Annotated[str, typer.Option(
                     "--dataset", help="BEIR dataset name (under the data dir) or folder")] = bench_encode_lib.DATASET,
                 model: Annotated[str, typer.Option("--model", help="SPLADE model")] = bench_encode_lib.MODEL,
                 limit: Annotated[int, typer.Option("--limit", help="the first N corpus documents")]
                 = bench_encode_lib.LIMIT,
                 head: BenchHeads = None,
                 sentence_transformers: Annotated[bool, typer.Option(
                     "--sentence-transformers/--no-sentence-transformers",
                     help="also time sentence-transformers' SparseEncoder on the same weights")] = True,
                 max_length: MaxLength = bench_encode_lib.MAX_LENGTH,
                 batch_size: BatchSize = bench_encode_lib.BATCH_SIZE, data_dir: DataDir = None) -> None:
    """End to end: docs/s encoding a corpus prefix per head backend, against sentence-transformers."""
    rows = bench_encode_lib.bench_encode(limit=limit, dataset=dataset, data_dir=data_dir, model=model,
                                         max_length=max_length, batch_size=batch_size, heads=_values(head),
                                         sentence_transformers=sentence_transformers, json_path=json_out)
    for r in rows:
        typer.echo(bench_encode_lib.format_row(r))


@bench_app.command("decoder")
def bench_decoder_cmd(
        json_out: JsonOut = None,
        vocab: Annotated[Optional[list[int]], typer.Option(
            "--vocab", help="vocabulary size V (repeatable) [32000 and 250000]")] = None,
        docs: Annotated[int, typer.Option("--docs", help="the first N corpus documents")] = bench_decoder_lib.DOCS,
        hidden: Annotated[Optional[int], typer.Option("--hidden", help="hidden size [256 CPU, 4096 CUDA]")] = None,
        layers: Annotated[Optional[int], typer.Option("--layers", help="decoder layers [2 CPU, 32 CUDA]")] = None,
        heads: Annotated[Optional[int], typer.Option("--heads", help="attention heads [4 CPU, 32 CUDA]")] = None,
        kv_heads: Annotated[Optional[int], typer.Option("--kv-heads", help="key/value heads [2 CPU, 8 CUDA]")] = None,
        intermediate: Annotated[Optional[int], typer.Option(
            "--intermediate", help="MLP size [512 CPU, 14336 CUDA]")] = None,
        dtype: BenchDType = None, head: BenchHeads = None,
        repeats: Annotated[int, typer.Option("--repeats", help="timed encodings after the first")]
        = bench_decoder_lib.REPEATS,
        dataset: Dataset = bench_decoder_lib.DATASET, max_length: MaxLength = bench_decoder_lib.MAX_LENGTH,
        batch_size: BatchSize = bench_decoder_lib.BATCH_SIZE, data_dir: DataDir = None) -> None:
    """Echo SPLADE on a random-weight Mistral (7B shape in bf16 on CUDA): time and memory per head backend."""
    rows = bench_decoder_lib.bench_decoder(vocabs=vocab, docs=docs, max_length=max_length, batch_size=batch_size,
                                           hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                                           intermediate=intermediate, dtype=_values(dtype), backends=_values(head),
                                           repeats=repeats, dataset=dataset, data_dir=data_dir, json_path=json_out)
    for r in rows:
        typer.echo(bench_decoder_lib.format_row(r))


@bench_app.command("gpu")
def bench_gpu(json_out: Annotated[Path, typer.Option("--json", help="append the rows of every part to this file")],
              dry_run: Annotated[bool, typer.Option("--dry-run", help="the same parts on the CPU with tiny shapes, "
                                                    "Triton under the interpreter (checks the run, measures nothing)")]
              = False, data_dir: DataDir = None) -> None:
    """The prepared GPU run (one command, designed for under 8 minutes on an H200): the gpu-marked tests, the
    self-check, the head benchmark, the largest batch per head in a memory budget, 200 training steps per head,
    Echo encoding with a Mistral-7B-shaped decoder, and the Triton block sizes chosen. Exit 1 if any part
    failed."""
    rows = bench_gpu_lib.run_gpu_bench(json_path=json_out, dry_run=dry_run, data_dir=data_dir, log=_note)
    for r in rows:
        typer.echo(bench_gpu_lib.format_row(r))
    failed = [r for r in rows if "error" in r or r.get("outcome") == "failed"]
    if failed:
        _note(f"{len(failed)} of {len(rows)} rows failed (see {json_out})")
        raise SystemExit(1)


@bench_app.command("query")
def bench_query(json_out: JsonOut = None,
                corpus: Annotated[Optional[list[str]], typer.Option(
                    "--corpus", help="scifact, nfcorpus, a synthetic size such as 100k or 1M, or topical-SIZE; :MODEL "
                    "names the source vectors (repeatable) "
                    f"[{', '.join(bench_query_lib.CORPORA)}]")] = None,
                engine: Annotated[Optional[list[QueryEngine]], typer.Option(
                    "--engine", help="engine (repeatable) [all]")] = None,
                threads: Annotated[Optional[list[int]], typer.Option("--threads", help="[1 and all cores]")] = None,
                plot: Annotated[Optional[Path], typer.Option("--plot", help="latency-recall plot (PNG)")] = None,
                max_queries: Annotated[Optional[int], typer.Option("--max-queries")] = None,
                cache: Annotated[Path, typer.Option("--cache", help="encoded vectors")] = Path(bench_query_lib.CACHE),
                workdir: Annotated[Path, typer.Option("--workdir", help="indexes, kept and reused by later runs")]
                = Path(bench_query_lib.WORKDIR),
                rebuild: Annotated[bool, typer.Option("--rebuild", help="build every index anew")] = False,
                build_only: Annotated[bool, typer.Option("--build-only", help="build (or check) the indexes, "
                                                         "search nothing")] = False,
                index_format: Annotated[int, typer.Option("--index-format", min=2, max=3, help="our index's format "
                                                          "(3: compressed, with the forward index)")] = bench_query_lib.FORMAT_VERSION,
                data_dir: DataDir = None) -> None:
    """Query processing: ours against PISA, BMP, Seismic, Lucene impact and scipy on the same vectors. Indexes
    left in --workdir by an earlier run on the same vectors are reused, with the build time measured then."""
    rows = bench_query_lib.bench_query(corpus, _values(engine), threads, data_dir=data_dir, cache=cache,
                                       workdir=workdir, max_queries=max_queries, rebuild=rebuild,
                                       build_only=build_only, index_format=index_format, log=typer.echo)
    if json_out:
        bench_query_lib.write_results(rows, json_out, plot, corpora={
            c: bench_query_lib.corpus_description(c, data_dir, cache) for c in corpus or bench_query_lib.CORPORA})


@bench_app.command("serve")
def bench_serve(index: Annotated[Path, typer.Argument(help="index folder")], json_out: JsonOut = None,
                clients: Annotated[int, typer.Option("--clients")] = bench_serve_lib.CLIENTS,
                seconds: Annotated[float, typer.Option("--seconds")] = bench_serve_lib.SECONDS,
                mode: Annotated[ServeMode, typer.Option("--mode", help="ranking mode")] = ServeMode.sparse) -> None:
    """Load-test the REST API on loopback: QPS, p50/p99 latency, failures, server memory."""
    result = bench_serve_lib.load_test(index, clients=clients, seconds=seconds, mode=mode.value)
    typer.echo(bench_serve_lib.format_row(result))
    if json_out:
        bench_serve_lib.write_result(json_out, result)


def main() -> None:
    """The console script: user mistakes are one line on stderr and exit 2, Ctrl-C exits 130."""
    from lsr.kernels import HeadError

    from typer._click.exceptions import UsageError  # typer 0.29 vendors click; its usage errors are these

    try:
        code = app(standalone_mode=False, prog_name="lsr")
    except UsageError as e:
        message = e.format_message().replace("Value error, ", "")
        typer.echo(f"error: {message}" + (f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""), err=True)
        raise SystemExit(2) from None
    except (LsrError, HeadError) as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
    except (KeyboardInterrupt, typer.Abort):
        raise SystemExit(130) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)
