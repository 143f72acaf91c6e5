"""CADE: Compass-aligned Distributional Embeddings (Bianchi, Di Carlo, Nicoli & Palmonari,
"Compass-aligned Distributional Embeddings for Studying Semantic Differences across Corpora",
2020; TWEC, Di Carlo et al., AAAI 2019; methods/part2.md Sec. 51), following the official code
(``vinid/cade``, ``cade/cade.py``):

1. **Compass**: word2vec CBOW with negative sampling on the concatenation of the corpora
   (the earlier ``cbow`` stage with ``shared: true``, experiments/cade.yaml), learning input
   vectors ``W_c`` (``syn0``) and output vectors ``U_c`` (``syn1neg``).
2. **Slices** (this method, ``features_from: [compass]``): every corpus ``k`` gets its own
   input table ``W_k`` (tower ``corpus_<k>``, random init: ``init_mode: hidden``, the default)
   trained with the same CBOW-NS loss (modules/losses/word2vec.py) against the compass's output
   vectors, copied into the frozen buffer ``compass`` (``initialize_from_compass``:
   ``model.syn1neg = compass.syn1neg``, ``model.learn_hidden = False``). Since every slice
   predicts words in the one frozen output space, the ``W_k`` are aligned by construction:
   a word's vectors in two slices are directly comparable.

The paper's naming: the frozen matrix is the compass's "target" (output) embeddings and each
slice learns its "context" (input, ``syn0``) embeddings, which are the ones compared; the
official code decides which matrix is frozen (``syn1neg``), and this module follows it.
The slices' vocabulary is the compass's (the data's joint vocabulary; ``trim_rule`` keeps
compass words only). Both slices are trained in one run, each on its own corpus; their losses
are independent (disjoint parameters), so this equals training them one after the other.

Semantic shift: a word's cosine distance between its slice vectors, ranked against the gold
shifted words by the ``semantic_shift`` evaluator (AUROC, AP, precision@k;
callbacks/semantic_shift.py). Baseline (the issue's): two separately trained spaces aligned by
orthogonal Procrustes on all shared words (experiments/cade_procrustes.yaml).

Scoped down: synthetic periods (datamodules/embedded/word_corpora.py) instead of the paper's
NYT / cross-corpus benchmarks; AdamW instead of gensim's SGD (see modules/word2vec.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from modules.base import DualTowerModule, FitContext, MethodConfig
from modules.losses.word2vec import cbow_negative_sampling
from modules.registry import METHODS
from modules.towers.output import TowerOutput
from modules.word2vec import CBOW


@dataclass
class CADEConfig(MethodConfig):
    name: str = "cade"


@METHODS.register("cade", CADEConfig)
class CADE(DualTowerModule):
    """One trainable input table per corpus against the compass's frozen output vectors."""

    loss_terms = ("corpus_a", "corpus_b")
    loss_on_eval = False  # evaluation batches are words, not windows

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        words, dim = self.hparams["context"]["num_words"], self.hparams["model"]["embed_dim"]
        #: The compass's output vectors U_c: a buffer, never trained.
        self.register_buffer("compass", torch.zeros(words, dim))

    def prepare_fit(self, ctx: FitContext) -> None:
        """Copy the compass's output vectors (``features_from``: one shared ``cbow`` stage)."""
        if len(ctx.earlier) != 1 or not isinstance(ctx.earlier[0], CBOW):
            raise ValueError("cade: features_from must name one cbow stage (the compass)")
        compass: CBOW = ctx.earlier[0]
        if not compass.shared:
            raise ValueError("cade: the compass stage must train one space (method.shared: true)")
        with torch.no_grad():
            self.compass.copy_(compass.output_vectors(self.pair[0]))

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        u = self.compass
        return {
            name: cbow_negative_sampling(
                outputs[name].pooled, u[batch[f"center/{name}"]], u[batch[f"negatives/{name}"]]
            )
            for name in self.pair
        }
