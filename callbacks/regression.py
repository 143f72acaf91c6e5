"""Regression error overall and by shot region, the protocol of deep imbalanced regression."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.metrics import _at_least_float32, first_occurrence

REGIONS = ("many", "medium", "few")


def geometric_mean(errors: Tensor) -> Tensor:
    """exp(mean(log e)) in float64: 0 if any error is 0 (as ``scipy.stats.gmean``), NaN if
    there is no error to average."""
    if len(errors) == 0:
        return torch.tensor(float("nan"), dtype=torch.float64, device=errors.device)
    return errors.double().log().mean().exp()


class RegressionMAE(Metric):
    """Mean absolute error and geometric mean of absolute errors (GM), overall and per shot
    region, as in Yang et al. 2021, "Delving into Deep Imbalanced Regression" (the evaluation of
    its benchmarks: ``shot_metrics`` in YyzHarry/imbalanced-regression) and ConR (Keramati et
    al. 2024).

    Target values are put in bins of width ``bin_width`` centred on its multiples, bin
    b = floor(y / bin_width + 0.5): targets on a grid of the bin width (ages in years, STS-B
    scores in steps of 0.2 with width 0.1 or 0.2) land in their own bin whatever float rounding
    does, so the default width 1 on integer targets gives the per-value counts of the DIR code.
    A bin's region is set by how many *training* targets fall in it: ``many`` if more than
    ``many_shot`` (100), ``few`` if fewer than ``few_shot`` (20; bins unseen in training are
    few-shot), ``medium`` otherwise (20 to 100 inclusive). A region's MAE and GM average over
    its test samples (not over its bins), as in the DIR code.

    ``set_train_targets`` takes the training targets (not a synced state: every rank passes
    the same); ``update`` takes predictions, targets (NaN = unknown, ignored) and ``index``;
    ``compute`` keeps one row per ``index`` and returns ``MAE``, ``GM`` and ``<region>/MAE``,
    ``<region>/GM`` for each region, NaN where a region has no test sample. GM is 0 as soon as
    one error is exactly 0 (as ``scipy.stats.gmean`` in the DIR code).
    """

    full_state_update = False

    def __init__(
        self, bin_width: float = 1.0, many_shot: int = 100, few_shot: int = 20, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if bin_width <= 0 or few_shot > many_shot:
            raise ValueError("bin_width must be > 0 and few_shot <= many_shot")
        self.bin_width = bin_width
        self.many_shot = many_shot
        self.few_shot = few_shot
        self._train_bins: tuple[Tensor, Tensor] | None = None
        for name in ("pred", "target", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _bins(self, values: Tensor) -> Tensor:
        return torch.floor(values.double() / self.bin_width + 0.5).long()

    def set_train_targets(self, train_targets: Tensor) -> None:
        """All training targets [N] (non-finite ones are dropped): the per-bin counts that
        decide each bin's region."""
        targets = train_targets.detach().flatten()
        bins, counts = torch.unique(self._bins(targets[targets.isfinite()]), return_counts=True)
        self._train_bins = bins, counts

    def update(self, pred: Tensor, target: Tensor, index: Tensor) -> None:
        """Predictions [B], targets [B] (NaN = unknown, ignored) and ``index`` [B]."""
        if not (pred.shape == target.shape == index.shape and pred.ndim == 1):
            raise ValueError("pred, target and index must all be [B]")
        valid = target.isfinite()
        self.pred.append(_at_least_float32(pred[valid].detach()))
        self.target.append(_at_least_float32(target[valid].detach()))
        self.index.append(index[valid].detach().long())

    def compute(self) -> dict[str, Tensor]:
        if self._train_bins is None:
            raise RuntimeError("call set_train_targets(train_targets) before compute()")
        if isinstance(self.index, list) and not self.index:
            pred = target = torch.empty(0, dtype=torch.float64, device=self.device)
        else:
            rows = first_occurrence(dim_zero_cat(self.index))
            pred, target = dim_zero_cat(self.pred)[rows], dim_zero_cat(self.target)[rows]
        error = (pred.double() - target.double()).abs()
        count = self._train_count(self._bins(target))
        regions = {
            "many": count > self.many_shot,
            "medium": (count >= self.few_shot) & (count <= self.many_shot),
            "few": count < self.few_shot,
        }
        out = {"MAE": error.mean(), "GM": geometric_mean(error)}
        for name in REGIONS:
            out[f"{name}/MAE"] = error[regions[name]].mean()
            out[f"{name}/GM"] = geometric_mean(error[regions[name]])
        return out

    def _train_count(self, bins: Tensor) -> Tensor:
        """How many training targets fall in each of ``bins`` (0 for a bin unseen in training)."""
        train_bins, train_counts = (t.to(bins.device) for t in self._train_bins)
        if len(train_bins) == 0:
            return torch.zeros_like(bins)
        position = torch.searchsorted(train_bins, bins).clamp_max(len(train_bins) - 1)
        return torch.where(train_bins[position] == bins, train_counts[position], 0)
