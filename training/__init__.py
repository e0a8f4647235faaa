"""Training SPLADE students: losses over scores and vectors, heterogeneous teacher ensembles, mined training
data and the loop behind `lsr train --config FILE`."""
from .config import TrainConfig, load_config
from .losses import (contrastive, flops, group_scores, idf_aware_flops, idf_penalty_weights, kl_distillation,
                     l0_mask, margin_mse, quadratic_warmup)
from .teachers import TEACHERS, ensemble, min_max

__all__ = ["TEACHERS", "TrainConfig", "contrastive", "ensemble", "flops", "group_scores", "idf_aware_flops",
           "idf_penalty_weights", "kl_distillation", "l0_mask", "load_config", "margin_mse", "min_max",
           "quadratic_warmup"]
