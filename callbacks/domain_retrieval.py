"""Per-domain retrieval of sentence pairs (CL + MoE, methods/part2.md section 48): within each
domain, each pair's first sentence (``text``) queries the second sentences (``text@1``) of every
pair of that domain, and R@1 is the share of queries whose own second sentence scores highest.

This is the retrieval the paper reports per domain (one expert per domain against one shared
encoder). With a ``positive`` label (default ``paraphrase``: the pair has one meaning), only
positive pairs query, while every pair of the domain stays in the gallery: the second sentences
of non-paraphrase pairs (sharing up to four of five factors with their first sentence) are the
hard negatives. Keys: ``domain_retrieval/<domain>/R1`` (the data's class names of the label,
else ``<label><k>``) and ``domain_retrieval/mean_R1`` (mean over domains with a query).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import _at_least_float32, first_occurrence


class DomainRetrievalR1(Metric):
    """R@1 (percent) of first -> second sentence among the pairs of the query's domain.

    Ranks are pessimistic (a negative that ties the own second sentence counts as above it), as
    :class:`~callbacks.metrics.RetrievalMetrics`; rows are de-duplicated by ``index`` (DDP
    padding). Embeddings are expected L2-normalised (cosine scores)."""

    full_state_update = False

    def __init__(self, domains: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.domains = domains
        for name in ("first", "second", "domain", "query", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self, first: Tensor, second: Tensor, domain: Tensor, query: Tensor, index: Tensor
    ) -> None:
        """Embeddings [B, D] of each pair's two sentences, its domain [B], whether it queries
        [B] (bool) and its ``index`` [B]."""
        if not (first.shape == second.shape and len(first) == len(domain) == len(query)):
            raise ValueError("first and second must be [B, D]; domain, query and index [B]")
        if len(index) != len(first):
            raise ValueError("index must be [B]")
        self.first.append(_at_least_float32(first.detach()))
        self.second.append(_at_least_float32(second.detach()))
        self.domain.append(domain.detach().long())
        self.query.append(query.detach().bool())
        self.index.append(index.detach().long())

    def compute(self) -> Tensor:
        """R@1 per domain [domains] (NaN for a domain without a query)."""
        rows = first_occurrence(dim_zero_cat(self.index))
        first, second = dim_zero_cat(self.first)[rows], dim_zero_cat(self.second)[rows]
        domain, query = dim_zero_cat(self.domain)[rows], dim_zero_cat(self.query)[rows]
        recall = torch.full((self.domains,), float("nan"), device=first.device)
        for d in range(self.domains):
            members = torch.nonzero(domain == d).squeeze(1)
            asking = torch.nonzero(query[members]).squeeze(1)  # positions within the domain
            if not len(asking):
                continue
            scores = first[members[asking]] @ second[members].T  # [queries, gallery]
            own = scores[torch.arange(len(asking)), asking]
            above = (scores >= own[:, None]).count_nonzero(dim=1) - 1  # minus the own column
            recall[d] = 100.0 * (above == 0).float().mean()
        return recall


@register
class DomainRetrieval(Evaluator):
    """:class:`DomainRetrievalR1` on the evaluation embeddings. Options: ``first`` (default
    ``text``), ``second`` (``text@1``), ``label`` (the domain label, ``domain``), ``positive``
    (the label of pairs that query, ``paraphrase``; empty: every pair queries). Only methods
    that ask for it (``evaluators()``) or a YAML turn it on."""

    name = "domain_retrieval"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.first = options.get("first", "text")
        self.second = options.get("second", "text@1")
        self.label = options.get("label", "domain")
        self.positive = options.get("positive", "paraphrase")
        names = dict(getattr(datamodule, "class_names", None) or {}).get(self.label)
        count = dict(getattr(datamodule, "labels", None) or {}).get(self.label)
        if count is None:
            raise ValueError(
                f"domain_retrieval.label: the data has no label {self.label!r} "
                f"(labels: {sorted(getattr(datamodule, 'labels', None) or {})})"
            )
        self.names = list(names) if names else [f"{self.label}{k}" for k in range(count)]
        self.metric = DomainRetrievalR1(count).to(self.device)

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        emb, labels = out["embeddings"], out["labels"]
        missing = [k for k in (self.first, self.second) if k not in emb]
        if missing:
            raise KeyError(f"domain_retrieval: no evaluation embeddings {missing} ({sorted(emb)})")
        domain = labels[self.label]
        query = labels[self.positive].bool() if self.positive else torch.ones_like(domain).bool()
        self.metric.update(emb[self.first], emb[self.second], domain, query, out["index"])

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        recall = self.metric.compute()
        values = {
            f"domain_retrieval/{name}/R1": recall[d]
            for d, name in enumerate(self.names)
            if not recall[d].isnan()
        }
        if values:
            values["domain_retrieval/mean_R1"] = torch.stack(list(values.values())).mean()
        return values
