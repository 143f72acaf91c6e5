"""1-to-K contrastive learning, CCRK (Nie et al., KDD 2024: "Improving the Consistency in
Cross-Lingual Cross-Modal Retrieval with 1-to-K Contrastive Learning"; methods/part2.md Sec. 57;
official code BUAADreamer/CCRK).

Cross-lingual cross-modal retrieval pre-trains on images with captions in K languages. Aligning
each language with the image separately (1-to-1: one random language per caption, or K separate
pairs) lets the languages drift apart, so one image ranks differently depending on the query's
language. 1-to-K contrastive learning puts all K translations of an image into *one* softmax as
simultaneous positives (Sec. 4 of the paper; ``get_unialign_contrastive_loss``), see
:func:`~modules.losses.one_to_k.one_to_k_loss`:
``L = (L_i2t + L_t2i) / (2K)``. The K languages share one text tower.

Data: ``data.languages: K`` (datamodules/languages.py) gives every batch ``text_ids_k`` [B, K, L];
the text tower encodes the B·K captions image-major. ``method.objective: one_to_one`` trains the
1-to-1 baseline instead (CLIP on ``text_ids``, one random language per caption and epoch) with
the same evaluation, for a like-for-like comparison.

Evaluation (Sec. 5 of the paper): per language ``k``, retrieval of the images against that
language's captions (:class:`~callbacks.metrics.RetrievalMetrics`), and the Mean Rank Variance
``MRV = (1/N) sum_n spread_k(rank_{n,k})``, the spread over the K languages of the rank the model
gives the same instance (an image for image -> text, a caption and its translations for
text -> image), averaged over instances. ⚠ The released ``analysis_ranks`` (xFlickrCO.py,
described in the spec; not in the stored copy of the repository) takes the population standard
deviation (``np.std``) although the name says variance: ``method.mrv_kind: std`` (default)
follows the code, ``var`` the name. Logged as ``{val,test}/one_to_k/mrv`` (mean of the two
directions), ``.../image_to_text/mrv``, ``.../text_to_image/mrv``, per-language
``.../lang<k>/<a>_to_<b>/R1`` and their mean ``.../mean_R1``. The standard callbacks score
language 0 (the original captions).

⚠ Temperature: learnable, initialised at 0.07 and clamped to tau in [0.001, 0.5] in the code;
here log(1/tau) is clamped to [ln(1/max_temperature), ln model.max_logit_scale], so
experiments/one_to_k.yaml sets ``model.max_logit_scale: 1000``. Scoped out: the X-VLM backbone's
1-to-K hard-negative ITM and MLM losses (a dual-tower library has no fusion encoder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from callbacks.metrics import RetrievalMetrics
from modules.base import DualTowerModule, MethodConfig
from modules.losses.contrastive import clip_loss
from modules.losses.one_to_k import one_to_k_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput

OBJECTIVES = ("one_to_k", "one_to_one")
MRV_KINDS = ("std", "var")
#: Key of the K-language caption outputs in ``encode``'s dict ([B K, ...], image-major).
LANGUAGES = "text_k"


@dataclass
class OneToKConfig(MethodConfig):
    name: str = "one_to_k"
    # one_to_k: the paper's loss on all K captions | one_to_one: CLIP on text_ids (the baseline)
    objective: str = "one_to_k"
    # upper clamp of tau (official: 0.5), i.e. log(1/tau) >= ln 2; the lower clamp is
    # 1/model.max_logit_scale (official 0.001: max_logit_scale 1000)
    max_temperature: float = 0.5
    mrv_kind: str = "std"  # std: the released analysis code (np.std) | var: the metric's name
    loss_weights: dict[str, float] = field(default_factory=lambda: {"itc": 1.0})

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"method.objective must be one of {OBJECTIVES}")
        if self.mrv_kind not in MRV_KINDS:
            raise ValueError(f"method.mrv_kind must be one of {MRV_KINDS}")
        if not self.max_temperature > 0:
            raise ValueError("method.max_temperature must be positive")


def mean_rank_variance(ranks: Tensor, kind: str = "std") -> Tensor:
    """MRV of ``ranks`` [K, N] (rank of instance ``n`` in language ``k``): the mean over
    instances of the population standard deviation (``std``) or variance (``var``) over
    languages."""
    if kind not in MRV_KINDS:
        raise ValueError(f"kind must be one of {MRV_KINDS}, got {kind!r}")
    ranks = ranks.double()
    spread = ranks.var(dim=0, correction=0) if kind == "var" else ranks.std(dim=0, correction=0)
    return spread.mean()


class RetrievalWithRanks(RetrievalMetrics):
    """:class:`RetrievalMetrics` whose ``compute`` also returns each query's rank (synced across
    ranks like the summary): ``ranks/item`` per distinct item in ``item_id`` order and
    ``ranks/caption`` per distinct caption in ``index`` order."""

    def compute(self) -> dict[str, Tensor]:
        distinct = self._distinct()
        return {
            **super().compute(),
            "ranks/item": self._item_to_caption_ranks(*distinct),
            "ranks/caption": self._caption_to_item_ranks(*distinct),
        }


@METHODS.register("one_to_k", OneToKConfig)
class OneToK(DualTowerModule):
    """Image-text contrastive learning with the K parallel captions of each image positive at
    once (``itc``), plus per-language retrieval and MRV in validation and test."""

    loss_terms = ("itc",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.modalities[1] != "text":
            raise ValueError(f"one_to_k needs captions as text, got {self.modalities}")
        self.min_log_scale = math.log(1.0 / self.method_cfg.max_temperature)
        if self.min_log_scale > self.max_log_scale:
            raise ValueError("method.max_temperature is below 1 / model.max_logit_scale")
        self._per_language: list[RetrievalWithRanks] = []

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The item tower's output, the ``text_ids`` captions' (unless training 1-to-K) and,
        with K languages, the B·K captions of ``text_ids_k`` as ``text_k`` with fields
        ``[B, K, ...]`` (unless training 1-to-1): each training step encodes only what its loss
        reads, and every output keeps the batch as its first dimension (gradient caching cuts
        them into micro-batches)."""
        item, caption = self.modalities[:2]
        outputs = {item: self.towers[item](batch)}
        multilingual = "text_ids_k" in batch
        one_to_k = self.method_cfg.objective == "one_to_k"
        if not (self.training and multilingual and one_to_k):
            outputs[caption] = self.towers[caption](batch)
        if multilingual and not (self.training and not one_to_k):
            ids, mask = batch["text_ids_k"], batch["text_mask_k"]
            flat = self.towers[caption](
                {"text_ids": ids.flatten(0, 1), "text_mask": mask.flatten(0, 1)}
            )
            outputs[LANGUAGES] = TowerOutput(
                *(None if t is None else t.unflatten(0, ids.shape[:2]) for t in flat)
            )
        return outputs

    def _normalized(self, side: str, output: TowerOutput) -> Tensor:
        return F.normalize(self.embedding(side, output), dim=-1)

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        item, caption = self.modalities[:2]
        image = self._normalized(item, outputs[item])
        ids = batch["item_id"]
        if self.method_cfg.objective == "one_to_one":
            text = self._normalized(caption, outputs[caption])
            return {"itc": clip_loss(image, text, self.scale, ids=ids)}
        if LANGUAGES in outputs:
            texts = self._normalized(caption, outputs[LANGUAGES])
        else:  # one language: the loss is CLIP's
            texts = self._normalized(caption, outputs[caption])[:, None]
        return {"itc": one_to_k_loss(image, texts, self.scale, ids=ids)}

    @torch.no_grad()
    def _clamp_temperature(self) -> None:
        """tau in [1 / max_logit_scale, max_temperature] (the official [0.001, 0.5])."""
        self.logit_scale.clamp_(self.min_log_scale, self.max_log_scale)

    # ------------------------------------------------------------------ per-language evaluation

    def _step(
        self, batch: dict[str, Any], split: str
    ) -> tuple[torch.Tensor, dict[str, TowerOutput]]:
        """The base's evaluation step, also feeding each language's retrieval metric."""
        loss, outputs = super()._step(batch, split)
        if LANGUAGES in outputs:
            item, caption = self.modalities[:2]
            image = self._normalized(item, outputs[item])
            texts = self._normalized(caption, outputs[LANGUAGES])
            if not self._per_language:
                self._per_language = [
                    RetrievalWithRanks(ks=(1,), modalities=self.modalities[:2]).to(image.device)
                    for _ in range(texts.shape[1])
                ]
            for k, metric in enumerate(self._per_language):
                metric.update(image, texts[:, k], batch["item_id"], batch["index"])
        return loss, outputs

    def on_validation_epoch_start(self) -> None:
        self._per_language = []

    def on_test_epoch_start(self) -> None:
        self._per_language = []

    def on_validation_epoch_end(self) -> None:
        self._log_languages("val")

    def on_test_epoch_end(self) -> None:
        self._log_languages("test")

    def _log_languages(self, split: str) -> None:
        """Per-language R@1 and MRV, computed on every rank (torchmetrics syncs inside)."""
        if not self._per_language:
            return
        a, b = self.modalities[:2]
        prefix = f"{split}/one_to_k"
        values: dict[str, Tensor] = {}
        ranks: dict[str, list[Tensor]] = {"item": [], "caption": []}
        for k, metric in enumerate(self._per_language):
            result = metric.compute()
            for direction in (f"{a}_to_{b}", f"{b}_to_{a}"):
                values[f"{prefix}/lang{k}/{direction}/R1"] = result[f"{direction}/R1"]
            for side in ranks:
                ranks[side].append(result[f"ranks/{side}"])
        mrv = {
            f"{a}_to_{b}": mean_rank_variance(torch.stack(ranks["item"]), self.method_cfg.mrv_kind),
            f"{b}_to_{a}": mean_rank_variance(
                torch.stack(ranks["caption"]), self.method_cfg.mrv_kind
            ),
        }
        values |= {f"{prefix}/{direction}/mrv": value.float() for direction, value in mrv.items()}
        values[f"{prefix}/mrv"] = torch.stack(list(mrv.values())).mean().float()
        values[f"{prefix}/mean_R1"] = torch.stack(
            [v for key, v in values.items() if key.endswith("/R1")]
        ).mean()
        self.log_dict(values, sync_dist=False)
        self._per_language = []
