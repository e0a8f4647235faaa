"""Training losses. Every function takes scores or vectors, never a model, so distillation is a data problem.

Shapes: `scores` is (queries, candidates) with each query's positive in column 0 unless `positive` says
otherwise; `vectors` is (texts, vocab) of non-negative SPLADE weights.

- `contrastive`: InfoNCE, the cross-entropy of the positive among the candidates (in-batch and hard negatives
  are whatever columns the caller puts in `scores`).
- `kl_distillation`: KL(teacher || student) between softmaxes over each query's candidates.
- `margin_mse`: MSE between student and teacher margins s(q, d+) - s(q, d-) (Hofstaetter et al., 2020).
- `flops`: sum_v c_v (mean_i w_iv)^2 (Paria et al., 2020; SPLADE), c_v = 1 unless token weights are given.
- `idf_aware_flops`: the same with c_v = 1 / max(idf_v, floor): common (low-IDF) tokens, which add little to
  an IDF-weighted score and much to posting-list lengths, pay more; informative tokens pay less (after Geng et
  al., 2024, "Towards Competitive Search Relevance For Inference-Free Learned Sparse Retrievers").
- `l0_mask`: keeps only the rows with more than `threshold` nonzeros, so a FLOPS over its output penalises
  long documents and leaves short ones alone (the l0 mask of Shen et al., 2025, "Exploring l0 Sparsification
  for Inference-free Sparse Retrievers"; 150 in their MS MARCO configuration). The mean still runs over every row.
- `quadratic_warmup`: lambda * min(1, step / T)^2, the regulariser weight schedule of SPLADE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive(scores: torch.Tensor, positive: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE: -log softmax(scores)[positive], averaged over queries."""
    if positive is None:
        positive = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores.float(), positive)


def kl_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) per query, averaged over queries."""
    return F.kl_div(F.log_softmax(student.float(), dim=-1), F.log_softmax(teacher.float(), dim=-1),
                    reduction="batchmean", log_target=True)


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the margins positive (column 0) minus each negative."""
    s = student[:, :1].float() - student[:, 1:].float()
    t = teacher[:, :1].float() - teacher[:, 1:].float()
    return F.mse_loss(s, t)


def flops(vectors: torch.Tensor, token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_v c_v * (mean_i |w_iv|)^2."""
    mean = vectors.float().abs().mean(dim=0)
    return (mean.square() * token_weights).sum() if token_weights is not None else mean.square().sum()


def l0_mask(vectors: torch.Tensor, threshold: int) -> torch.Tensor:
    """`vectors` with every row of at most `threshold` nonzeros zeroed (threshold 0 changes nothing)."""
    if threshold <= 0:
        return vectors
    keep = (vectors != 0).sum(dim=-1, keepdim=True) > threshold
    return vectors * keep.to(vectors.dtype)


def idf_penalty_weights(idf: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    """c_v = 1 / max(idf_v, floor): the per-token FLOPS weights of `idf_aware_flops`."""
    return 1.0 / idf.float().clamp_min(floor)


def idf_aware_flops(vectors: torch.Tensor, idf: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    """sum_v (mean_i |w_iv|)^2 / max(idf_v, floor)."""
    return flops(vectors, idf_penalty_weights(idf, floor))


def quadratic_warmup(step: int, weight: float, warmup_steps: int) -> float:
    """lambda * min(1, step / T)^2 (T = 0: no warm-up)."""
    if warmup_steps <= 0:
        return weight
    return weight * min(1.0, step / warmup_steps) ** 2


def group_scores(queries: torch.Tensor, docs: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of Q queries against their own groups of `group_size` documents (positive first) and against
    every document of the batch (for in-batch negatives).

    Returns (own (Q, G), all (Q, Q*G)); query i's positive is column i*G of `all`.
    """
    all_scores = queries @ docs.T
    q = queries.shape[0]
    idx = torch.arange(q, device=queries.device).unsqueeze(1) * group_size + torch.arange(group_size,
                                                                                           device=queries.device)
    return all_scores.gather(1, idx), all_scores
