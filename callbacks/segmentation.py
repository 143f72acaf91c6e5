"""Topic segmentation metrics: Pk (Beeferman, Berger and Lafferty 1999), WindowDiff (Pevzner
and Hearst 2002) and boundary F1, of the boundaries a method exposes as
``segmentation/boundary_prob`` [B, S] (``eval_outputs``) against the batch's gold ``boundary``
[B, S] (1: a segment ends after the sentence, the document's last sentence included; -1 on
padding).

Per document, boundaries are the strings nltk's ``nltk.metrics.segmentation`` reads (one
position per sentence, 1 where a segment ends after it): a boundary is predicted where the
probability is at least ``threshold`` (0.5, the official argmax / ``threshold`` rule), and the
last sentence always ends a segment in both strings. With window ``k`` (by default half the
document's mean gold segment length, nltk's ``round(N / (2 * boundaries))``, at least 1 and at
most N), over the N - k + 1 windows ``[i, i + k)``:

- Pk: the fraction of windows where reference and hypothesis disagree on whether the window
  holds a boundary (sentences i and i + k in different segments);
- WindowDiff: the fraction of windows where they hold different numbers of boundaries.

Both are averaged over documents (each document its own k) and logged in percent, as papers
report them (``segmentation/pk``, ``segmentation/windowdiff``; lower is better). ``segmentation/
f1``: F1 (percent) of the boundary class over every sentence but each document's last, pooled
over documents (the official sentence-level F1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import first_occurrence


def default_k(reference: Sequence[int]) -> int:
    """Half the mean reference segment length (nltk's rounding), within [1, N]."""
    k = int(round(len(reference) / (2.0 * max(sum(reference), 1))))
    return min(max(k, 1), len(reference))


def _windows(
    reference: Sequence[int], hypothesis: Sequence[int], k: int | None
) -> tuple[Tensor, Tensor]:
    """Boundary counts of every window [i, i + k) of both strings."""
    if len(reference) != len(hypothesis) or not len(reference):
        raise ValueError("reference and hypothesis must be non-empty and of equal length")
    k = default_k(reference) if k is None else min(max(int(k), 1), len(reference))
    ref = torch.as_tensor(list(reference), dtype=torch.float64)
    hyp = torch.as_tensor(list(hypothesis), dtype=torch.float64)
    return ref.unfold(0, k, 1).sum(1), hyp.unfold(0, k, 1).sum(1)


def pk(reference: Sequence[int], hypothesis: Sequence[int], k: int | None = None) -> float:
    """Pk of one document's boundary strings (a fraction in [0, 1])."""
    ref, hyp = _windows(reference, hypothesis, k)
    return float(((ref > 0) != (hyp > 0)).double().mean())


def windowdiff(reference: Sequence[int], hypothesis: Sequence[int], k: int | None = None) -> float:
    """WindowDiff of one document's boundary strings (a fraction in [0, 1])."""
    ref, hyp = _windows(reference, hypothesis, k)
    return float((ref != hyp).double().mean())


class SegmentationMetrics(Metric):
    """Pk, WindowDiff (per document, averaged) and boundary F1 (pooled) over a split, one
    document per ``index`` (DDP padding repeats dropped)."""

    full_state_update = False

    def __init__(self, threshold: float = 0.5, k: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold, self.k = threshold, k
        for name in ("pk", "windowdiff", "counts", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, probability: Tensor, boundary: Tensor, index: Tensor) -> None:
        """Boundary probabilities and gold labels [B, S] (-1 on padding), document ids [B]."""
        if probability.shape != boundary.shape or len(index) != len(boundary):
            raise ValueError("probability and boundary must be [B, S], index [B]")
        pks, wds, counts = [], [], []
        for prob, gold in zip(probability.detach().cpu(), boundary.detach().cpu(), strict=True):
            valid = gold >= 0
            reference = gold[valid].long()
            hypothesis = (prob[valid] >= self.threshold).long()
            hypothesis[-1] = reference[-1] = 1
            ref, hyp = reference.tolist(), hypothesis.tolist()
            pks.append(pk(ref, hyp, self.k))
            wds.append(windowdiff(ref, hyp, self.k))
            inner_ref, inner_hyp = reference[:-1].bool(), hypothesis[:-1].bool()
            counts.append(
                [
                    int((inner_ref & inner_hyp).sum()),
                    int((~inner_ref & inner_hyp).sum()),
                    int((inner_ref & ~inner_hyp).sum()),
                ]
            )
        device = self.device
        self.pk.append(torch.tensor(pks, dtype=torch.float64, device=device))
        self.windowdiff.append(torch.tensor(wds, dtype=torch.float64, device=device))
        self.counts.append(torch.tensor(counts, dtype=torch.long, device=device).view(-1, 3))
        self.index.append(index.detach().long().to(device))

    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.index, list) and not self.index:
            return {}
        rows = first_occurrence(dim_zero_cat(self.index))
        tp, fp, fn = dim_zero_cat(self.counts)[rows].sum(0).double()
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1.0)
        return {
            "pk": 100.0 * dim_zero_cat(self.pk)[rows].mean(),
            "windowdiff": 100.0 * dim_zero_cat(self.windowdiff)[rows].mean(),
            "f1": 100.0 * f1,
        }


@register
class Segmentation(Evaluator):
    """Pk, WindowDiff and F1 of a topic segmenter (:class:`SegmentationMetrics`): reads the
    method's ``segmentation/boundary_prob`` output and the batch's ``boundary``. Options:
    ``threshold`` (0.5), ``k`` (None: per document, half its mean gold segment length). Only
    methods that ask for it (``evaluators()``) or a YAML turn it on."""

    name = "segmentation"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        unknown = set(options) - {"threshold", "k"}
        if unknown:
            raise ValueError(
                f"segmentation: unknown option(s) {sorted(unknown)}; known: k, threshold"
            )
        self.metric = SegmentationMetrics(
            threshold=float(options.get("threshold", 0.5)), k=options.get("k")
        ).to(self.device)

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        probability = out["outputs"].get("segmentation/boundary_prob")
        if probability is None:
            raise ValueError(
                "segmentation: the method exposes no 'segmentation/boundary_prob' output"
            )
        self.metric.update(probability, batch["boundary"], out["index"])

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        return {f"segmentation/{k}": v for k, v in self.metric.compute().items()}
