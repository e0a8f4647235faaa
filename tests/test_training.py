"""Training: losses against closed forms, the teacher ensemble on hand-computed scores, the IDF query encoder,
and a tiny real training run (SPLADE-tiny student, MiniLM and SPLADE-tiny teachers, scifact train) that
lowers the loss, checkpoints, resumes to the same weights, and loads back through `lsr eval`'s encoder."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lsr.index import LsrError
from lsr.training import (contrastive, ensemble, flops, idf_aware_flops, idf_penalty_weights, kl_distillation,
                          l0_mask, margin_mse, min_max, quadratic_warmup)
from lsr.training.teachers import Bm25Scorer


# -- losses: closed forms -----------------------------------------------------------------------------------
def test_flops_closed_form():
    w = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    # mean over documents = [2, 0, 1] -> 2^2 + 0 + 1^2
    assert flops(w).item() == pytest.approx(5.0)
    # IDF-aware: weights 1 / max(idf, 0.1) = [2, 1, 10] -> 2*4 + 0 + 10*1
    idf = torch.tensor([0.5, 1.0, 0.05])
    assert idf_aware_flops(w, idf, floor=0.1).item() == pytest.approx(18.0)
    # a common (low-IDF) token costs more than a rare one with the same mean weight
    same = torch.tensor([[1.0, 1.0]])
    per_token = [idf_aware_flops(same[:, [i]], torch.tensor([v])).item() for i, v in enumerate([0.5, 5.0])]
    assert per_token[0] == pytest.approx(2.0) and per_token[1] == pytest.approx(0.2)


def test_flops_gradient_closed_form():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    flops(w).backward()
    # d/dw_iv sum_v (mean_i w_iv)^2 = 2 * mean_v / N, mean = (2, 3), N = 2
    torch.testing.assert_close(w.grad, torch.tensor([[2.0, 3.0], [2.0, 3.0]]))


def test_l0_mask_penalises_only_documents_above_the_threshold():
    w = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]], requires_grad=True)
    assert l0_mask(w, 0) is w
    # threshold 1: only the first document (2 nonzeros) pays; the mean still divides by both documents
    assert flops(l0_mask(w, 1)).item() == pytest.approx(0.5 ** 2 + 0 + 1.0 ** 2)
    flops(l0_mask(w, 1)).backward()
    torch.testing.assert_close(w.grad, torch.tensor([[0.5, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    assert flops(l0_mask(w, 2)).item() == 0.0


def test_quadratic_warmup():
    assert quadratic_warmup(0, 0.5, 100) == 0.0
    assert quadratic_warmup(50, 0.5, 100) == pytest.approx(0.125)
    assert quadratic_warmup(100, 0.5, 100) == quadratic_warmup(1000, 0.5, 100) == 0.5
    assert quadratic_warmup(3, 0.5, 0) == 0.5


def test_ranking_losses_closed_form():
    s = torch.tensor([[2.0, 1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0, 1.0]])
    assert contrastive(s).item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + math.e + 1)))
    assert contrastive(s, torch.tensor([1])).item() == pytest.approx(-math.log(math.e / (math.exp(2) + math.e + 1)))
    p = np.exp([0, 1, 1]) / np.exp([0, 1, 1]).sum()
    q = np.exp([2, 1, 0]) / np.exp([2, 1, 0]).sum()
    assert kl_distillation(s, t).item() == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-5)
    assert kl_distillation(t, t).item() == pytest.approx(0.0, abs=1e-7)
    # margins: student (1, 2), teacher (-1, -1) -> ((1+1)^2 + (2+1)^2) / 2
    assert margin_mse(s, t).item() == pytest.approx(6.5)


# -- the teacher ensemble: hand-computed ------------------------------------------------------------------
def test_min_max_ensemble_by_hand():
    dense = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    sparse = np.array([[10.0, 30.0, 20.0], [0.0, 4.0, 2.0]])
    np.testing.assert_allclose(min_max(dense), [[0, 0.5, 1], [0, 0, 0]])
    np.testing.assert_allclose(min_max(sparse), [[0, 1, 0.5], [0, 1, 0.5]])
    # (min-max of each, averaged) * 30
    np.testing.assert_allclose(ensemble([dense, sparse], scale=30), [[0, 22.5, 22.5], [0, 15, 7.5]])
    np.testing.assert_allclose(ensemble([dense], scale=2), [[0, 1, 2], [0, 0, 0]])
    with pytest.raises(LsrError, match="different shapes"):
        ensemble([dense, sparse[:, :2]])


def test_bm25_teacher_by_hand():
    docs = [[1, 2, 2], [2, 3], [4]]
    scorer = Bm25Scorer(docs, vocab_size=6, k1=0.9, b=0.4)
    n, avgdl = 3, 2.0
    idf2 = math.log(1 + (n - 2 + 0.5) / (2 + 0.5))
    tf_part = 2 * 1.9 / (2 + 0.9 * (1 - 0.4 + 0.4 * 3 / avgdl))
    assert scorer.score([2, 2], np.array([0]))[0] == pytest.approx(idf2 * tf_part, rel=1e-5)
    np.testing.assert_allclose(scorer.score([5], np.array([0, 1, 2])), 0)
    assert scorer.score([], np.array([1])).tolist() == [0.0]


# -- the IDF query encoder -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from lsr.encoders import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("splade-tiny").source)


def test_idf_encoder_closed_form_and_round_trip(tokenizer, tmp_path):
    from lsr.encoders.idf import IdfQueryEncoder, bm25_idf

    corpus = ["tumor cells grow", "tumor suppressor genes", "vitamin d"]
    enc = IdfQueryEncoder.from_corpus(tokenizer, corpus)
    tumor = tokenizer.convert_tokens_to_ids("tumor")
    assert enc.idf[tumor] == pytest.approx(math.log(1 + (3 - 2 + 0.5) / (2 + 0.5)), rel=1e-6)
    assert bm25_idf(np.array([0]), 3)[0] == pytest.approx(math.log(1 + 3.5 / 0.5), rel=1e-6)
    vec = enc.encode_queries(["Tumor tumor [SEP] vitamin", ""])
    terms, weights = vec.row(0)
    assert set(tokenizer.convert_ids_to_tokens(terms.tolist())) == {"tumor", "vitamin"}  # once each, no [SEP]
    assert len(vec.row(1)[0]) == 0
    enc.save(tmp_path)
    again = IdfQueryEncoder.load(tmp_path, tokenizer)
    np.testing.assert_array_equal(again.idf, enc.idf)
    (tmp_path / "idf.json").write_text(json.dumps({"tumor": -1}))
    with pytest.raises(LsrError, match="finite non-negative"):
        IdfQueryEncoder.load(tmp_path, tokenizer)
    (tmp_path / "idf.json").write_text("{broken")
    with pytest.raises(LsrError, match="not a readable IDF table"):
        IdfQueryEncoder.load(tmp_path, tokenizer)


# -- a tiny real training run ------------------------------------------------------------------------------
@dataclass
class TinyDataset:
    name: str
    split: str
    corpus: dict
    queries: dict
    qrels: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def tiny_dataset(data_dir):
    """12 scifact train queries over a 150-document corpus holding their positives."""
    from lsr.eval.beir import load_beir

    ds = load_beir("scifact", "train", data_dir)
    qids = list(ds.queries)[:12]
    keep = {d for q in qids for d in ds.qrels[q]} | set(list(ds.corpus)[:150 - 12])
    corpus = {d: doc for d, doc in ds.corpus.items() if d in keep}
    return TinyDataset("scifact-tiny", "train", corpus, {q: ds.queries[q] for q in qids},
                       {q: ds.qrels[q] for q in qids})


def test_hybrid_mining_fuses_the_sparse_and_dense_teachers_top_lists(tmp_path, tiny_dataset):
    """`mine_with="hybrid"`: each query's candidates are the top of alpha 0.5 min-max interpolation of the sparse
    and dense teachers' top 2 x mine_depth lists (checked against numpy here), kept beside the sparse pools."""
    from lsr.training.data import MiningSettings, _dense_vectors, _sparse_vectors, build_training_set

    cache, depth = tmp_path / "cache", 10
    settings = MiningSettings(mine_depth=depth, max_length=48, teachers=("dense", "sparse"))
    sparse = build_training_set([tiny_dataset], cache, settings, log=lambda m: None)
    hybrid = build_training_set([tiny_dataset], cache, replace(settings, mine_with="hybrid"), log=lambda m: None)
    folder = cache / "scifact-tiny-train"
    assert {"pools.npz", "pools-hybrid.npz", "key.json", "key-hybrid.json"} <= {p.name for p in folder.iterdir()}
    again = build_training_set([tiny_dataset], cache, settings, log=lambda m: (_ for _ in ()).throw(AssertionError(m)))
    np.testing.assert_array_equal(again.pool_docs, sparse.pool_docs)  # the sparse pools are read back, not re-mined

    queries = dict(tiny_dataset.queries)
    docs, qvecs = _sparse_vectors(tiny_dataset, queries, folder, settings)
    dense_docs, dense_queries = _dense_vectors(tiny_dataset, queries, folder, settings)
    sparse_all = (qvecs @ docs.T).toarray()
    new_candidates = 0
    for q in range(len(queries)):
        fused = np.zeros(docs.shape[0])
        for alpha, scores in ((0.5, sparse_all[q]), (0.5, dense_docs @ dense_queries[q])):
            top = np.argsort(-scores, kind="stable")[:2 * depth]
            lo, hi = scores[top].min(), scores[top].max()
            norm = np.zeros(docs.shape[0])  # a document outside a list gets its minimum, 0 after min-max
            norm[top] = (scores[top] - lo) / (hi - lo)
            fused += alpha * norm
        expected = set(np.argsort(-fused, kind="stable")[:depth].tolist())
        mined = hybrid.pool_docs[hybrid.pool_indptr[q]:hybrid.pool_indptr[q] + depth]
        assert set(mined.tolist()) == expected, q
        new_candidates += len(expected - set(sparse.pool_docs[sparse.pool_indptr[q]:sparse.pool_indptr[q] + depth]))
        positives = {i for i, d in enumerate(tiny_dataset.corpus) if tiny_dataset.qrels[list(queries)[q]].get(d, 0) > 0}
        pool = set(hybrid.pool_docs[hybrid.pool_indptr[q]:hybrid.pool_indptr[q + 1]].tolist())
        assert positives <= pool  # unmined positives still join the pool
    assert new_candidates > 0  # the dense teacher brings candidates the sparse one did not mine


def _config(tmp_path: Path, **overrides):
    from lsr.training import TrainConfig

    raw = {"out": str(tmp_path / "run"), "steps": 8, "batch_queries": 2, "lr": 3e-4, "max_length": 48,
           "checkpoint_every": 4, "log_every": 1, "warmup_ratio": 0.0,
           "data": {"datasets": [{"name": "scifact"}], "cache_dir": str(tmp_path / "cache"), "mine_depth": 10,
                    "group_size": 4, "teachers": ["dense", "sparse", "bm25"]},
           "loss": {"kl": 1.0, "contrastive": 1.0, "doc_flops_weight": 1e-4, "flops_warmup_steps": 4}}
    raw.update(overrides)
    return TrainConfig.model_validate(raw)


def _held_out_loss(config, model_dir: str, dataset, idf: np.ndarray) -> float:
    """The objective on fixed groups (every tiny query), without the regulariser."""
    from lsr.training.data import MiningSettings, build_training_set
    from lsr.training.loop import Student, objective, sample_groups

    data = build_training_set([dataset], config.data.cache_dir, MiningSettings(
        mine_depth=config.data.mine_depth, max_length=config.max_length, teachers=tuple(config.data.teachers)),
        log=lambda m: None)
    student = Student(config, model_dir, idf)
    rows, entries = sample_groups(data, np.arange(len(data)), config.data.group_size, 10, np.random.default_rng(7))
    teacher = torch.from_numpy(ensemble([data.teacher_scores[t][entries] for t in config.data.teachers]))
    ids = [np.asarray(i) for i in student.tokenizer(data.queries, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        q = student.encode_queries(data.queries, [i[student.idf.numpy()[i] > 0] for i in ids])
        terms = objective(config, 0, q, student.encode_docs([data.texts[r] for r in rows]), teacher,
                          idf_penalty_weights(student.idf.detach()))
    return float(terms["kl"] + terms["contrastive"])


def test_tiny_training_run_lowers_the_loss_and_resumes_exactly(tmp_path, tiny_dataset):
    from lsr.encoders import SpladeEncoder, resolve_model
    from lsr.training.loop import read_log, train

    config = _config(tmp_path)
    summary = train(config, [tiny_dataset], log=lambda m: None)
    out = Path(config.out)
    model = out / "model"
    assert {"config.json", "model.safetensors", "idf.json", "tokenizer.json"} <= {p.name for p in model.iterdir()}
    records = read_log(out / "log.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    assert {"loss", "kl", "contrastive", "margin_mse", "doc_flops", "doc_nnz", "lr"} <= set(records[0])
    assert (out / "curves.png").stat().st_size > 0 and summary["wall_s"] > 0

    from lsr.encoders.idf import IdfQueryEncoder

    idf = IdfQueryEncoder.load(model, SpladeEncoder(str(model), show_progress=False).tokenizer).idf
    before = _held_out_loss(config, resolve_model("splade-tiny").source, tiny_dataset, idf)
    after = _held_out_loss(config, str(model), tiny_dataset, idf)
    assert after < before * 0.9, (before, after)

    # the weights changed, and they load back: through the encoder `lsr eval` uses, inference-free
    init = load_file(Path(resolve_model("splade-tiny").source) / "model.safetensors")
    trained = load_file(model / "model.safetensors")
    key = next(k for k in trained if "word_embeddings" in k)
    assert not torch.equal(init[key], trained[key])
    encoder = SpladeEncoder(str(model), max_length=48, show_progress=False)
    assert encoder.inference_free
    torch.testing.assert_close(encoder.head_module.weight, trained[key])

    # resume: drop the final model and the steps after the checkpoint at step 4, run again -> the same weights
    final = trained
    import shutil

    shutil.rmtree(model)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4"]
    train(_config(tmp_path, device="cpu"), [tiny_dataset], log=lambda m: None)  # where it runs: not the recipe
    resumed = load_file(model / "model.safetensors")
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in read_log(out / "log.jsonl")] == list(range(1, 9))

    # a different configuration refuses the folder instead of mixing runs
    with pytest.raises(LsrError, match="another configuration"):
        train(_config(tmp_path, lr=1e-3), [tiny_dataset], log=lambda m: None)


def _refused(path: Path, text: str, match: str) -> None:
    from lsr.training import load_config

    path.write_text(text)
    with pytest.raises(LsrError, match=match):
        load_config(path)


def test_config_errors_are_one_line(tmp_path):
    from lsr.training import load_config

    bad = tmp_path / "bad.toml"
    _refused(bad, 'out = "x"\nsteps = 0\n[data]\ndatasets = [{name = "scifact"}]\n',
             "steps: Input should be greater than or equal to 1")
    _refused(bad, 'out = "x"\nsteps = 1\nbogus = 2\n[data]\ndatasets = [{name = "scifact"}]\n',
             "bogus: Extra inputs are not permitted")
    _refused(bad, 'out = "x"\nsteps = 1\n[data]\ndatasets = [{name = "scifact"}]\nteachers = ["oracle"]\n',
             "unknown teachers")
    _refused(bad, "not = [toml", "not valid TOML")
    with pytest.raises(LsrError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    _refused(bad, 'out = "x"\nsteps = 1\ndevice = "cuda:"\n[data]\ndatasets = [{name = "scifact"}]\n',
             r"device: unknown device 'cuda:': use auto, cpu, cuda or cuda:N \(1 error")


def test_config_base_file_gives_the_keys_a_config_does_not_set(tmp_path):
    from lsr.training import load_config

    (tmp_path / "base.toml").write_text('out = "a"\nsteps = 10\nlr = 1e-4\n[data]\ndatasets = [{name = "scifact"}]\n'
                                        'group_size = 4\n[loss]\nkl = 0.5\n')
    child = tmp_path / "sub" / "child.toml"
    child.parent.mkdir()
    child.write_text('base = "../base.toml"\nout = "b"\nsteps = 20\n[data]\ndatasets = [{name = "nfcorpus", repeat = 2}]\n')
    cfg = load_config(child)
    assert (str(cfg.out), cfg.steps, cfg.lr) == ("b", 20, 1e-4)
    assert [(d.name, d.repeat) for d in cfg.data.datasets] == [("nfcorpus", 2)]  # a list is replaced whole
    assert cfg.data.group_size == 4 and cfg.loss.kl == 0.5  # tables merge key by key
    grandchild = tmp_path / "grandchild.toml"
    grandchild.write_text('base = "sub/child.toml"\nlr = 3e-4\n')
    assert (load_config(grandchild).steps, load_config(grandchild).lr) == (20, 3e-4)

    (tmp_path / "base.toml").write_text('base = "sub/child.toml"\n')
    with pytest.raises(LsrError, match="goes round in a circle"):
        load_config(child)
    _refused(child, 'base = 3\n', "must be a file name")
    _refused(child, 'base = "nowhere.toml"\n', "nowhere.toml: cannot read")


def test_every_shipped_config_loads():
    from lsr.training import load_config

    configs = sorted(Path(__file__).resolve().parents[1].glob("training/configs/**/*.toml"))
    assert len(configs) >= 10
    for path in configs:
        assert load_config(path).steps >= 1, path


def test_echo_decoder_student_trains_with_lora_and_loads_back(tmp_path, tiny_dataset):
    """A fresh Mistral decoder on SPLADE-tiny's embeddings, siamese, LoRA adapters only: the base weights stay,
    the saved (merged) model is an Echo model `lsr eval` can load."""
    from lsr.encoders import load_sparse_encoder, resolve_model
    from lsr.training.loop import train

    config = _config(tmp_path, query_encoder="siamese", steps=3, checkpoint_every=2, max_length=64,
                     new_decoder={"layers": 1, "intermediate": 64},
                     lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                     loss={"kl": 1.0, "flops": "plain", "doc_flops_weight": 1e-3, "query_flops_weight": 1e-3})
    train(config, [tiny_dataset], log=lambda m: None)
    out = Path(config.out)
    init = load_file(out / "init" / "model.safetensors")
    trained = load_file(out / "model" / "model.safetensors")
    emb = next(k for k in init if "embed_tokens" in k)
    torch.testing.assert_close(trained[emb], init[emb])  # LoRA on: embeddings (and tied head) untouched
    q = next(k for k in init if "q_proj.weight" in k)
    assert not torch.equal(trained[q], init[q])  # adapters merged into the attention weights
    spec = resolve_model(str(out / "model"))
    assert spec.kind == "echo"
    encoder = load_sparse_encoder(spec, show_progress=False, device="cpu")
    assert encoder.echo and encoder.max_length == 64 and encoder.has_vocab_bias
    assert encoder.encode_queries(["tumor suppressor"]).nnz > 0
