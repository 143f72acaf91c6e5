"""STRUCTURE (Gröger et al., "With Limited Data for Multimodal Alignment, Let the STRUCTURE
Guide You"): align two frozen uni-modal encoders with little paired data.

Following the official code (src/loss/clip_loss.py, src/trainers/alignment_trainer.py in the
first author's fork hhxk233/STRUCTURE):

- **Frozen encoders, a selected layer each.** ``O^I`` and ``O^T`` are the features of one layer
  of each frozen tower (``model.frozen: [image, text]``), read by forward hooks
  (:class:`~modules.layer_selection.LayerTap`: each CNN stage mean-pooled, each transformer
  block's [CLS] or masked token mean, or the tower's own pooled output).
- **Alignment heads.** ``A^I = f(O^I)``, ``A^T = g(O^T)``: linear (with bias, the official
  ``LinearAlignmentLayer``) or MLP (``Linear-ReLU-Linear``, ``MLPAlignmentLayer``) to
  ``align_dim`` (512). They are the only trained weights, and ``embedding`` returns them, so
  the loss, retrieval and zero-shot metrics all read ``A``.
- **Loss.** ``L = L_CLIP(A^I, A^T; τ) + λ_t · ½[R(O^I, A^I) + R(O^T, A^T)]``: the averaged
  symmetric InfoNCE on L2-normalised ``A`` at the fixed temperature of ``model.temperature``
  (0.05 in experiments/structure.yaml) plus the STRUCTURE regulariser ``R``
  (modules/losses/structure.py) at ``tau`` (0.05), with ``λ_t = lam · min(1, t / warmup)``
  at optimiser step ``t`` (λ = 10; the paper warms up over 1 000 steps). ``R`` is a
  within-batch quantity: it is computed on the global batch (features gathered across ranks,
  with gradients for ``A``), so DDP gives the single-process value and gradient. The terms
  ``r_image``/``r_text`` (weight 0) log the unweighted ``R`` of each side, also when
  ``lam = 0`` (the plain CLIP-heads baseline).
- **Layer selection** (``layer_selection: true``, before training, in ``prepare_fit``, when
  the frozen weights are loaded): on ``selection_samples`` (5 000) random training pairs,
  the mutual k-NN score (k by the Rice rule) of every (image layer, text layer) pair; the heads
  read the best pair (``best_only: true``). ``false``: ``image_layer``/``text_layer`` as
  configured (default -1, the towers' own outputs). The chosen layers are written into the
  hyper-parameters, so a saved checkpoint rebuilds heads of the right width.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modules.base import DualTowerModule, FitContext, MethodConfig
from modules.layer_selection import LayerTap, layer_scores, rice_k
from modules.losses.contrastive import clip_loss
from modules.losses.structure import (
    JS_FORMS,
    WEIGHTINGS,
    structure_regulariser,
    structure_weight,
)
from modules.registry import METHODS
from modules.towers.output import TowerOutput

log = logging.getLogger("alignlab")


@dataclass
class StructureConfig(MethodConfig):
    name: str = "structure"
    head: str = "linear"  # linear | mlp
    align_dim: int = 512
    lam: float = 10.0  # λ; 0 gives the baseline without STRUCTURE (plain CLIP heads)
    warmup: int = 1000  # steps over which λ_t rises linearly from 0 to λ
    levels: int = 1  # L: random-walk hops compared
    tau: float = 0.05  # temperature of the neighbourhood softmax
    weighting: str = "none"  # none | inverse (w_l = 1/l)
    js_form: str = "code"  # code: ½[KL(M‖Q)+KL(M‖P)] | textbook: ½[KL(P‖M)+KL(Q‖M)]
    layer_selection: bool = True
    selection_samples: int = 5000
    # the layer each head reads: an index into the tower's taps (blocks..., output); -1 is the
    # tower's own pooled output. Layer selection overwrites both.
    image_layer: int = -1
    text_layer: int = -1
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"clip": 1.0, "structure": 1.0, "r_image": 0.0, "r_text": 0.0}
    )

    def __post_init__(self) -> None:
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"head: expected 'linear' or 'mlp', got {self.head!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.js_form not in JS_FORMS:
            raise ValueError(f"js_form: expected one of {JS_FORMS}, got {self.js_form!r}")
        if self.levels < 1 or self.warmup < 0 or self.lam < 0 or self.tau <= 0:
            raise ValueError("levels >= 1, warmup >= 0, lam >= 0 and tau > 0 are required")
        if self.selection_samples < 2:
            raise ValueError("selection_samples: needs at least 2")


def alignment_head(in_dim: int, out_dim: int, kind: str) -> nn.Module:
    """The official linear (with bias) or two-layer ReLU MLP alignment layer."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


@METHODS.register("structure", StructureConfig)
class Structure(DualTowerModule):
    """CLIP on alignment heads over frozen towers' selected layers + the STRUCTURE regulariser."""

    loss_terms = ("clip", "structure", "r_image", "r_text")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        model = kwargs["model"]
        if self.pair != ("image", "text"):
            raise ValueError(f"structure aligns image and text towers, not {self.modalities}")
        if set(self.frozen) != {"image", "text"}:
            raise ValueError(
                "structure aligns frozen encoders: set model.frozen: [image, text] "
                f"(got {list(self.frozen)})"
            )
        cfg = self.method_cfg
        layers = {"image": cfg.image_layer, "text": cfg.text_layer}
        self.taps = {
            side: LayerTap(self.towers[side], model["embed_dim"], layers[side])
            for side in self.pair
        }
        for side, tap in self.taps.items():
            if not -len(tap.names) <= layers[side] < len(tap.names):
                raise ValueError(
                    f"{side}_layer: {layers[side]} is not among the {len(tap.names)} layers "
                    f"{tap.names}"
                )
        self.heads = nn.ModuleDict(
            {
                side: alignment_head(tap.width, cfg.align_dim, cfg.head)
                for side, tap in self.taps.items()
            }
        )
        #: The layer selection's result (None: not run): scores, n, k and the chosen layers.
        self.selection: dict[str, Any] | None = None

    def embedding(self, side: str, output: TowerOutput) -> torch.Tensor:
        """``A = head(O)``: the alignment head on the selected layer's features."""
        return self.heads[side](output.pooled)

    # ------------------------------------------------------------------ layer selection

    def prepare_fit(self, ctx: FitContext) -> None:
        """Select the best-aligned (image layer, text layer) pair by mutual k-NN and rebuild
        the heads for their widths (``layer_selection: true``); log the chosen layers, the best
        score and the whole score matrix (metrics at step 0, ``layer_selection.txt``)."""
        super().prepare_fit(ctx)
        cfg = self.method_cfg
        if not cfg.layer_selection:
            return
        features = self._layer_features(ctx)
        n = len(features["image"][0])
        k = rice_k(n)
        scores = layer_scores(features["image"], features["text"], k)
        best = int(scores.argmax())
        chosen = {"image": best // scores.shape[1], "text": best % scores.shape[1]}
        for side, layer in chosen.items():
            self.taps[side].selected = layer
            self.heads[side] = alignment_head(self.taps[side].width, cfg.align_dim, cfg.head)
        cfg.image_layer, cfg.text_layer = chosen["image"], chosen["text"]
        # saved with the checkpoint: load_module rebuilds heads of the chosen widths
        self.hparams["method"] = {
            **self.hparams["method"],
            "image_layer": chosen["image"],
            "text_layer": chosen["text"],
        }
        self.selection = {"scores": scores, "n": n, "k": k, **chosen}
        names = {side: self.taps[side].names for side in self.pair}
        log.info(
            "structure: layer selection on %d pairs (k=%d): image %s, text %s, mutual k-NN %.4f "
            "(last layers %.4f)",
            n,
            k,
            names["image"][chosen["image"]],
            names["text"][chosen["text"]],
            scores.max().item(),
            scores[-1, -1].item(),
        )
        metrics = {
            "layer_selection/image_layer": float(chosen["image"]),
            "layer_selection/text_layer": float(chosen["text"]),
            "layer_selection/best_score": scores.max().item(),
            "layer_selection/last_layers_score": scores[-1, -1].item(),
            "layer_selection/k": float(k),
        }
        for i, image_name in enumerate(names["image"]):
            for j, text_name in enumerate(names["text"]):
                key = f"layer_selection/score/image_{image_name}-text_{text_name}"
                metrics[key] = scores[i, j].item()
        ctx.log_metrics(metrics)
        lines = [
            f"mutual k-NN on {n} training pairs, k = {k} "
            "(rows: image layers, columns: text layers)",
            "\t".join(["", *names["text"]]),
            *(
                "\t".join([name, *(f"{v:.4f}" for v in scores[i].tolist())])
                for i, name in enumerate(names["image"])
            ),
            f"chosen: image {names['image'][chosen['image']]}, "
            f"text {names['text'][chosen['text']]}",
        ]
        ctx.log_text("layer_selection.txt", "\n".join(lines) + "\n")

    @torch.no_grad()
    def _layer_features(self, ctx: FitContext) -> dict[str, list[torch.Tensor]]:
        """Every tapped layer's features of ``selection_samples`` random training pairs (the
        same draw on every rank: the stage seeds the generator)."""
        picked = torch.randperm(ctx.num_items)[: self.method_cfg.selection_samples]
        chunks: dict[str, list[list[torch.Tensor]]] = {side: [] for side in self.pair}
        for batch in ctx.loader(picked.tolist()):
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            for side in self.pair:
                self.towers[side](batch)
                chunks[side].append([f.float().cpu() for f in self.taps[side].features])
        return {
            side: [torch.cat(layer) for layer in zip(*parts, strict=True)]
            for side, parts in chunks.items()
        }

    # ------------------------------------------------------------------ loss

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        cfg = self.method_cfg
        frozen = {side: outputs[side].pooled.detach() for side in self.pair}
        aligned = {side: self.embedding(side, outputs[side]) for side in self.pair}
        clip = clip_loss(
            self.normalized("image", outputs["image"]),
            self.normalized("text", outputs["text"]),
            self.scale,
            ids=batch["item_id"],
        )
        regulariser = {
            side: structure_regulariser(
                frozen[side],
                aligned[side],
                levels=cfg.levels,
                tau=cfg.tau,
                weighting=cfg.weighting,
                js_form=cfg.js_form,
            )
            for side in self.pair
        }
        lam = structure_weight(self.global_step, cfg.lam, cfg.warmup)
        return {
            "clip": clip,
            "structure": lam * 0.5 * (regulariser["image"] + regulariser["text"]),
            "r_image": regulariser["image"],
            "r_text": regulariser["text"],
        }

    def scalars(self, outputs: dict[str, TowerOutput]) -> dict[str, torch.Tensor]:
        """λ_t, the regulariser's weight at this step."""
        cfg = self.method_cfg
        return {
            "structure_lambda": torch.tensor(
                structure_weight(self.global_step, cfg.lam, cfg.warmup)
            )
        }
