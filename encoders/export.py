"""Export a sparse model as a sentence-transformers `SparseEncoder` folder (`lsr model export`).

A siamese model becomes Transformer (fill-mask) + SpladePooling; an inference-free one the router layout
(query route: a frozen `SparseStaticEmbedding` holding the IDF weights, document route: Transformer +
SpladePooling). Pooling, activation, max lengths and prompts are the encoder's own, so `SparseEncoder(DIR)`
encodes as lsr does (tests/test_layouts.py). The folder gets a model card (README.md) with the model's
training record, and is written whole (staged, published in one rename); `push_to_hub` then uploads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from lsr.index import LsrError
from lsr.index.files import StagedFolder, atomic_write

from .layouts import ST_MODULES
from .registry import resolve_model
from .splade import SpladeEncoder

FORMATS = ("sentence-transformers",)
CARD_FILE = "README.md"


def _replaceable(out: Path, overwrite: bool) -> Callable[[Path], bool]:
    """What an existing `out` may be: an empty folder, or with `overwrite` a sentence-transformers folder."""
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise LsrError(f"{out} is not empty; --overwrite replaces it (a sentence-transformers model folder only)")
        if not (out / ST_MODULES).is_file():
            raise LsrError(f"{out} is not a sentence-transformers model folder (no {ST_MODULES}); --overwrite "
                           "replaces only one (move it away or choose another --out)")
    return lambda path: not any(path.iterdir()) or (overwrite and (path / ST_MODULES).is_file())


def build_sparse_encoder(encoder: SpladeEncoder):
    """The sentence-transformers SparseEncoder equal to `encoder` (its MLM read from the model's folder)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling
    import torch
    from transformers import AutoTokenizer

    if encoder.layout.drop_special_tokens:
        raise LsrError(f"{encoder.layout.mlm}: an OpenSearch model zeroes its special tokens' weights, which "
                       "SpladePooling cannot record; export it from its own sentence-transformers files")
    siamese_query_length = (encoder.query_max_length if encoder.query_encoder is None
                            and encoder.query_max_length != encoder.max_length else None)
    document = [Transformer(str(encoder.layout.mlm), transformer_task="fill-mask", max_seq_length=encoder.max_length,
                            do_lower_case=encoder.layout.lowercase, query_length=siamese_query_length),
                SpladePooling(pooling_strategy=encoder.pooling, activation_function=encoder.activation)]
    prompts = {side: prompt for side, prompt in encoder.prompts.items() if prompt}
    if encoder.query_encoder is None:
        return SparseEncoder(modules=document, prompts=prompts or None, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(encoder.layout.query_tokenizer or encoder.layout.mlm),
                                              model_max_length=encoder.query_max_length)
    idf = torch.from_numpy(encoder.query_encoder.idf.copy())  # special tokens already 0, as lsr scores them
    query = [SparseStaticEmbedding(tokenizer, weight=idf, frozen=True)]
    return SparseEncoder(modules=[Router.for_query_document(query_modules=query, document_modules=document)],
                         prompts=prompts or None, device="cpu")


def model_card(model: str, encoder: SpladeEncoder, source_card: str | None) -> str:
    """A model card: what the folder is, how to load it, and the model's own training record."""
    kind = ("inference-free (queries: IDF weights, no model at query time; documents: the MLM)"
            if encoder.query_encoder is not None else "siamese (queries and documents through the MLM)")
    tags = ["sentence-transformers", "sparse-encoder", "splade", "lsr"] + (
        ["inference-free"] if encoder.query_encoder is not None else [])
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: feature-extraction", "tags:",
             *(f"- {t}" for t in tags), "---", "", f"# {Path(model).name} (exported by lsr)", "",
             f"A SPLADE sparse encoder, {kind}; pooling {encoder.pooling}, activation {encoder.activation}, "
             f"{encoder.max_length} document tokens, {encoder.query_max_length} query tokens, vocabulary "
             f"{encoder.vocab_size}. Exported by `lsr model export {model} --format sentence-transformers`.", "",
             "```python", "from sentence_transformers import SparseEncoder", "", 'model = SparseEncoder("DIR")',
             'docs = model.encode_document(["..."])', 'queries = model.encode_query(["..."])',
             "scores = model.similarity(queries, docs)", "```", ""]
    if source_card:
        lines += ["## Training and measured figures (the model's own card)", "",
                  source_card.split("\n", 1)[1].strip() if source_card.startswith("# ") else source_card.strip(), ""]
    else:
        lines += ["No training record travels with this model (its folder had no README.md).", ""]
    return "\n".join(lines)


def export_model(model: str, out: str | Path, *, fmt: str = "sentence-transformers", overwrite: bool = False,
                 push_to_hub: str | None = None, log: Callable[[str], None] = print) -> Path:
    """Write `model` (a name, folder or hub id `lsr` resolves) as a SparseEncoder folder at `out`; with
    `push_to_hub` (a repo id), also upload that folder (needs a Hugging Face login)."""
    if fmt not in FORMATS:
        raise LsrError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
    out = Path(out)
    replace = _replaceable(out, overwrite)
    spec = resolve_model(model)
    if spec.kind != "splade":
        raise LsrError(f"model {model!r} is a {spec.kind} model; only SPLADE (masked-LM) models export to "
                       "sentence-transformers")
    stage = StagedFolder(out, replace=replace)
    try:
        encoder = SpladeEncoder(spec.source, show_progress=False, device="cpu")
        st_model = build_sparse_encoder(encoder)
        st_model.save(str(stage.path))
        own_card = encoder.layout.mlm / CARD_FILE
        atomic_write(stage.path / CARD_FILE, model_card(model, encoder, own_card.read_text(encoding="utf-8")
                                                        if own_card.is_file() else None))
        stage.publish()
    except BaseException:
        stage.discard()
        raise
    log(f"wrote {out} ({'router: IDF queries, MLM documents' if encoder.query_encoder is not None else 'MLM'})")
    if push_to_hub:
        from huggingface_hub import HfApi

        try:
            api = HfApi()
            api.create_repo(push_to_hub, repo_type="model", exist_ok=True)
            api.upload_folder(folder_path=str(out), repo_id=push_to_hub, repo_type="model")
        except Exception as e:  # network, auth, repo errors: one line; the folder stays written
            raise LsrError(f"pushing {out} to the hub as {push_to_hub} failed ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); the folder is written") from None
        log(f"pushed {out} to https://huggingface.co/{push_to_hub}")
    return out
