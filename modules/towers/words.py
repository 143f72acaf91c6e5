"""A word-embedding table as a tower (word_corpora's encoders ``corpus_a``, ``corpus_b``): the
input vectors of word2vec (gensim ``syn0``), one row per word of the data's vocabulary
(``TowerContext.num_words``), ``model.embed_dim`` wide.

Input: ``batch[key]`` long ``[B, L]`` word ids, ``-1`` for padding. Output: ``tokens`` the
rows ``[B, L, D]`` (zero at padding), ``mask`` the real positions, ``pooled`` their mean (a
CBOW window's context vector ``h``; for one word, its vector). Initialised as gensim does,
uniform in ``[-0.5 / D, 0.5 / D]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modules.registry import TOWERS
from modules.towers import TowerContext
from modules.towers.output import TowerOutput


@dataclass
class WordTableConfig:
    name: str = "word_table"
    key: str = ""  # the batch entry it reads: its encoder's name (corpus_a, corpus_b)


@TOWERS.register("word_table", WordTableConfig)
class WordTableTower(nn.Module):
    """One embedding row per word; a bag of words pooled by its mean."""

    modality = "words"
    #: The encoders it can be (experiments/config.py checks ``model.<encoder>.name``).
    modalities = ("corpus_a", "corpus_b")

    def __init__(self, cfg: WordTableConfig, embed_dim: int, context: TowerContext) -> None:
        super().__init__()
        if not cfg.key:
            raise ValueError("model.<encoder>.key: the word_table tower needs its batch key")
        if context.num_words < 1:
            raise ValueError("word_table tower needs the data's vocabulary (num_words missing)")
        self.key = cfg.key
        self.table = nn.Embedding(context.num_words, embed_dim)
        nn.init.uniform_(self.table.weight, -0.5 / embed_dim, 0.5 / embed_dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        ids = batch[self.key]
        mask = ids >= 0
        tokens = self.table(ids.clamp_min(0)) * mask.unsqueeze(-1).to(self.table.weight.dtype)
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp_min(1).to(tokens.dtype)
        return TowerOutput(pooled, tokens, mask)
