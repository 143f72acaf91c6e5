"""Large-margin softmax losses for classification-based metric learning on the unit sphere.

With ``cos_j = <x̂, Ŵ_j>`` (sample and class weights L2-normalised), ``θ_y`` the angle to the
true class and ``s`` the scale:

- ArcFace (Deng et al., CVPR 2019): ``L = -log e^{s cos(θ_y + m)} / (e^{s cos(θ_y + m)}
  + Σ_{j≠y} e^{s cos θ_j})`` (additive angular margin);
- CosFace (Wang et al., CVPR 2018): the target logit is ``s (cos θ_y - m)``.

``m = 0`` gives the scaled cosine softmax ``CE(s cos, y)`` for both.

Near ``θ_y = π`` the angular margin would wrap round (``θ + m > π`` makes ``cos(θ + m)`` grow
again as θ grows, rewarding a worse embedding). As in insightface and the CLIP-retrieval
paper's code (Visual-Computing/MCIP, ``loss/loss.py::ArcMarginProduct``, ``easy_margin=False``),
the target logit falls back to the CosFace-like ``cos θ - m sin m`` once ``θ > π - m``
(``cos θ <= cos(π - m)``), which keeps it decreasing in θ over [0, π] (with a small drop of
about m²/2 at the switch, where it reaches -1 from above). The branch not taken
is fed a safe input, and ``sin θ = sqrt(1 - cos²)`` is clamped away from 0, so gradients stay
finite at ``cos θ = ±1`` too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MARGINS = ("arc", "cos")


def _margin_target(target: Tensor, margin: float, kind: str) -> Tensor:
    """The margin-adjusted cosine of (true-class) entries ``target``: ``cos(θ + m)`` (arc,
    with the fallback above) or ``cos θ - m`` (cos); unscaled."""
    if kind not in MARGINS:
        raise ValueError(f"margin kind must be one of {MARGINS}, got {kind!r}")
    if kind == "cos":
        return target - margin
    inside = target > math.cos(math.pi - margin)
    safe = torch.where(inside, target, torch.zeros_like(target))
    sine = (1.0 - safe * safe).clamp_min(torch.finfo(safe.dtype).eps).sqrt()
    arc = safe * math.cos(margin) - sine * math.sin(margin)
    return torch.where(inside, arc, target - margin * math.sin(margin))


def margin_logits(cosine: Tensor, labels: Tensor, margin: float, kind: str = "arc") -> Tensor:
    """``cosine`` [B, C] with each row's true-class entry replaced by ``cos(θ_y + m)`` (arc,
    with the fallback above) or ``cos θ_y - m`` (cos); unscaled."""
    phi = _margin_target(cosine.gather(1, labels[:, None]), margin, kind)
    return cosine.scatter(1, labels[:, None], phi)


def margin_logits_where(
    cosine: Tensor, positive: Tensor, margin: float, kind: str = "arc"
) -> Tensor:
    """:func:`margin_logits` for several positives per row: every entry where ``positive``
    [B, C] (bool) holds gets the margin (MCIP's ``MultiLabelArcMarginProductForText``:
    ``one_hot * phi + (1 - one_hot) * cosine``); unscaled."""
    return torch.where(positive, _margin_target(cosine, margin, kind), cosine)


def margin_softmax_loss(
    embeddings: Tensor,
    class_weights: Tensor,
    labels: Tensor,
    scale: float,
    margin: float,
    kind: str = "arc",
) -> Tensor:
    """Mean over rows of ``CE(s * margin_logits(cos), y)``; ``embeddings`` [B, D] and
    ``class_weights`` [C, D] are L2-normalised here, ``labels`` [B] in [0, C)."""
    cosine = F.normalize(embeddings, dim=-1) @ F.normalize(class_weights, dim=-1).T
    return F.cross_entropy(scale * margin_logits(cosine, labels, margin, kind), labels)
