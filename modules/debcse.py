"""DebCSE (Miao, Du and Zhang, "DebCSE: Rethinking Unsupervised Contrastive Sentence Embedding
Learning in the Debiasing Perspective", CIKM 2023; methods/part1.md Sec. 23).

SimCSE's supervised objective (Eq. 5 of SimCSE, modules/losses/simcse.py: an anchor, its
positive, and every sentence's hard negative among the columns) on pairs mined *without labels*
from the training sentences themselves, by inverse-propensity-weighted sampling
(modules/debcse_sampling.py):

1. before training (``prepare_fit``) a frozen scorer embeds every training sentence: the model
   of an earlier stage (``features_from``, e.g. a SimCSE run) or, without one, this model's own
   towers as they start (the pretrained MiniLM); each sentence gets ``num_candidates`` positive
   candidates (its scorer nearest neighbours) and as many negative candidates (its nearest by
   word overlap among the others);
2. each candidate's propensity is how common its confounder bin is (positives: word overlap x
   length difference; negatives: scorer similarity), ``num_bins`` equal-width bins per
   confounder;
3. at every step each sentence of the batch draws one positive and one hard negative with
   probability proportional to 1 / propensity (seeded by seed, step and sample), encoded as
   views ``text@1`` and ``text@2`` (the data's ``text@1``, the same sentence, is replaced).

Everything about the sampling is a reconstruction from the abstract (no official code was
found; the paper's method section was not available): which candidates, which confounders,
the binned propensity and sampling one pair per step are this implementation's choices, marked
⚠ in the spec. The temperature (0.05) and the training-only MLP are SimCSE's. The baseline is
``method.name: simcse`` on the same data, tower and budget: experiments/debcse.yaml trains it
as its first stage, which is also the scorer of the second (DebCSE from a fresh tower), so a
from-scratch tower gets a scorer that knows the language. The scorer's text tower must read
this stage's token ids (checked).

Without ``prepare_fit`` (unit tests, the conformance step) there are no mined pairs and the
loss is unsupervised SimCSE's on the data's two views.

Scoped down: the pool is the whole training set, its word bags dense ``[n, words used]`` and its
similarities computed 1 024 anchors at a time: fine for the built-in pools (10 000 sentences); a
wiki1m-size pool would need a sparse overlap and an approximate neighbour index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.base import AlignmentModule, FitContext, tower_input, view_name
from modules.debcse_sampling import (
    bag_of_words,
    bin_index,
    draw_inverse_propensity,
    joint_bins,
    mine_candidates,
    pair_features,
    propensity,
)
from modules.losses.simcse import simcse_loss
from modules.registry import METHODS
from modules.simcse import SimCSE, SimCSEConfig
from modules.towers.output import TowerOutput


@dataclass
class DebCSEConfig(SimCSEConfig):
    """``num_candidates``: positive and negative candidates per sentence; ``num_bins``: bins per
    confounder of the propensity (1: every candidate equally likely, the ablation without
    inverse propensity weighting)."""

    name: str = "debcse"
    mlp_only_train: bool | None = True  # evaluated before the head, as unsupervised SimCSE
    num_candidates: int = 8
    num_bins: int = 4
    loss_weights: dict[str, float] = field(default_factory=lambda: {"debcse": 1.0})

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(f"method.num_candidates must be positive, got {self.num_candidates}")
        if self.num_bins < 1:
            raise ValueError(f"method.num_bins must be positive, got {self.num_bins}")


@dataclass
class MinedPairs:
    """The training sentences' tokens and each one's candidates with their propensities."""

    ids: Tensor  # [n, L]
    mask: Tensor  # [n, L]
    positives: Tensor  # [n, k] pool indices
    positive_propensity: Tensor  # [n, k]
    negatives: Tensor  # [n, k]
    negative_propensity: Tensor  # [n, k]


@METHODS.register("debcse", DebCSEConfig)
class DebCSE(SimCSE):
    """An anchor, a sampled positive and a sampled hard negative per sentence, SimCSE's MLP and
    supervised InfoNCE."""

    loss_terms = ("debcse",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.num_views != 2:
            raise ValueError(
                "debcse mines its pairs from unlabelled sentences (data.train=unsupervised), "
                f"the data has {self.num_views} views"
            )
        #: Filled by ``prepare_fit``; not part of the checkpoint (training only).
        self.mined: MinedPairs | None = None

    def prepare_fit(self, ctx: FitContext) -> None:
        """Embed the training sentences with the frozen scorer, mine candidates and their
        propensities, log what was mined."""
        if len(ctx.earlier) > 1:
            raise ValueError("features_from: debcse reads one scorer (one earlier stage)")
        scorer: AlignmentModule = ctx.earlier[0] if ctx.earlier else self
        if scorer.tokenizer is None or scorer.tokenizer.state() != self.tokenizer.state():
            raise ValueError(
                "features_from: the scorer reads other token ids than this stage (its text "
                "tower and training data must be this stage's)"
            )
        name = self.modalities[0]
        key = view_name(name, 0)
        was_training = scorer.training
        scorer.eval()
        ids, masks, embeddings, meaning = [], [], [], []
        for batch in ctx.loader(None):
            embeddings.append(scorer.encode_input(batch, name, key))
            ids.append(batch[f"{key}_ids"])
            masks.append(batch[f"{key}_mask"])
            meaning.append(batch["item_id"])
        scorer.train(was_training)
        length = max(x.shape[1] for x in ids)
        ids = torch.cat([F.pad(x, (0, length - x.shape[1])) for x in ids])
        mask = torch.cat([F.pad(x, (0, length - x.shape[1])) for x in masks]).bool()
        self.mined = self._mine(torch.cat(embeddings).float(), ids, mask)
        same = torch.cat(meaning)
        m = self.mined
        ctx.log_metrics(
            {
                "debcse/positive_candidates_same_meaning": float(
                    (same[m.positives] == same[:, None]).float().mean()
                ),
                "debcse/negative_candidates_same_meaning": float(
                    (same[m.negatives] == same[:, None]).float().mean()
                ),
            }
        )

    def _mine(self, embeddings: Tensor, ids: Tensor, mask: Tensor) -> MinedPairs:
        cfg: DebCSEConfig = self.method_cfg
        bags = bag_of_words(ids, mask)
        bags = bags[:, bags.sum(0) < len(bags)]  # words in every sentence (<cls>) say nothing
        embeddings = F.normalize(embeddings, dim=-1)
        positives, negatives = mine_candidates(embeddings, bags, cfg.num_candidates)
        anchors = torch.arange(len(ids))
        surface = pair_features(anchors, positives, bags, mask.sum(1))
        semantic = (embeddings[:, None, :] * embeddings[negatives]).sum(-1)
        return MinedPairs(
            ids,
            mask,
            positives,
            propensity(joint_bins(surface, cfg.num_bins)),
            negatives,
            propensity(bin_index(semantic, cfg.num_bins)),
        )

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Training batches once pairs are mined: the anchor ``text@0``, a drawn positive as
        ``text@1`` and a drawn hard negative as ``text@2``; otherwise the base's encoding."""
        name = self.modalities[0]
        anchor = tower_input(self.towers[name], batch, view_name(name, 0))
        if self.mined is None or anchor is None:
            return super().encode(batch)
        tower, m = self.towers[name], self.mined
        index, seed = batch["index"].cpu(), torch.initial_seed()
        outputs = {view_name(name, 0): tower(anchor)}
        drawn = (
            (m.positives, m.positive_propensity),
            (m.negatives, m.negative_propensity),
        )
        for v, (candidates, e) in enumerate(drawn, start=1):
            rows = draw_inverse_propensity(candidates, e, index, self.global_step, seed, v)
            mask = m.mask[rows]
            width = int(mask.sum(1).max())
            device = anchor["text_ids"].device
            outputs[view_name(name, v)] = tower(
                {
                    "text_ids": m.ids[rows, :width].to(device),
                    "text_mask": mask[:, :width].to(device),
                }
            )
        return outputs

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        name = self.modalities[0]
        views = [
            F.normalize(self.mlp(outputs[view_name(name, v)].pooled), dim=-1)
            for v in range(3)
            if view_name(name, v) in outputs
        ]
        negative = views[2] if len(views) == 3 else None
        loss = simcse_loss(
            views[0], views[1], self.scale, negative, self.method_cfg.hard_negative_weight
        )
        return {"debcse": loss}
