"""Word embeddings trained from scratch: word2vec CBOW with negative sampling (Mikolov et al.
2013; modules/losses/word2vec.py), one space per corpus of ``word_corpora`` (``data.train:
windows``). The earlier stage of the Si-En alignment chain (experiments/si_en_alignment.yaml)
and of both CADE chains (experiments/cade.yaml: the compass; experiments/cade_procrustes.yaml:
the two separately trained spaces of the baseline).

- Input vectors ``W`` (gensim ``syn0``, the embeddings that are used): the ``word_table``
  towers ``corpus_a`` and ``corpus_b``; a window's context vector ``h`` is the tower's pooled
  mean of its context words (gensim ``cbow_mean=1``).
- Output vectors ``U`` (gensim ``syn1neg``): ``output[<corpus>]``, zero-initialised as gensim's.
- ``shared: true``: one ``W`` (tower ``corpus_a``) and one ``U`` for both corpora, trained on
  both: word2vec on the concatenation of the corpora, CADE's compass (Sec. 51).
- ``counts``: how often each word is a window's centre in each corpus (counted over the
  training set before training, ``prepare_fit``): which rows of a table are words of that
  corpus, for the later alignment (modules/word_alignment.py).

Scoped down (the 2 CPU cores): AdamW on the base's schedule instead of gensim's SGD at
lr 0.025 decaying linearly; no frequent-word subsampling; a full (not randomly shrunk) window;
skip-gram (fastText's choice for the Si-En vectors, with sub-word n-grams) is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from modules.base import DualTowerModule, FitContext, MethodConfig
from modules.losses.word2vec import cbow_negative_sampling
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class CBOWConfig(MethodConfig):
    name: str = "cbow"
    shared: bool = False  # one space for both corpora (CADE's compass)


@METHODS.register("cbow", CBOWConfig)
class CBOW(DualTowerModule):
    """CBOW-NS per corpus (or on both corpora into one space)."""

    loss_terms = ("corpus_a", "corpus_b")
    loss_on_eval = False  # evaluation batches are words, not windows

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        words, dim = self.hparams["context"]["num_words"], self.hparams["model"]["embed_dim"]
        self.shared: bool = self.method_cfg.shared
        spaces = self.pair[:1] if self.shared else self.pair
        self.output = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(words, dim)) for name in spaces}
        )
        self.register_buffer("counts", torch.zeros(len(self.pair), words))

    def space(self, name: str) -> str:
        """The encoder whose tables embed corpus ``name``."""
        return self.pair[0] if self.shared else name

    def output_vectors(self, name: str) -> Tensor:
        """The output vectors ``U`` of corpus ``name`` ``[V, D]``."""
        return self.output[self.space(name)]

    def input_vectors(self, name: str) -> Tensor:
        """The input vectors ``W`` of corpus ``name`` ``[V, D]``: its embeddings."""
        return self.towers[self.space(name)].table.weight

    def prepare_fit(self, ctx: FitContext) -> None:
        """Count each corpus's words over the training windows."""
        super().prepare_fit(ctx)
        self.counts.zero_()
        for batch in ctx.loader(None):
            for i, name in enumerate(self.pair):
                center = batch[f"center/{name}"].to(self.counts.device)
                self.counts[i].index_add_(0, center, torch.ones_like(center, dtype=torch.float))

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Each corpus's windows through its space's input table."""
        outputs = {}
        for name in self.pair:
            if name in batch:
                tower = self.towers[self.space(name)]
                outputs[name] = tower({tower.key: batch[name]})
        return outputs

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        terms = {}
        for name in self.pair:
            u = self.output_vectors(name)
            terms[name] = cbow_negative_sampling(
                outputs[name].pooled, u[batch[f"center/{name}"]], u[batch[f"negatives/{name}"]]
            )
        return terms
