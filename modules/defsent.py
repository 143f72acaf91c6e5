"""DefSent+ (Liu, arXiv 2405.16153, 2024; methods/part2.md section 46): sentence embeddings
learnt by projecting dictionary definitions onto their entries, where the entries live in a
(quasi-)isotropic space and are not limited to the language model's single-token vocabulary.

DefSent (Tsukagoshi et al., ACL 2021) classified a definition's embedding over the frozen word
embeddings of the LM's vocabulary (its MLM head): one-token entries only, in an anisotropic
space that could not be pre-processed. DefSent+ builds the entry embeddings itself, from the
definitions (modules/losses/defsent.py, after the released code ``ryuliuxiaodong/DefSent-Plus``):

1. before training (``prepare_fit``), every training definition is encoded by the current
   encoder and each entry's embedding is the average over its definitions
   (``GenerateEntryEmbeddings.py``);
2. the table is moved into an isotropic space (``method.entry_space``: ``ica`` = standardise,
   whiten, FastICA, x 100 as ``ICA-transform.py``; ``whitened`` without the ICA rotation;
   ``raw``: the averages themselves, the quasi-isotropic space) and frozen;
3. the encoder is trained to classify each definition's embedding ``s(d)`` over all entries:
   ``CE(s(d) E^T, entry)`` (``TrainEncoder.py``), ``s(d)`` passed through a pooler
   (``Linear -> tanh``, BERT's pooler, which the code keeps on the training path; the
   evaluated sentence embedding is the tower's, before it, as the code's ``encode``).

"Progressively": the entry table is built by the model being trained, and can be rebuilt from
the trained model for another round; experiments/defsent.yaml chains rounds as stages
(``init_from`` the previous round, whose encoder then builds the next table).

Data: ``definitions`` (datamodules/definitions.py): training samples are definitions
(``text``) with their entry (``label/entry``); validation/test are the ``sentences`` family's STS
pairs (``sts/spearman``).

Choices and scope: the paper's text was not available (the spec marks it UNCONFIRMED); the code
was followed where it is explicit (averaged definitions, StandardScaler + FastICA(logcosh,
unit-variance) x 100, frozen bias-free prediction layer, CE over all entries, one epoch, AdamW
eps 1e-6, gradient clipping 1.0, linear decay without warm-up are YAML settings). Which
encoder builds the first table: the one being trained (the code reads ``model_path``, the
backbone or an earlier DefSent+ model). The FastICA here is our own (torch, symmetric, as
scikit-learn's default), seeded from the run's seed; the pooler starts at random (MiniLM's
package ships no pooler that the tower keeps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from modules.base import AlignmentModule, FitContext, MethodConfig
from modules.losses.defsent import entry_embeddings, entry_loss, isotropic_entries
from modules.registry import METHODS
from modules.towers.output import TowerOutput

SPACES = ("raw", "whitened", "ica")


@dataclass
class DefSentPlusConfig(MethodConfig):
    name: str = "defsent_plus"
    entry_space: str = "ica"  # raw (quasi-isotropic) | whitened | ica (isotropic, the code's)
    entry_scale: float = 100.0  # ICA-transform.py: e * 100
    ica_iterations: int = 200
    label: str = "entry"  # the data's label naming each definition's entry
    pooler: bool = True  # BERT's pooler (Linear -> tanh) on the training path
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.entry_space not in SPACES:
            raise ValueError(f"entry_space: expected one of {SPACES}, got {self.entry_space!r}")
        if self.entry_scale <= 0:
            raise ValueError(f"entry_scale: must be positive, got {self.entry_scale}")
        if self.ica_iterations < 1:
            raise ValueError(f"ica_iterations: must be >= 1, got {self.ica_iterations}")


@METHODS.register("defsent_plus", DefSentPlusConfig)
class DefSentPlus(AlignmentModule):
    """Definitions classified over a frozen, (quasi-)isotropic table of entry embeddings built
    from the definitions themselves."""

    loss_terms: ClassVar[tuple[str, ...]] = ("entry",)
    num_encoders = 1
    loss_on_eval = False  # evaluation batches are STS pairs, not definitions
    deterministic_overrides = {"model.text.dropout": 0.0}  # BERT-style dropout in the tower

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        cfg: DefSentPlusConfig = self.method_cfg
        if cfg.label not in self.labels:
            raise ValueError(
                f"method.label: the data has no label {cfg.label!r} (labels: {list(self.labels)})"
            )
        dim = self.hparams["model"]["embed_dim"]
        self.pooler = nn.Sequential(nn.Linear(dim, dim), nn.Tanh()) if cfg.pooler else nn.Identity()
        #: The frozen entry table [E, d]; built by ``prepare_fit`` (zeros until then).
        self.register_buffer("entries", torch.zeros(self.labels[cfg.label], dim))

    @torch.no_grad()
    def prepare_fit(self, ctx: FitContext) -> None:
        """Build the entry table from the current encoder: every training definition encoded
        (eval mode), averaged per entry, moved into ``entry_space``; log how isotropic the
        averages and the table are (mean cosine between entries)."""
        super().prepare_fit(ctx)
        cfg: DefSentPlusConfig = self.method_cfg
        was_training = self.training
        self.eval()
        embedded, ids = [], []
        for batch in ctx.loader(None):
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            embedded.append(self.embedding("text", self.towers["text"](batch)).double())
            ids.append(batch[f"label/{cfg.label}"])
        self.train(was_training)
        averaged = entry_embeddings(torch.cat(embedded), torch.cat(ids), self.entries.shape[0])
        generator = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, ()).item()))
        table = isotropic_entries(
            averaged, cfg.entry_space, cfg.entry_scale, generator, cfg.ica_iterations
        )
        self.entries.copy_(table.to(self.entries.dtype))
        ctx.log_metrics(
            {
                "defsent/entry_mean_cosine_averaged": mean_cosine(averaged),
                "defsent/entry_mean_cosine": mean_cosine(table),
            }
        )

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        sentences = self.pooler(self.embedding("text", outputs["text"]))
        targets = batch[f"label/{self.method_cfg.label}"]
        return {"entry": entry_loss(sentences, self.entries.to(sentences.dtype), targets)}


def mean_cosine(x: Tensor) -> float:
    """The mean cosine similarity between distinct rows (0 for an isotropic cloud)."""
    unit = nn.functional.normalize(x, dim=1)
    n = unit.shape[0]
    total = unit.sum(0).pow(2).sum() - n  # sum over i != j of cos(i, j)
    return float(total / (n * (n - 1)))
