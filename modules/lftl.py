"""LFTL (Lyu, Hao, Chen, Xu, Wang, Ding, Han, "Learn from the Learnt: Source-Free Active
Domain Adaptation via Contrastive Sampling and Visual Persistence", ECCV 2024;
methods/part1.md section 7; official code ``lyumengyao/lftl``: ``adapt_target.py``,
``mining/contrastive_sampling.py``, ``mining/strategy.py``, which this follows where the paper
is loose). Losses and scores: modules/losses/lftl.py.

One image encoder ``f`` (embedding ``e = f(x)``, the code's bottleneck feature) and a linear
classifier ``h``. The active loop is a chain of stages (experiments/lftl.yaml):

- **source stage** (no ``features_from``): CE with label smoothing 0.1 on the labelled source
  domain (SHOT's ``train_source.py``); the source data is never read again.
- **query round r** (``features_from``: the source stage and rounds 1..r-1, in order;
  ``init_from``: round r-1): ``prepare_fit`` re-plays the r queries on the target pool, query
  k scoring the items still unlabelled with the model after round k-1 (``p_t``) and the one
  after round k-2 (``p_{t-1}``, the code's stored ``prev_pred`` of the items left unlabelled;
  none for k = 1), and adds the ``budget`` share of the pool it picks to the labelled set. The
  models are frozen and the data fixed, so every round re-plays the same queries; no query state
  travels in checkpoints. The queried items and their oracle labels (``label/<task>``) are read
  once through ``FitContext.loader``; training then reads no other target label.
  Each step: a data batch of the target pool (its items not yet labelled are the unlabelled
  batch) and a labelled batch of ``labelled_batch_size`` queried items (cycled in seeded
  random order, the code's ``train_lbl_dataloader``), and

      L = CE(h(f(x_l)), y_l) + beta_im L_IM(unlabelled) + beta_vpa L_VPA(unlabelled)   (Eq. 9)

  with the anchor memory updated from the labelled batch's embeddings (mu = 0.9) before L_VPA.

The query strategy is ``method.strategy``: ``lftl`` (contrastive active sampling, Eq. 4-6),
``random`` (uniform, seeded from the experiment seed) or ``entropy`` (highest predictive
entropy of ``p_t``), so a baseline is one override. Seeds of the random queries and of the
labelled batches: ``torch.initial_seed()`` at ``prepare_fit``, i.e. the stage's ``seed``
(+ ``seed_offset``), the same in every stage of a chain.

Scoped down (and why): the mixup fine-tuning of the labelled items after each epoch and the
memory refresh at each epoch start are left out (the base has no per-epoch hook; the memory is
built from the current model's embeddings of the labelled items at the start of each round and
then updated at every step, so each anchor is refreshed every few steps anyway); the memory is
rebuilt each round instead of carrying its 0.1 share of the previous round; the last round takes
the same budget as the others (the code gives it the remainder of the total); the optimiser is
the platform's (AdamW with warm-up and cosine decay), not SGD-nesterov with the ``(1 + 10p)^-0.75``
decay; ResNet + bottleneck + weight-normed classifier become the platform's small CNN + a linear
classifier. Defaults are the Office-31 setting (beta = 0.03, K = 100, lambda_topk = 0.1,
beta_im = 0.9, beta_vpa = 1). L_IM and L_VPA are per-rank batch means, as in the code (one GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, FitContext, MethodConfig
from modules.losses.lftl import (
    contrastive_scores,
    entropy,
    im_loss,
    lowest,
    update_memory,
    vpa_loss,
)
from modules.registry import METHODS
from modules.towers.output import TowerOutput

STRATEGIES = ("lftl", "random", "entropy")


@dataclass
class LFTLConfig(MethodConfig):
    """``task``: the label the classifier predicts (``label/<task>``); ``strategy``: how a
    round queries (``lftl`` / ``random`` / ``entropy``); ``budget``: the share of the target
    pool each round labels; ``beta`` (the code's ``cd_ratio``), ``top_k``, ``lambda_topk``:
    contrastive active sampling; ``momentum``: the anchor memory's mu (weight of the new
    embedding); ``labelled_batch_size``: queried items per step; ``label_smoothing``: the
    source stage's CE."""

    name: str = "lftl"
    task: str = "shape"
    strategy: str = "lftl"
    budget: float = 0.02
    beta: float = 0.03
    top_k: int = 100
    lambda_topk: float = 0.1
    momentum: float = 0.9
    labelled_batch_size: int = 32
    label_smoothing: float = 0.1
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"ce": 1.0, "im": 0.9, "vpa": 1.0}
    )

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: must be one of {STRATEGIES}, got {self.strategy!r}")
        if not 0.0 < self.budget < 1.0:
            raise ValueError(f"budget: must be in (0, 1), got {self.budget}")
        if self.beta < 0 or self.lambda_topk < 0:
            raise ValueError("beta: beta and lambda_topk must be non-negative")
        if self.top_k < 1:
            raise ValueError(f"top_k: must be positive, got {self.top_k}")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"momentum: must be in (0, 1], got {self.momentum}")
        if self.labelled_batch_size < 1:
            raise ValueError(
                f"labelled_batch_size: must be positive, got {self.labelled_batch_size}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")


def query(
    strategy: str,
    probs: Tensor,
    prev_probs: Tensor | None,
    n: int,
    rng: np.random.Generator,
    cfg: LFTLConfig,
) -> Tensor:
    """Positions (rows of ``probs``: the unlabelled items) of the ``n`` items a round labels."""
    if strategy == "random":
        return torch.as_tensor(np.sort(rng.choice(len(probs), n, replace=False)))
    if strategy == "entropy":
        return lowest(-entropy(probs), n)
    scores = contrastive_scores(probs, prev_probs, cfg.beta, cfg.top_k, cfg.lambda_topk)
    return lowest(scores, n)


@METHODS.register("lftl", LFTLConfig)
class LFTL(AlignmentModule):
    """Source-free active domain adaptation: query rounds by contrastive active sampling, then
    CE on the queried items + information maximisation + visual-persistence attention on the
    rest of the target pool (see the module docstring)."""

    loss_terms = ("ce", "im", "vpa")
    num_encoders = 1
    loss_on_eval = False  # evaluation batches are scored by the classifier only
    #: the stage's query round (0: the source stage)
    round: int
    labelled: Tensor  # bool [N]: pool items queried so far
    labelled_items: Tensor  # int64 [L]: their item ids (sorted)
    anchors: dict[str, Tensor]  # "image" [L, ...], "label" [L], "memory" [L, D]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: LFTLConfig = self.method_cfg
        if cfg.task not in self.labels:
            raise ValueError(f"method.task: {cfg.task!r} is not a data label ({list(self.labels)})")
        self.image = self.modalities[0]
        self.classifier = nn.Linear(self.hparams["model"]["embed_dim"], self.labels[cfg.task])
        self.round = 0
        self.anchors = {}
        self.drawn = torch.zeros(0, dtype=torch.long)  # this step's labelled batch (anchor rows)
        self.order = torch.zeros(0, dtype=torch.long)  # the labelled items' current cycle
        self.generator = torch.Generator()

    # ------------------------------------------------------------------ the query rounds

    def prepare_fit(self, ctx: FitContext) -> None:
        """Round ``len(ctx.earlier)``: re-play the queries (see the module docstring), read the
        queried items and their labels, and build the anchor memory; the classifier continues
        from the previous stage's. The source stage (no earlier models) does nothing."""
        models = [model.requires_grad_(False).eval() for model in ctx.earlier]
        self.round = len(models)
        if not models:
            return
        cfg: LFTLConfig = self.method_cfg
        self.classifier.load_state_dict(models[-1].classifier.state_dict())
        seed = torch.initial_seed()
        probs = [self.pool_probs(model, ctx) for model in models]
        labelled = torch.zeros(ctx.num_items, dtype=torch.bool)
        n = max(1, round(cfg.budget * ctx.num_items))
        for k in range(1, self.round + 1):
            pool = torch.nonzero(~labelled).squeeze(1)
            if len(pool) < n:
                raise ValueError(f"round {k}: {len(pool)} unlabelled items left, budget {n}")
            previous = probs[k - 2][pool] if k >= 2 else None
            rng = np.random.default_rng([seed, k, 47])
            picked = query(cfg.strategy, probs[k - 1][pool], previous, n, rng, cfg)
            labelled[pool[picked]] = True
        self.labelled = labelled
        self.labelled_items = torch.nonzero(labelled).squeeze(1)
        self.anchors = self.read_anchors(ctx, models[-1])
        self.generator.manual_seed(seed * 1000 + self.round)
        classes = int(torch.unique(self.anchors["label"]).numel())
        ctx.log_metrics(
            {"query/labelled": float(len(self.labelled_items)), "query/classes": float(classes)}
        )

    @torch.no_grad()
    def pool_probs(self, model: LFTL, ctx: FitContext) -> Tensor:
        """``model``'s softmax over every pool item [N, C], in item order."""
        probs = []
        for batch in ctx.loader(None):
            out = model.towers[self.image]({self.image: batch[self.image]})
            probs.append(model.logits(out).softmax(dim=-1))
        return torch.cat(probs)

    @torch.no_grad()
    def read_anchors(self, ctx: FitContext, model: LFTL) -> dict[str, Tensor]:
        """The queried items' images and oracle labels, and their memory: ``model``'s
        embeddings (``m <- (1 - mu) 0 + mu e``, the code's first update, same direction)."""
        images, labels, memory = [], [], []
        for batch in ctx.loader(self.labelled_items.tolist()):
            images.append(batch[self.image])
            labels.append(batch[f"label/{self.method_cfg.task}"])
            out = model.towers[self.image]({self.image: batch[self.image]})
            memory.append(self.method_cfg.momentum * model.embedding(self.image, out))
        return {"image": torch.cat(images), "label": torch.cat(labels), "memory": torch.cat(memory)}

    def draw_labelled(self) -> Tensor:
        """The next ``labelled_batch_size`` anchor rows, cycling through seeded permutations."""
        size = min(self.method_cfg.labelled_batch_size, len(self.labelled_items))
        if len(self.order) < size:
            cycle = torch.randperm(len(self.labelled_items), generator=self.generator)
            self.order = torch.cat([self.order, cycle])
        drawn, self.order = self.order[:size], self.order[size:]
        return drawn

    # ------------------------------------------------------------------ hooks

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The batch's images; in a query round's training also a labelled batch
        (``labelled``) drawn from the queried items."""
        outputs = super().encode(batch)
        if self.training and self.round > 0:
            self.drawn = self.draw_labelled()
            images = self.anchors["image"][self.drawn].to(
                self.device, outputs[self.image].pooled.dtype
            )
            outputs["labelled"] = self.towers[self.image]({self.image: images})
        return outputs

    def logits(self, output: TowerOutput) -> Tensor:
        """Class logits of a tower output."""
        return self.classifier(self.embedding(self.image, output))

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: LFTLConfig = self.method_cfg
        logits = self.logits(outputs[self.image])
        zero = logits.sum() * 0.0
        if self.round == 0:  # the source stage: every item labelled
            ce = F.cross_entropy(
                logits, batch[f"label/{cfg.task}"], label_smoothing=cfg.label_smoothing
            )
            return {"ce": ce, "im": zero, "vpa": zero}
        labels = self.anchors["label"][self.drawn].to(logits.device)
        anchor_embeddings = self.embedding(self.image, outputs["labelled"])
        ce = F.cross_entropy(self.logits(outputs["labelled"]), labels)
        memory = self.anchors["memory"].to(anchor_embeddings.device, anchor_embeddings.dtype)
        memory[self.drawn] = update_memory(
            memory[self.drawn], anchor_embeddings.detach(), cfg.momentum
        )
        self.anchors["memory"] = memory
        unlabelled = ~self.labelled.to(logits.device)[batch["index"]]
        if not unlabelled.any():
            return {"ce": ce, "im": zero, "vpa": zero}
        embeddings = self.embedding(self.image, outputs[self.image])[unlabelled]
        return {"ce": ce, "im": im_loss(logits[unlabelled]), "vpa": vpa_loss(embeddings, memory)}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Target accuracy of the classifier (``classifier`` evaluator)."""
        return {"classifier": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """``logits/image/<task>`` of the evaluation images."""
        return {f"logits/{self.image}/{self.method_cfg.task}": self.logits(outputs[self.image])}
