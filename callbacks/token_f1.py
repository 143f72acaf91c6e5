"""Entity-level F1 of a token tagger (the metric of NER papers: CoNLL's conlleval, seqeval's
default mode): an entity counts as found only if its span and its type are exactly right.

A method returns its tag logits in ``eval_outputs`` (``logits/<modality>/tags`` [B, L, K]); the
references are the batch's ``tags`` [B, L] (tag ids on the first token of each word, negative
elsewhere: datamodules/tagged_captions.py) and ``label/language`` [B]. The predicted tag of a
word is the argmax at its first token; the words' tag sequences become entity spans by
:func:`entity_spans` (an ``I-`` tag after ``O`` or after another type opens an entity, as in
conlleval, so IOB1 files are read right). Precision, recall and F1 (percent) are summed over
the split's sentences (each counted once by ``index`` across DDP ranks) per language:
``token_f1/<language>/f1`` (``precision``, ``recall``), languages named by the data's
``language_names`` (``source``, ``target``).

Words cut off by the tokenizer's ``max_text_len`` have no logits: when the batch carries every
word's gold tag (``word_tags`` [B, W], datamodules/tagged_captions.py), the cut words are
scored as predicted ``O``, so their gold entities count as missed and an entity cut in the
middle as wrong, as conlleval would score a tagger that stops there; the number of
sentences cut is logged once as a warning per evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, option_modality, register
from callbacks.metrics import first_occurrence


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of a BIO tag sequence as ``(type, start, end)`` (end exclusive)."""
    spans: set[tuple[str, int, int]] = set()
    kind: str | None = None
    start = 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        if kind is not None and (prefix != "I" or name != kind):
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = name, i
    return spans


class EntityF1(Metric):
    """Entity precision, recall and F1 (percent) per language, over the split's sentences."""

    full_state_update = False

    def __init__(self, languages: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.languages = tuple(languages)
        for name in ("correct", "predicted", "gold", "language", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        predicted: Sequence[Sequence[str]],
        gold: Sequence[Sequence[str]],
        language: Tensor,
        index: Tensor,
    ) -> None:
        """Predicted and gold tag sequences (one per sentence, word by word)."""
        if not (len(predicted) == len(gold) == len(language) == len(index)):
            raise ValueError("predicted, gold, language and index must have the same length")
        counts = []
        for p, g in zip(predicted, gold, strict=True):
            p_spans, g_spans = entity_spans(p), entity_spans(g)
            counts.append((len(p_spans & g_spans), len(p_spans), len(g_spans)))
        values = torch.tensor(counts, dtype=torch.long, device=self.device).reshape(-1, 3)
        self.correct.append(values[:, 0])
        self.predicted.append(values[:, 1])
        self.gold.append(values[:, 2])
        self.language.append(language.detach().long())
        self.index.append(index.detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.index))
        language = dim_zero_cat(self.language)[rows]
        correct, predicted, gold = (
            dim_zero_cat(s)[rows].double() for s in (self.correct, self.predicted, self.gold)
        )
        out = {}
        for k, name in enumerate(self.languages):
            chosen = language == k
            if not chosen.any():
                continue
            c, p, g = correct[chosen].sum(), predicted[chosen].sum(), gold[chosen].sum()
            precision = 100.0 * c / p.clamp_min(1.0)
            recall = 100.0 * c / g.clamp_min(1.0)
            f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
            out |= {f"{name}/precision": precision, f"{name}/recall": recall, f"{name}/f1": f1}
        return out


@register
class TokenF1(Evaluator):
    """``token_f1/<language>/f1``: the method's ``logits/<modality>/tags`` against the batch's
    ``tags``. Options: ``modality`` (default: the method's first encoder). Only methods that
    tag tokens ask for it (``evaluators()``)."""

    name = "token_f1"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.key = f"logits/{option_modality(self.name, module, options)}/tags"
        self.names = list(datamodule.class_names["tags"])
        languages = getattr(datamodule, "language_names", ("source", "target"))
        self.metric = EntityF1(languages).to(self.device)
        self.cut_sentences = 0  # sentences with words past max_text_len (this rank)

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        logits = out["outputs"].get(self.key)
        if logits is None or "tags" not in batch:
            return
        predicted_ids, tags = logits.argmax(-1).tolist(), batch["tags"].tolist()
        full = batch["word_tags"].tolist() if "word_tags" in batch else [None] * len(tags)
        predicted, gold = [], []
        for row_pred, row_gold, row_full in zip(predicted_ids, tags, full, strict=True):
            words = [i for i, tag in enumerate(row_gold) if tag >= 0]
            predicted.append([self.names[row_pred[i]] for i in words])
            gold.append([self.names[row_gold[i]] for i in words])
            cut = [] if row_full is None else [t for t in row_full if t >= 0][len(words) :]
            if cut:  # words past max_text_len: predicted O, their gold entities missed
                self.cut_sentences += 1
                predicted[-1] += ["O"] * len(cut)
                gold[-1] += [self.names[t] for t in cut]
        self.metric.update(predicted, gold, out["labels"]["language"], out["index"])

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        if self.cut_sentences:
            warnings.warn(
                f"token_f1: {self.cut_sentences} sentence(s) longer than data.max_text_len "
                "tokens; their cut words count as predicted O (raise data.max_text_len)",
                stacklevel=2,
            )
        return {f"token_f1/{k}": v for k, v in self.metric.compute().items()}
