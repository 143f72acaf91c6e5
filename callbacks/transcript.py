"""Word error rate of a method's decoded transcripts (CoGenAV's generative head; the WER of
speech recognition papers): ``transcript/wer``, in percent, over the split.

A method returns its greedy transcripts as word ids in ``eval_outputs`` (``transcript/words``
[B, L], -1 after the end); the references are the batch's ``words`` [B, L] (-1 padded). Ids
become words through the data's ``word_vocab`` (the ids themselves when it has none), and
torchmetrics' word error rate counts the edits: summed over the split (de-duplicated by sample
``index`` across DDP ranks, as the other metrics) and divided by the reference words, the
corpus-level WER of ``torchmetrics.text.WordErrorRate``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.text import word_error_rate
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import first_occurrence


class TranscriptWER(Metric):
    """Corpus word error rate (percent): edits of all hypotheses / words of all references,
    each sample counted once (by ``index``)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("errors", "words", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: list[str], target: list[str], index: Tensor) -> None:
        """Hypotheses and references (space-separated words) of the samples ``index``."""
        if not (len(preds) == len(target) == len(index)):
            raise ValueError("preds, target and index must have the same length")
        errors, words = [], []
        for hypothesis, reference in zip(preds, target, strict=True):
            n = len(reference.split())
            # an empty reference: every hypothesis word is an insertion (torchmetrics: inf)
            edits = word_error_rate(hypothesis, reference) * n if n else len(hypothesis.split())
            errors.append(round(float(edits)))
            words.append(n)
        self.errors.append(torch.tensor(errors, dtype=torch.long, device=self.device))
        self.words.append(torch.tensor(words, dtype=torch.long, device=self.device))
        self.index.append(index.detach().long())

    def compute(self) -> Tensor:
        rows = first_occurrence(dim_zero_cat(self.index))
        errors, words = dim_zero_cat(self.errors)[rows], dim_zero_cat(self.words)[rows]
        return 100.0 * errors.sum().double() / words.sum().clamp_min(1).double()


def ids_to_text(ids: Tensor, vocab: list[str] | None) -> list[str]:
    """Rows of word ids (-1: none) as space-separated words."""
    return [
        " ".join(vocab[i] if vocab is not None else str(i) for i in row if i >= 0)
        for row in ids.tolist()
    ]


@register
class TranscriptWEREvaluator(Evaluator):
    """``transcript/wer``: the method's ``transcript/words`` against the batch's ``words``.
    Only methods that decode transcripts ask for it (``evaluators()``)."""

    name = "wer"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.vocab = list(getattr(datamodule, "word_vocab", None) or []) or None
        self.metric = TranscriptWER().to(self.device)

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        predicted = out["outputs"].get("transcript/words")
        if predicted is None or "words" not in batch:
            return
        self.metric.update(
            ids_to_text(predicted, self.vocab),
            ids_to_text(batch["words"], self.vocab),
            out["index"],
        )

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        return {"transcript/wer": self.metric.compute()}
