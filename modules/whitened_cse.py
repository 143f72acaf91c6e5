"""WhitenedCSE (Zhuo, Sun, Wang, Zhu and Yang, "WhitenedCSE: Whitening-based Contrastive Learning
of Sentence Embeddings", ACL 2023; methods/part1.md Sec. 11; official code
``SupstarZh/WhitenedCSE``).

Unsupervised SimCSE (modules/simcse.py) with two changes, both in the training-only head:

1. **K dropout views** instead of two: each sentence goes through the tower K = 3 times (the
   data's two views ``text@0``, ``text@1`` of one sentence, plus ``K - 2`` more passes of
   ``text@0``), each pass with its own dropout mask;
2. **shuffled group whitening** before SimCSE's MLP: the head is ``SGW -> Linear -> Tanh``
   (the official ``MLPLayer``); each view is whitened over the batch with its own random channel
   permutation (modules/losses/whitened_cse.py), so the K views are K different distortions of
   one sentence;

and the multi-positive loss ``sum_{k>=2} InfoNCE(z^(1) -> z^(k))`` (the official
``loss1 + loss2``; with K = 2 and no whitening it is SimCSE's Eq. 4). Evaluation reads the
tower's sentence vector before the head (``--mlp_only_train``, as SimCSE unsupervised), so
against ``method.name: simcse`` only the head and the number of dropout views change.

Followed where the spec marked caveats of the code:

- the three views are whitened **one view at a time** (the paper's description, Fig. 2); the
  official ``ShuffledGroupWhitening`` cuts its input into thirds assuming a view-major layout
  while ``cl_forward`` passes rows sentence-major, so there the thirds mix views;
- the group size is ``group_size`` channels (the paper: 128 groups of BERT-base's 768, i.e. 6);
  the width must be a multiple of it;
- the whitening matrix has no gradient (official code); ``eps`` (1e-5, not in the official
  code) is added to the eigenvalues so that a collapsed group of a from-scratch tower stays
  finite; statistics are those of the global batch under DDP (the official code: per GPU).

Permutations: drawn at every step from a generator seeded by (the run's seed, the global step,
the view), so every process draws the same ones and a rerun is identical.
Scoped down: BERT-base and wiki1m become the platform's towers (from-scratch transformer or
MiniLM) and the built-in sentences (datamodules/sentences.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.base import tower_input, view_name
from modules.losses.whitened_cse import multi_positive_info_nce, shuffled_group_whitening
from modules.registry import METHODS
from modules.simcse import SimCSE, SimCSEConfig
from modules.towers.output import TowerOutput


@dataclass
class WhitenedCSEConfig(SimCSEConfig):
    """``num_views``: dropout passes per sentence (K; the paper's 3); ``group_size``: channels
    per whitening group (the paper's 768 / 128 = 6); ``shuffle``: a fresh channel permutation
    per view and step (False: contiguous groups, the paper's ablation without shuffling);
    ``eps``: added to the covariance's eigenvalues."""

    name: str = "whitened_cse"
    mlp_only_train: bool | None = True
    num_views: int = 3
    group_size: int = 6
    shuffle: bool = True
    eps: float = 1e-5
    loss_weights: dict[str, float] = field(default_factory=lambda: {"whitened_cse": 1.0})

    def __post_init__(self) -> None:
        if self.num_views < 2:
            raise ValueError(f"method.num_views must be at least 2, got {self.num_views}")
        if self.group_size < 1:
            raise ValueError(f"method.group_size must be positive, got {self.group_size}")
        if self.eps < 0:
            raise ValueError(f"method.eps must be non-negative, got {self.eps}")
        if self.mlp_only_train is not True:
            raise ValueError("method.mlp_only_train: WhitenedCSE evaluates before the head")


@METHODS.register("whitened_cse", WhitenedCSEConfig)
class WhitenedCSE(SimCSE):
    """K dropout views of each sentence, whitened with shuffled groups, through SimCSE's MLP,
    contrasted view 1 against each other view."""

    loss_terms = ("whitened_cse",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: WhitenedCSEConfig = self.method_cfg
        width = self.hparams["model"]["embed_dim"]
        if self.num_views != 2:
            raise ValueError(
                f"whitened_cse needs the two views of one sentence (data.train=unsupervised), "
                f"the data has {self.num_views}"
            )
        if width % cfg.group_size:
            raise ValueError(
                f"method.group_size {cfg.group_size} must divide model.embed_dim {width}"
            )

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The base's outputs (``text@0``, ``text@1``) plus ``K - 2`` more dropout passes of
        ``text@0`` as ``text@2`` ... in training batches."""
        outputs = super().encode(batch)
        name = self.modalities[0]
        tower = self.towers[name]
        first = tower_input(tower, batch, view_name(name, 0))
        if first is not None:
            for v in range(2, self.method_cfg.num_views):
                outputs[view_name(name, v)] = tower(first)
        return outputs

    def permutation(self, view: int, width: int) -> Tensor:
        """View ``view``'s channel permutation at this step (identity without ``shuffle``)."""
        if not self.method_cfg.shuffle:
            return torch.arange(width)
        seed = (torch.initial_seed() * 1_000_003 + self.global_step * 7_919 + view) % 2**62
        return torch.randperm(width, generator=torch.Generator().manual_seed(seed))

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: WhitenedCSEConfig = self.method_cfg
        name = self.modalities[0]
        views = []
        for v in range(cfg.num_views):
            pooled = outputs[view_name(name, v)].pooled
            order = self.permutation(v, pooled.shape[1]).to(pooled.device)
            white = shuffled_group_whitening(pooled, order, cfg.group_size, cfg.eps)
            views.append(F.normalize(self.mlp(white), dim=-1))
        return {"whitened_cse": multi_positive_info_nce(views, self.scale)}
