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
the text tower encodes the B·K captions image-major. Two 1-to-1 baselines share the
evaluation: ``method.objective: one_to_one`` (CLIP on ``text_ids``, one random language per
caption and step, so each language gets 1/K of 1-to-K's text updates) and ``k_pairs`` (each
image with each of its K captions as K separate CLIP pairs in the same step,
:func:`~modules.losses.one_to_k.k_pairs_loss`: the same exposure as 1-to-K, one language per
softmax).

Evaluation (Sec. 5 of the paper): per language ``k``, retrieval of the images against that
language's captions (:class:`~callbacks.metrics.RetrievalMetrics`), and the Mean Rank Variance
``MRV = (1/N) sum_n spread_k(rank_{n,k})``, the spread over the K languages of the rank the model
gives the same instance (an image for image -> text, a caption and its translations for
text -> image), averaged over instances. ⚠ The released ``analysis_ranks`` (xFlickrCO.py,
described in the spec; not in the stored copy of the repository) takes the population standard
deviation (``np.std``) although the name says variance: ``method.mrv_kind: std`` (default)
follows the code, ``var`` the name. The ``languages`` evaluator (callbacks/evaluators.py)
logs ``{val,test}/languages/mrv`` (mean of the two directions), ``.../image_to_text/mrv``,
``.../text_to_image/mrv``, per-language ``.../lang<k>/<a>_to_<b>/R1`` and their mean
``.../mean_R1``. The standard callbacks score
language 0 (the original captions).

⚠ Temperature: learnable, initialised at 0.07 and clamped to tau in [0.001, 0.5] in the code;
here log(1/tau) is clamped to [ln(1/max_temperature), ln model.max_logit_scale], so
experiments/one_to_k.yaml sets ``model.max_logit_scale: 1000``. Scoped out: the X-VLM backbone's
1-to-K hard-negative ITM and MLM losses (a dual-tower library has no fusion encoder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from modules.base import DualTowerModule, MethodConfig, Temperature
from modules.losses.contrastive import clip_loss
from modules.losses.one_to_k import k_pairs_loss, one_to_k_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput

OBJECTIVES = ("one_to_k", "one_to_one", "k_pairs")
#: Objectives that train on all K captions of ``text_ids_k``.
ALL_LANGUAGES = ("one_to_k", "k_pairs")
MRV_KINDS = ("std", "var")  # the languages evaluator's spreads
#: Key of the K-language caption outputs in ``encode``'s dict ([B K, ...], image-major).
LANGUAGES = "text_k"


@dataclass
class OneToKConfig(MethodConfig):
    name: str = "one_to_k"
    # one_to_k: the paper's loss on all K captions | one_to_one: CLIP on text_ids, one random
    # language (a baseline) | k_pairs: CLIP on each language's captions, averaged (a baseline)
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


@METHODS.register("one_to_k", OneToKConfig)
class OneToK(DualTowerModule):
    """Image-text contrastive learning with the K parallel captions of each image positive at
    once (``itc``), plus per-language retrieval and MRV in validation and test."""

    loss_terms = ("itc",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.pair[1] != "text":
            raise ValueError(f"one_to_k needs captions as text, got {self.modalities}")
        model = kwargs["model"]
        # tau in [1 / max_logit_scale, max_temperature] (the official [0.001, 0.5])
        self.temperature = Temperature(
            model["temperature"],
            model["learnable_temperature"],
            model["max_logit_scale"],
            max_temperature=self.method_cfg.max_temperature,
        )

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The item tower's output, the ``text_ids`` captions' (unless training on all
        languages) and, with K languages, the B·K captions of ``text_ids_k`` as ``text_k`` with
        fields ``[B, K, ...]`` (unless training 1-to-1): each training step encodes only what
        its loss reads, and every output keeps the batch as its first dimension (gradient
        caching cuts them into micro-batches)."""
        item, caption = self.pair
        outputs = {item: self.towers[item](batch)}
        multilingual = "text_ids_k" in batch
        all_languages = self.method_cfg.objective in ALL_LANGUAGES
        if not (self.training and multilingual and all_languages):
            outputs[caption] = self.towers[caption](batch)
        if multilingual and not (self.training and not all_languages):
            ids, mask = batch["text_ids_k"], batch["text_mask_k"]
            flat = self.towers[caption](
                {"text_ids": ids.flatten(0, 1), "text_mask": mask.flatten(0, 1)}
            )
            outputs[LANGUAGES] = TowerOutput(
                *(None if t is None else t.unflatten(0, ids.shape[:2]) for t in flat)
            )
        return outputs

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        item, caption = self.pair
        image = self.normalized(item, outputs[item])
        ids = batch["item_id"]
        if self.method_cfg.objective == "one_to_one":
            text = self.normalized(caption, outputs[caption])
            return {"itc": clip_loss(image, text, self.scale, ids=ids)}
        if LANGUAGES in outputs:
            texts = self.normalized(caption, outputs[LANGUAGES])
        else:  # one language: either loss is CLIP's
            texts = self.normalized(caption, outputs[caption])[:, None]
        loss = k_pairs_loss if self.method_cfg.objective == "k_pairs" else one_to_k_loss
        return {"itc": loss(image, texts, self.scale, ids=ids)}

    # ------------------------------------------------------------------ per-language evaluation

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Per-language retrieval and the mean rank variance (callbacks/evaluators.py)."""
        return {"languages": {"mrv_kind": self.method_cfg.mrv_kind}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """The K languages' normalised caption embeddings, ``languages/<caption side>``
        [B, K, D], for the ``languages`` evaluator."""
        if LANGUAGES not in outputs:
            return {}
        caption = self.pair[1]
        return {f"languages/{caption}": self.normalized(caption, outputs[LANGUAGES])}
