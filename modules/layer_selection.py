"""Layer taps on frozen towers and STRUCTURE's layer selection by mutual k-NN.

- :class:`LayerTap`: forward hooks that expose a vector per layer of a tower (each CNN stage
  mean-pooled over positions; each transformer block's [CLS] token, or its masked token mean for
  a mean-pooled text tower; last, the tower's own pooled projection), and make the tower return
  the features of one chosen layer as ``TowerOutput.pooled``.
- :func:`mutual_knn`: the representational-similarity score of the Platonic Representation
  Hypothesis (minyoungg/platonic-rep ``metrics.py``, which STRUCTURE's ``measure_alignment``
  uses): the mean fraction of the k nearest neighbours (cosine, self excluded) that two feature
  sets of the same samples share, features L2-normalised first.
- :func:`rice_k`: ``k = ⌈2 n^{1/3}⌉`` (the Rice rule; n = 5 000 gives 35).
- :func:`layer_scores`: the score of every (image layer, text layer) pair; STRUCTURE aligns the
  best pair (``best_only: true``) rather than the last layers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from modules.towers.image import CNNTower, ViTTower
from modules.towers.output import TowerOutput
from modules.towers.text import TextTransformerTower


def rice_k(n: int) -> int:
    """Number of neighbours for ``n`` samples by the Rice rule, ``⌈2 n^{1/3}⌉``."""
    if n < 2:
        raise ValueError(f"need at least two samples, got {n}")
    # round first: the float cube root of a cube (n = 1000) must not round up
    return min(n - 1, math.ceil(round(2.0 * n ** (1.0 / 3.0), 9)))


def nearest_neighbours(features: Tensor, k: int) -> Tensor:
    """Indices [N, k] of each row's ``k`` most cosine-similar other rows."""
    unit = F.normalize(features.float(), dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-math.inf)
    return similarity.topk(k, dim=1).indices


def knn_overlap(knn_a: Tensor, knn_b: Tensor) -> float:
    """Mean over rows of ``|knn_a[i] ∩ knn_b[i]| / k`` for neighbour index sets [N, k]."""
    shared = (knn_a[:, :, None] == knn_b[:, None, :]).sum(dim=(1, 2))
    return (shared.float() / knn_a.shape[1]).mean().item()


def mutual_knn(a: Tensor, b: Tensor, k: int) -> float:
    """Mutual k-NN alignment of paired features ``a`` [N, D_a] and ``b`` [N, D_b], in [0, 1]."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} rows against {len(b)}: the features must pair up")
    return knn_overlap(nearest_neighbours(a, k), nearest_neighbours(b, k))


def layer_scores(a_layers: list[Tensor], b_layers: list[Tensor], k: int) -> Tensor:
    """Mutual k-NN of every pair of layers: [len(a_layers), len(b_layers)]."""
    knn_a = [nearest_neighbours(x, k) for x in a_layers]
    knn_b = [nearest_neighbours(y, k) for y in b_layers]
    return torch.tensor([[knn_overlap(x, y) for y in knn_b] for x in knn_a], dtype=torch.float64)


def _masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class LayerTap:
    """Hooks on a tower: every call records one vector per layer (``features``, blocks first,
    the tower's pooled projection last) and returns ``TowerOutput(features[selected], None,
    mask)``, so whatever calls the tower (training, evaluation, zero-shot prompts) sees the
    selected layer. Supports the cnn and vit image towers and the transformer text tower."""

    def __init__(self, tower: nn.Module, embed_dim: int, selected: int = -1) -> None:
        if isinstance(tower, CNNTower):
            blocks: list[nn.Module] = list(tower.stages)
            widths = [stage.down[0].out_channels for stage in tower.stages]
            self.pooling = "spatial"
        elif isinstance(tower, ViTTower | TextTransformerTower):
            blocks = list(tower.encoder.layers)
            widths = [tower.norm.normalized_shape[0]] * len(blocks)
            self.pooling = "mean" if getattr(tower, "pooling", "cls") == "mean" else "cls"
        else:
            raise NotImplementedError(
                f"no layer taps for {type(tower).__name__}; supported: cnn, vit, transformer"
            )
        self.names = [f"block{i}" for i in range(len(blocks))] + ["output"]
        self.widths = [*widths, embed_dim]
        self.selected = selected
        #: The pooled per-layer features of the latest call.
        self.features: list[Tensor] = []
        self._raw: list[Tensor] = []
        self.handles: list[RemovableHandle] = [
            block.register_forward_hook(self._record) for block in blocks
        ]
        self.handles.append(tower.register_forward_hook(self._finish))

    @property
    def width(self) -> int:
        """Width of the selected layer's features."""
        return self.widths[self.selected]

    def _record(self, module: nn.Module, args: Any, output: Tensor) -> None:
        self._raw.append(output)

    def _pool(self, raw: Tensor, mask: Tensor | None) -> Tensor:
        if self.pooling == "spatial":
            return raw.mean(dim=(2, 3))
        if self.pooling == "mean":
            return _masked_mean(raw, mask)
        return raw[:, 0]

    def _finish(self, module: nn.Module, args: Any, output: TowerOutput) -> TowerOutput:
        raw, self._raw = self._raw, []
        self.features = [self._pool(x, output.mask) for x in raw] + [output.pooled]
        return TowerOutput(self.features[self.selected], None, output.mask)
