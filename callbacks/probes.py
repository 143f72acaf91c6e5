"""Frozen-feature probes: weighted k-NN and linear-probe classification accuracy (percent).

Both metrics classify *queries* (the evaluation set, gathered across DDP ranks like the metrics
of ``callbacks/metrics.py``: list states reduced with ``"cat"``, one row per ``index`` kept in
``compute()``) against a labelled *bank* (the training-set embeddings). The bank is set with
``set_bank`` and is not a synced state: the caller computes the same bank on every rank (or
passes its ``index`` so that padded duplicates are dropped), so every rank computes the same
result without communication beyond the query gather. The bank survives ``reset()``: set it
again at every evaluation (it changes with the model). Labels of -1 (unknown) are ignored in the
bank and in the queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.metrics import _at_least_float32, first_occurrence


def _labelled_rows(
    features: Tensor, labels: Tensor, index: Tensor | None, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Rows with a label >= 0, one per ``index`` when given (first occurrence, ordered by id)."""
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError("features must be [N, D] and labels [N]")
    if index is not None:
        rows = first_occurrence(index.detach().long())
        features, labels = features[rows], labels[rows]
    labels = labels.detach().long()
    valid = labels >= 0
    if bool((labels[valid] >= num_classes).any()):
        raise ValueError(f"labels must be -1 or in [0, {num_classes})")
    return features.detach()[valid], labels[valid]


class _LabelledQueries(Metric):
    """Query rows (features, labels, index), synced with ``"cat"`` and de-duplicated by index."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        for name in ("features", "labels", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, labels: Tensor, index: Tensor) -> None:
        """Query embeddings [B, D], their class [B] (-1 = unknown, ignored) and ``index`` [B]."""
        if not (len(features) == len(labels) == len(index)):
            raise ValueError("features, labels and index must have the same length")
        valid = labels >= 0
        if bool((labels[valid] >= self.num_classes).any()):
            raise ValueError(f"labels must be -1 or in [0, {self.num_classes})")
        self.features.append(_at_least_float32(features[valid].detach()))
        self.labels.append(labels[valid].detach().long())
        self.index.append(index[valid].detach().long())

    def _queries(self) -> tuple[Tensor, Tensor] | None:
        """Distinct labelled queries ordered by index, or None when there are none."""
        if isinstance(self.index, list) and not self.index:
            return None
        rows = first_occurrence(dim_zero_cat(self.index))
        if len(rows) == 0:
            return None
        return dim_zero_cat(self.features)[rows], dim_zero_cat(self.labels)[rows]


class KNNAccuracy(_LabelledQueries):
    """Weighted k-NN top-1 accuracy in percent (0-100): the weighted k-NN classifier of Wu et
    al. (2018, InstDisc), as in DINO's ``eval_knn.py`` and solo-learn's
    ``WeightedKNNClassifier``.

    Each query's ``k`` nearest bank entries by cosine similarity s vote for their class with
    weight exp(s / T); the class with the largest total wins (``argmax``: on an exact vote tie,
    the lowest class id). Defaults k = 20, T = 0.07 are those of DINO and solo-learn. Features
    are L2-normalised here (cosine similarity whatever the input scale); votes are computed as
    exp((s - s_max) / T), the same argmax without overflow at small T. Similarities are computed
    in blocks of at most ``block_elements`` scores, so memory stays bounded (about 64 MB for a
    50k bank in float32); on an exact similarity tie at the k-th neighbour, which entry is
    taken is up to ``torch.topk``. With no labelled query the accuracy is NaN.
    """

    def __init__(
        self,
        num_classes: int,
        k: int = 20,
        temperature: float = 0.07,
        block_elements: int = 1 << 24,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        if k < 1 or temperature <= 0:
            raise ValueError("k must be >= 1 and temperature > 0")
        self.k = k
        self.temperature = temperature
        self.block_elements = block_elements
        self._bank: tuple[Tensor, Tensor] | None = None

    def set_bank(self, features: Tensor, labels: Tensor, index: Tensor | None = None) -> None:
        """The labelled bank: embeddings [N, D] and classes [N] (-1 dropped); with ``index``,
        one row per id (drops DDP padding duplicates of a gathered bank)."""
        features, labels = _labelled_rows(features, labels, index, self.num_classes)
        if len(labels) == 0:
            raise ValueError("the bank has no labelled row")
        self._bank = F.normalize(_at_least_float32(features), dim=1), labels

    def compute(self) -> Tensor:
        if self._bank is None:
            raise RuntimeError("call set_bank(features, labels) before compute()")
        queries = self._queries()
        if queries is None:
            return torch.tensor(float("nan"), device=self.device)
        features, labels = queries
        dtype = torch.promote_types(features.dtype, self._bank[0].dtype)
        features = F.normalize(features.to(dtype), dim=1)
        bank_t = self._bank[0].to(features.device, dtype).T.contiguous()
        bank_labels = self._bank[1].to(features.device)
        k = min(self.k, len(bank_labels))
        rows = max(1, self.block_elements // len(bank_labels))
        correct = torch.zeros((), dtype=torch.long, device=features.device)
        for start in range(0, len(features), rows):
            block = features[start : start + rows]
            top, neighbours = (block @ bank_t).topk(k, dim=1)
            weights = ((top - top[:, :1]) / self.temperature).exp()
            votes = top.new_zeros(len(block), self.num_classes)
            votes.scatter_add_(1, bank_labels[neighbours], weights)
            correct += (votes.argmax(dim=1) == labels[start : start + rows]).sum()
        return 100.0 * correct.double() / len(labels)


class LinearProbeAccuracy(_LabelledQueries):
    """Linear-probe top-1 accuracy in percent (0-100): multinomial logistic regression with
    bias, fitted on the bank, evaluated on the queries (the linear evaluation of CLIP, Radford
    et al. 2021, App. A.3, which fits L-BFGS logistic regression on frozen features).

    ``set_bank`` standardises the bank (per-dimension mean and std of the bank; queries use the
    same statistics) and fits, on CPU in float32, mean cross-entropy + ``weight_decay`` / 2 *
    ||W||^2 (no decay on the bias) with full-batch L-BFGS (strong-Wolfe line search, at most
    ``steps`` iterations, step size ``lr``) from zero weights: a convex problem and a
    deterministic solver, so every rank fits the same classifier with no seed to set. The fit
    runs on one CPU thread: the result does not depend on the thread count of the machine, and
    for these small products one thread is faster than two on a loaded 2-core machine (10k x
    128 bank, 36 classes, 46 L-BFGS iterations: 0.5 s with one thread against 1.7 s with two at
    load average 4). With no labelled query the accuracy is NaN.
    """

    def __init__(
        self,
        num_classes: int,
        steps: int = 100,
        lr: float = 1.0,
        weight_decay: float = 1e-4,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.steps = steps
        self.lr = lr
        self.weight_decay = weight_decay
        self._classifier: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def set_bank(self, features: Tensor, labels: Tensor, index: Tensor | None = None) -> None:
        """Fit the probe on embeddings [N, D] with classes [N] (-1 dropped); with ``index``,
        one row per id. Works inside ``torch.inference_mode`` (Lightning's validation loop)."""
        features, labels = _labelled_rows(features, labels, index, self.num_classes)
        if len(labels) == 0:
            raise ValueError("the bank has no labelled row")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._classifier = self._fit(features, labels)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Bank mean, std, and the fitted weight [C, D] and bias [C]."""
        with torch.inference_mode(False), torch.enable_grad():
            x = features.to("cpu", torch.float32).clone()  # a normal tensor, not an inference one
            y = labels.cpu().clone()
            mean = x.mean(dim=0)
            std = x.std(dim=0, correction=0)
            std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant dims stay 0
            x = (x - mean) / std
            weight = torch.zeros(self.num_classes, x.shape[1], requires_grad=True)
            bias = torch.zeros(self.num_classes, requires_grad=True)
            optimizer = torch.optim.LBFGS(
                [weight, bias], lr=self.lr, max_iter=self.steps, line_search_fn="strong_wolfe"
            )

            def closure() -> Tensor:
                optimizer.zero_grad()
                loss = F.cross_entropy(torch.addmm(bias, x, weight.T), y)
                loss = loss + 0.5 * self.weight_decay * weight.pow(2).sum()
                loss.backward()
                return loss

            optimizer.step(closure)
        return mean, std, weight.detach(), bias.detach()

    def compute(self) -> Tensor:
        if self._classifier is None:
            raise RuntimeError("call set_bank(features, labels) before compute()")
        queries = self._queries()
        if queries is None:
            return torch.tensor(float("nan"), device=self.device)
        features, labels = queries
        mean, std, weight, bias = self._classifier
        x = (features.to("cpu", torch.float32) - mean) / std
        predictions = torch.addmm(bias, x, weight.T).argmax(dim=1)
        accuracy = 100.0 * (predictions == labels.cpu()).double().mean()
        return accuracy.to(labels.device)
