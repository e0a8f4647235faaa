"""The `lsr` command line: encode, index build, search, eval. Bad input exits non-zero with one line."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lsr.index import LsrError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learned sparse retrieval: encode, index, search and evaluate BEIR datasets.")
index_app = typer.Typer(no_args_is_help=True, help="Build inverted indexes.")
app.add_typer(index_app, name="index")

Dataset = Annotated[str, typer.Option("--dataset", help="BEIR dataset name (under the data dir) or folder")]
Split = Annotated[str, typer.Option("--split", help="qrels split: test, dev, train")]
Model = Annotated[str, typer.Option("--model", help="registered name (splade-tiny, bm25, ...), folder or hub id")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="folder of BEIR datasets [env LSR_DATA_DIR]")]
Limit = Annotated[Optional[int], typer.Option("--limit", help="only the first N corpus documents")]
MaxLength = Annotated[int, typer.Option("--max-length", help="tokens per text")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="texts per encoder batch")]
Head = Annotated[str, typer.Option("--head", help="SPLADE head backend")]
Bits = Annotated[int, typer.Option("--bits", help="impact quantisation bits (8 or 16)")]


def _options(max_length: int, batch_size: int, head: str):
    from lsr.eval.pipeline import EncoderOptions

    return EncoderOptions(max_length=max_length, batch_size=batch_size, head=head, show_progress=sys.stderr.isatty())


@app.command()
def encode(dataset: Dataset, model: Model, out: Annotated[Path, typer.Option("--out", help="output .npz")],
           split: Split = "test", limit: Limit = None, queries: Annotated[bool, typer.Option(
               "--queries", help="encode the split's judged queries instead of the corpus")] = False,
           max_length: MaxLength = 256, batch_size: BatchSize = 32, head: Head = "auto",
           data_dir: DataDir = None) -> None:
    """Encode corpus documents (file order) or queries into a scipy CSR float32 .npz."""
    from lsr.eval.beir import load_beir
    from lsr.eval.pipeline import load_sparse_encoder

    ds = load_beir(dataset, split, data_dir, limit)
    encoder = load_sparse_encoder(model, _options(max_length, batch_size, head))
    if queries:
        vectors = encoder.encode_queries(list(ds.queries.values()))
    else:
        vectors = encoder.encode_documents([d.contents for d in ds.corpus.values()])
    out.parent.mkdir(parents=True, exist_ok=True)
    vectors.save_npz(out)
    typer.echo(f"wrote {len(vectors)} vectors ({vectors.nnz / len(vectors):.1f} nonzeros each) to {out}")


@index_app.command("build")
def index_build(dataset: Dataset, model: Model, out: Annotated[Path, typer.Option("--out", help="index folder")],
                limit: Limit = None, bits: Bits = 8, overwrite: Annotated[bool, typer.Option(
                    "--overwrite", help="replace an existing index")] = False,
                max_length: MaxLength = 256, batch_size: BatchSize = 32, head: Head = "auto",
                data_dir: DataDir = None) -> None:
    """Encode a BEIR corpus and write an impact index (atomically) to OUT."""
    from lsr.eval.beir import load_corpus
    from lsr.eval.pipeline import build_sparse_index, load_sparse_encoder

    ds = load_corpus(dataset, data_dir, limit)
    encoder = load_sparse_encoder(model, _options(max_length, batch_size, head))
    figures = build_sparse_index(ds, model, encoder, out, bits=bits, overwrite=overwrite)
    typer.echo(f"indexed {len(ds.corpus)} documents into {out} ({figures['docs_per_s']:.1f} docs/s encoding)")


@app.command()
def search(index: Annotated[Path, typer.Argument(help="index folder")],
           query: Annotated[str, typer.Argument(help="query text")],
           k: Annotated[int, typer.Option("-k", help="hits to return")] = 10,
           as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Search an index built by `lsr index build` with the model it was built with."""
    from lsr.eval.pipeline import EncoderOptions, load_sparse_encoder
    from lsr.index import IndexReader, Searcher

    if not query.strip():
        raise LsrError("empty query")
    reader = IndexReader(index)
    model = reader.info.get("model")
    if not model:
        raise LsrError(f"{index}: the index does not record its model")
    encoder = load_sparse_encoder(model, EncoderOptions(max_length=int(reader.info.get("max_length", 256)),
                                                        batch_size=1, show_progress=False))
    hits = Searcher(reader).search(encoder.encode_queries([query]), k=k)
    if as_json:
        typer.echo(json.dumps([{"doc_id": h.doc_id, "score": h.score} for h in hits]))
    else:
        for rank, hit in enumerate(hits, start=1):
            typer.echo(f"{rank:>3}  {hit.score:9.4f}  {hit.doc_id}")


@app.command("eval")
def eval_(dataset: Dataset, model: Model, split: Split = "test", limit: Limit = None,
          index: Annotated[Optional[Path], typer.Option("--index", help="reuse or keep the index here")] = None,
          json_out: Annotated[Optional[Path], typer.Option("--json", help="write the report as JSON")] = None,
          run_out: Annotated[Optional[Path], typer.Option("--run", help="write the TREC run file")] = None,
          bits: Bits = 8, max_length: MaxLength = 256, batch_size: BatchSize = 32, head: Head = "auto",
          data_dir: DataDir = None) -> None:
    """Evaluate a model on a BEIR split: nDCG@10, R@100, RR@10 and efficiency figures."""
    from lsr.eval.beir import load_beir
    from lsr.eval.pipeline import evaluate
    from lsr.eval.report import print_report
    from lsr.index import write_trec_run

    ds = load_beir(dataset, split, data_dir, limit)
    report = evaluate(ds, model, _options(max_length, batch_size, head), index_dir=index, bits=bits)
    print_report(report)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_json(), indent=2))
    if run_out:
        run_out.parent.mkdir(parents=True, exist_ok=True)
        write_trec_run(report.run, run_out, tag=Path(model).name)


def main() -> None:
    try:
        app()
    except LsrError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
