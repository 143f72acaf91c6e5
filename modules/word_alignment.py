"""Si-En word-embedding alignment (Wickramasinghe & de Silva, "Sinhala-English Word Embedding
Alignment: Introducing Datasets and Benchmark for a Low Resource Language"; methods/part2.md
Sec. 56): a linear map from the source space (``corpus_a``) to the target space (``corpus_b``)
learned from a seed dictionary, by the techniques the paper's repository runs (MUSE supervised,
fastText RCSLS); closed-form steps in modules/losses/word_alignment.py.

The two spaces are the frozen input tables of an earlier ``cbow`` stage (``features_from``),
copied in ``prepare_fit``, where also the map is solved in closed form; only the words of
each corpus (the earlier stage's ``counts``) are the vocabularies that retrieval and RCSLS
range over. Tables are L2-normalised (fastText ``load_vectors``; no centring, MUSE's default).
The three techniques the paper compares:

- **Procrustes** (``method.init: procrustes``, ``trainer.max_epochs: 0``): ``W = U V^T``,
  ``U S V^T = SVD(Y_D^T X_D)`` on the training pairs (MUSE supervised, refinement off);
- **+ CSLS refinement** (``method.init: refine``, ``trainer.max_epochs: 0``): Procrustes, then
  ``refinements`` (MUSE: 5) rounds of Procrustes on the mutual CSLS nearest neighbours
  (k = ``knn``, 10) of the mapped spaces;
- **RCSLS** (``trainer.max_epochs > 0``, the YAML's default): from the Procrustes map (as
  align.py initialises), the RCSLS loss (k = 10 neighbours over the whole vocabularies)
  minimised over ``W`` (unconstrained: align.py's default ``--model none``) by the base's
  optimiser over the training pairs (official: full-batch gradient descent, ``--lr 25 --niter
  10`` in its README, halving the step when the loss rises; scoped down to the shared AdamW
  loop). Training always minimises RCSLS: the closed-form maps are the 0-epoch runs.

``embedding``: ``corpus_a`` rows mapped by ``W`` and ``corpus_b`` rows, both L2-normalised by
the base before evaluation; the ``word_translation`` evaluator (callbacks/word_translation.py)
scores precision@1/5/10 of NN and CSLS retrieval on the test dictionary. Only the source ->
target direction is evaluated (the paper also reports En -> Si). Scoped down: synthetic
comparable corpora (datamodules/embedded/word_corpora.py) instead of Sinhala and English
Wikipedia fastText vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import DualTowerModule, FitContext, MethodConfig
from modules.losses.word_alignment import procrustes, rcsls_loss, refined_procrustes
from modules.registry import METHODS
from modules.towers.output import TowerOutput
from modules.word2vec import CBOW

INITS = ("procrustes", "refine")


@dataclass
class WordAlignmentConfig(MethodConfig):
    name: str = "word_alignment"
    init: str = "procrustes"  # procrustes | refine: the closed-form map training starts from
    refinements: int = 5  # MUSE supervised n_refinement
    knn: int = 10  # CSLS / RCSLS neighbourhood (MUSE csls_knn_10, align.py --knn)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"method.init must be one of {INITS}, got {self.init!r}")
        if self.refinements < 1:
            raise ValueError(f"method.refinements must be at least 1, got {self.refinements}")
        if self.knn < 1:
            raise ValueError(f"method.knn must be at least 1, got {self.knn}")


@METHODS.register("word_alignment", WordAlignmentConfig)
class WordAlignment(DualTowerModule):
    """A linear map between two frozen word spaces: Procrustes (+ CSLS refinement), then
    RCSLS for ``trainer.max_epochs`` epochs."""

    loss_terms = ("rcsls",)
    loss_on_eval = False  # evaluation batches are the vocabulary, not dictionary pairs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        words, dim = self.hparams["context"]["num_words"], self.hparams["model"]["embed_dim"]
        self.towers.requires_grad_(False)
        self.mapping = nn.Parameter(torch.eye(dim))
        # rows that are words of each corpus (all until an earlier stage says otherwise)
        self.register_buffer("vocabularies", torch.ones(len(self.pair), words, dtype=torch.bool))

    def table(self, name: str) -> Tensor:
        """The L2-normalised rows of corpus ``name``'s words ``[V_name, D]``."""
        weight = self.towers[name].table.weight
        return F.normalize(weight[self.vocabularies[self.pair.index(name)]], dim=1)

    def prepare_fit(self, ctx: FitContext) -> None:
        """Copy the spaces of the earlier ``cbow`` stage and solve the map."""
        if len(ctx.earlier) != 1 or not isinstance(ctx.earlier[0], CBOW):
            raise ValueError("word_alignment: features_from must name one cbow stage")
        earlier: CBOW = ctx.earlier[0]
        with torch.no_grad():
            for i, name in enumerate(self.pair):
                self.towers[name].table.weight.copy_(earlier.input_vectors(name))
                self.vocabularies[i] = earlier.counts[i] > 0
        pairs = torch.cat(
            [torch.cat([b["corpus_a"], b["corpus_b"]], dim=1) for b in ctx.loader(None)]
        ).to(self.mapping.device)
        with torch.no_grad():
            self.mapping.copy_(self.solve(pairs))

    def solve(self, pairs: Tensor) -> Tensor:
        """The closed-form map of the training ``pairs`` ``[P, 2]`` (word ids): Procrustes,
        refined for ``init: refine``."""
        a, b = self.pair
        rows = [torch.full_like(v, -1, dtype=torch.long) for v in self.vocabularies]
        for r, v in zip(rows, self.vocabularies, strict=True):
            r[v] = torch.arange(int(v.sum()), device=v.device)
        seed = torch.stack([rows[0][pairs[:, 0]], rows[1][pairs[:, 1]]], dim=1)
        seed = seed[(seed >= 0).all(dim=1)]
        if not len(seed):
            raise ValueError("word_alignment: no training pair has both words in the spaces")
        source, target = self.table(a), self.table(b)
        if self.method_cfg.init == "refine":
            return refined_procrustes(
                source, target, seed, self.method_cfg.refinements, self.method_cfg.knn
            )
        return procrustes(source[seed[:, 0]], target[seed[:, 1]])

    def embedding(self, name: str, output: TowerOutput) -> Tensor:
        vectors = F.normalize(output.pooled, dim=-1)
        return vectors @ self.mapping.T if name == self.pair[0] else vectors

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        a, b = self.pair
        x = F.normalize(outputs[a].pooled, dim=-1)
        y = F.normalize(outputs[b].pooled, dim=-1)
        k = self.method_cfg.knn
        return {"rcsls": rcsls_loss(x, y, self.table(a), self.table(b), self.mapping, k)}
