"""Word translation (MUSE's evaluation; Si-En alignment, methods/part2.md Sec. 56): precision@k
of retrieving a source word's gold translation among all target words, by cosine (NN) and by
CSLS (k = 10 neighbours), as MUSE ``word_translation.get_word_translation_accuracy``: a query
is correct at k if any of its gold translations is among its k best targets.

Evaluation batches are the data's vocabulary (datamodules/word_corpora.py): per word, its
L2-normalised source-side embedding (``corpus_a``, mapped by the method) and target-side
embedding (``corpus_b``), ``label/source`` / ``label/target`` (the word belongs to that
corpus's vocabulary) and ``label/gold`` ``[M]`` the word ids of its test-dictionary
translations (``-1`` padded). Queries: source words with a gold translation; candidates: every
target word; CSLS's ``r_S`` ranges over every source word. Keys (percent):
``word_translation/{nn,csls}/P{1,5,10}``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import _at_least_float32, first_occurrence
from modules.losses.word_alignment import csls


class WordTranslationPrecision(Metric):
    """P@k of NN and CSLS word translation over the whole vocabulary (rows synced across DDP
    ranks, de-duplicated by ``index``, the word id)."""

    full_state_update = False

    def __init__(self, ks: tuple[int, ...] = (1, 5, 10), knn: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ks, self.knn = tuple(ks), knn
        for name in ("source", "target", "in_source", "in_target", "gold", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        source: Tensor,
        target: Tensor,
        in_source: Tensor,
        in_target: Tensor,
        gold: Tensor,
        index: Tensor,
    ) -> None:
        """Per word: embeddings [B, D] on each side, vocabulary flags [B], gold ids [B, M]."""
        self.source.append(_at_least_float32(source.detach()))
        self.target.append(_at_least_float32(target.detach()))
        self.in_source.append(in_source.detach().bool())
        self.in_target.append(in_target.detach().bool())
        self.gold.append(gold.detach().long().reshape(len(index), -1))
        self.index.append(index.detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.index))
        words = dim_zero_cat(self.index)[rows]
        source, target = dim_zero_cat(self.source)[rows], dim_zero_cat(self.target)[rows]
        in_source, in_target = (
            dim_zero_cat(self.in_source)[rows],
            dim_zero_cat(self.in_target)[rows],
        )
        gold = dim_zero_cat(self.gold)[rows]
        queries = in_source & (gold >= 0).any(dim=1)
        if not queries.any() or not in_target.any():
            return {}
        candidates = words[in_target]  # word id of each target column
        # [Q, M, Nt]: whether column j is gold translation m of query q
        hit = gold[queries][:, :, None] == candidates[None, None, :]
        correct = hit.any(dim=1)  # [Q, Nt]
        mapped, targets = source[in_source], target[in_target]
        scores = {
            "nn": source[queries] @ targets.T,
            "csls": csls(mapped, targets, self.knn)[queries[in_source]],
        }
        out = {}
        for kind, score in scores.items():
            order = score.argsort(dim=1, descending=True, stable=True)
            ranked = correct.gather(1, order)
            for k in self.ks:
                found = ranked[:, :k].any(dim=1).float()
                out[f"{kind}/P{k}"] = 100.0 * found.mean()
        return out


@register
class WordTranslation(Evaluator):
    """Word translation P@k (:class:`WordTranslationPrecision`) from ``corpus_a`` (mapped
    source) to ``corpus_b`` on data that carries ``label/gold`` (``word_corpora`` in
    ``languages`` mode). Options: ``ks``, ``knn``."""

    name = "word_translation"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.source, self.target = module.modalities[:2]
        self.metric = WordTranslationPrecision(
            ks=tuple(options.get("ks", (1, 5, 10))), knn=options.get("knn", 10)
        ).to(self.device)

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        cfg = getattr(datamodule, "cfg", None)
        return getattr(cfg, "family", "") == "word_corpora" and cfg.mode == "languages"

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        labels = out["labels"]
        if "gold" not in labels:
            return
        emb = out["embeddings"]
        self.metric.update(
            emb[self.source],
            emb[self.target],
            labels["source"],
            labels["target"],
            labels["gold"],
            out["index"],
        )

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        return {f"word_translation/{k}": v for k, v in self.metric.compute().items()}
