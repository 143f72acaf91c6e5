"""CL + MoE: contrastive sentence embeddings with domain experts (Gleghorn lab, "Contrastive
Learning and Mixture of Experts Enables Precise Vector Embeddings", methods/part2.md section 48).

Pairs ``(a_i, b_i)`` that should be near each other (in the paper: abstracts of co-cited
papers; here the ``sentences`` family's ``paraphrase`` pairs ``text@0`` / ``text@1``, two
realisations of one meaning) train one text encoder with the Multiple Negatives Ranking loss,

    L = CE(S, I),    S_ij = scale * cos(a_i, b_j),

in-batch softmax cross-entropy from each ``a_i`` to its own ``b_i`` among every ``b_j`` of the
batch (one direction): the same InfoNCE as unsupervised SimCSE's Eq. 4, so it is computed by
:func:`~modules.losses.simcse.simcse_loss` (local anchors against gathered positives). The
mixture of experts: every feed-forward block of the encoder is copied into ``N`` experts, one
per domain, each a copy of the pretrained (or initial) block, and every sentence goes through
its domain's expert (sentence-wise enforced routing by ``label/domain``), so each domain's pairs
train only its expert while attention, embeddings and norms are shared. This works on the
from-scratch tower and on MiniLM (:func:`copy_ffn_into_experts`). The baseline is the same
encoder without experts (``method.experts=false``), trained with the same loss on the same pairs.

Choices (⚠ in the spec, checked against Gleghorn-Lab/Mixture-of-Experts-Sentence-Similarity):

- the loss is sentence-transformers' MNR (cosine, scale 20, one direction a -> b), as the spec
  defaults (the repository's ``MNR_loss`` in ``models/losses.py``, adapted from it, has the same
  form with a scale argument); the repository's later ``mnr_plus`` / ``clip_loss`` variants
  (dot product, targets from the in-view similarities) are not implemented. The scale is the
  base temperature, fixed at 0.05 = 1/20 in experiments/moe_embeddings.yaml
  (``model.learnable_temperature: false``);
- routing is the repository's ``SentenceEnforcedSwitchMoeBlock`` (``models/moe_blocks.py``): the
  sentence's domain label picks one expert for all its tokens; no router is learned, so the
  optional router losses (``EXLoss``, ``SpecifiedExpertLoss``) have nothing to train;
- an expert is the block's two linear maps (up- and down-projection, activation in between);
  the residual, dropout and layer norms stay shared, as in the repository's BERT experts
  (``BertIntermediate`` + ``BertOutput`` dense maps).

Scoped down: no co-citation graph (the family's paraphrases are the co-cited pairs), 4
synthetic domains instead of 5 biomedical ones, and the headline "N experts ~ N separate
models" is measured as per-domain retrieval R@1 against the one shared encoder
(``domain_retrieval`` evaluator). Measured from scratch: no gap between
experts and the shared encoder (87.0 +- 0.7 vs 86.6 +- 0.7 mean R@1, 3 seeds).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig
from modules.losses.simcse import simcse_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput


class RoutedLinear(nn.Module):
    """``n_experts`` copies of one ``nn.Linear``; each sample (first dimension) goes through the
    copy its route names. The route is set from outside (:func:`routed`) before the forward
    pass, because the towers take tensors, not labels. Without a route (text of unknown domain:
    ``encode_texts``, zero-shot prompts) the layer uses the mean of the experts' weights: one
    merged feed-forward block, the original block until the experts diverge.

    Every expert is touched by the forward pass (a zero-weighted sum), so an expert that no
    sample of the batch uses gets a zero gradient rather than none: DDP then sees every
    parameter used, and "expert ``d`` learns nothing from domain ``d' != d``" reads as exact
    zeros."""

    def __init__(self, linear: nn.Linear, n_experts: int) -> None:
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"n_experts must be at least 1, got {n_experts}")
        weight = linear.weight.detach()
        self.weight = nn.Parameter(weight.unsqueeze(0).repeat(n_experts, 1, 1).clone())
        self.bias = (
            nn.Parameter(linear.bias.detach().unsqueeze(0).repeat(n_experts, 1).clone())
            if linear.bias is not None
            else None
        )
        self.route: Tensor | None = None

    @property
    def n_experts(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        route = self.route
        if route is None:  # text of unknown domain: one block with the experts' mean weights
            bias = self.bias.mean(0) if self.bias is not None else None
            return nn.functional.linear(x, self.weight.mean(0), bias)
        if route.shape != x.shape[:1]:
            raise ValueError(f"route has shape {tuple(route.shape)}; the input {tuple(x.shape)}")
        out = x.new_zeros(*x.shape[:-1], self.weight.shape[1])
        for expert in torch.unique(route).tolist():
            rows = route == expert
            bias = self.bias[expert] if self.bias is not None else None
            out[rows] = nn.functional.linear(x[rows], self.weight[expert], bias)
        touched = self.weight.sum() + (self.bias.sum() if self.bias is not None else 0.0)
        return out + 0.0 * touched


def _experts_of(module: nn.Module, name: str, n_experts: int) -> RoutedLinear:
    layer = getattr(module, name)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{type(module).__name__}.{name} is {type(layer).__name__}, not Linear")
    routed_layer = RoutedLinear(layer, n_experts)
    setattr(module, name, routed_layer)
    return routed_layer


def copy_ffn_into_experts(tower: nn.Module, n_experts: int) -> list[RoutedLinear]:
    """Replace every feed-forward block of ``tower`` by ``n_experts`` copies of itself (its two
    linear maps) and return the routed layers, in order. Knows the two text towers' blocks:

    - ``nn.TransformerEncoderLayer`` (the from-scratch tower, modules/towers/layers.py):
      ``linear1`` and ``linear2``; the layer's fused inference path, which reads
      ``linear1.weight`` directly, is turned off for it;
    - Hugging Face BERT layers (MiniLM, modules/towers/minilm.py): ``intermediate.dense`` and
      ``output.dense`` (``output.LayerNorm`` and the residual stay shared).

    A tower with neither is an error (nothing would be routed)."""
    routed_layers: list[RoutedLinear] = []
    for module in list(tower.modules()):
        if isinstance(module, nn.TransformerEncoderLayer):
            routed_layers += [_experts_of(module, n, n_experts) for n in ("linear1", "linear2")]
            module.activation_relu_or_gelu = False  # no fused fast path (it skips the experts)
        elif hasattr(module, "intermediate") and hasattr(module, "attention"):
            routed_layers.append(_experts_of(module.intermediate, "dense", n_experts))
            routed_layers.append(_experts_of(module.output, "dense", n_experts))
    if not routed_layers:
        raise ValueError(f"{type(tower).__name__} has no feed-forward block to copy into experts")
    return routed_layers


@contextmanager
def routed(layers: list[RoutedLinear], route: Tensor) -> Iterator[None]:
    """Within the block, every layer of ``layers`` sends sample ``i`` to expert ``route[i]``."""
    if len(layers) and (route.min() < 0 or route.max() >= layers[0].n_experts):
        raise ValueError(
            f"route ids must be in [0, {layers[0].n_experts}), got {route.min()}..{route.max()}"
        )
    for layer in layers:
        layer.route = route
    try:
        yield
    finally:
        for layer in layers:
            layer.route = None


@dataclass
class MoEEmbeddingsConfig(MethodConfig):
    name: str = "moe_embeddings"
    experts: bool = True  # false: the shared-encoder baseline (same loss, no experts)
    route_label: str = "domain"  # the label that picks the expert (label/<route_label>)
    encoder: str = "text"  # the encoder that gets experts and the loss

    def __post_init__(self) -> None:
        if not self.route_label:
            raise ValueError("route_label: name the label that routes samples, e.g. domain")


@METHODS.register("moe_embeddings", MoEEmbeddingsConfig)
class MoEEmbeddings(AlignmentModule):
    """One text encoder (with domain experts) trained by MNR between two views of each pair."""

    loss_terms = ("mnr",)
    #: validation/test batches are STS pairs (``text``, ``text@1``), not training pairs
    loss_on_eval = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: MoEEmbeddingsConfig = self.method_cfg
        if cfg.encoder not in self.modalities:
            raise ValueError(f"method.encoder: {cfg.encoder!r} not among {list(self.modalities)}")
        if cfg.route_label not in self.labels:
            raise ValueError(
                f"method.route_label: the data has no label {cfg.route_label!r} "
                f"(labels: {sorted(self.labels)})"
            )
        self.n_experts = self.labels[cfg.route_label] if cfg.experts else 1
        self.routed_layers = (
            copy_ffn_into_experts(self.towers[cfg.encoder], self.n_experts) if cfg.experts else []
        )

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Every encoder on its inputs, each sample through its domain's experts."""
        if not self.routed_layers:
            return super().encode(batch)
        key = f"label/{self.method_cfg.route_label}"
        if key not in batch:
            raise KeyError(f"moe_embeddings routes by {key}; the batch has {sorted(batch)}")
        with routed(self.routed_layers, batch[key].long()):
            return super().encode(batch)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """MNR from view 0 to view 1 (``<encoder>@0`` -> ``<encoder>@1``), gathered columns."""
        name = self.method_cfg.encoder
        a = self.normalized(name, outputs[f"{name}@0"])
        b = self.normalized(name, outputs[f"{name}@1"])
        return {"mnr": simcse_loss(a, b, self.scale)}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Per-domain retrieval of the second sentence of each pair from the first."""
        return {"domain_retrieval": {"label": self.method_cfg.route_label}}
