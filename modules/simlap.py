"""SimLAP: contrastive learning from arbitrary pairs (Wu, Atito, Feng, Mo, Kittler & Awais,
"Rethinking positive pairs in contrastive learning", arXiv 2410.18200; methods/part1.md section
22). Registered as ``simlap``: the paper's first version calls the method *Hydra*, its current
abstract and the official code (``erow/vitookit``, ``vitookit/evaluation/simlap.py``; the
self-supervised variant in ``erow/FastSSL``, ``model/simlap.py``) call it SimLAP, and "hydra"
would also read as the Hydra configuration framework.

The idea: for any two classes there is a subspace in which samples of the one look like samples
of the other (cats and dogs: fur, four legs). SimLAP learns such a subspace per class pair, a
gate, and pulls an anchor of class ``y1`` towards the samples of an *arbitrary* class ``y2``
inside it:

    h = f(x),  z = g(h)                       (encoder; projector: 2 layers, LayerNorm last)
    g_a = sigmoid(MLP((E[y1(a)] + E[y2(a)]) / 2))     (E: label embedding, 512-d)
    L = L_SimLAP(z, g, y1, y2)  +  CE(W sg(h), y1)    (modules/losses/simlap.py)

with the gate MLP ``ReLU, BN, Linear(512, 1024), ReLU, BN, Linear(1024, 256)`` and tau = 0.1, as
in the code (``BasicGate``, ``SimLAP.criterion``). ``pairs`` chooses ``y2``: ``arbitrary`` (the
class of a random permutation of the batch: sometimes ``y1``, mostly not), ``identical``
(``y2 = y1``: supervised contrast inside the gated subspace) or ``distinct`` (a uniformly drawn
other class). ``gate: false`` is the code's ``OpenGate`` (``g = 1``): with ``pairs: identical``
the loss is then SupCon with per-positive denominators, the supervised baseline. The linear
head reads the stop-gradient representation (the code's ``cls_head(rep.detach())``), so it
measures the representation online without shaping it; its logits go to the ``classifier``
evaluator (``logits/image/<task>``). Evaluation (k-NN, linear probe) reads ``h``, as the paper's
linear evaluation.

Several labelings (our data: shape, colour and count of every scene). One label space, the
union of the labelings' classes (offset so that they are disjoint, e.g. 6 + 6 + 3 = 15), one
label embedding and one gate MLP over it; each anchor draws the labeling it is contrasted
under (uniformly among ``tasks``, per anchor and step), and its pair class ``y2`` is a class of
the *same* labeling (arbitrary: that labeling's class of a random other anchor). Why: the loss
needs one partition of the candidates per anchor, P_a the class ``y2`` and N_a every class but
``y1`` and ``y2``; a pair taken across labelings (circle, red) would define P_a and N_a by two
different partitions and make red circles both. Within one labeling, the union space lets the
gate of (circle, square) and of (red, blue) be different subspaces of one projection, which is
the paper's mechanism applied to attributes rather than classes: one model, one embedding, all
labelings. Drawing per anchor rather than one labeling per step gives every step every
labeling.

Choices where the sources differ (the official self-supervised variant in FastSSL contrasts a
view with the *other* view, learns the temperature and gates the anchor twice without
renormalising; the spec and the supervised script contrast ``z`` with ``z``): the supervised
script's loss was followed. Every training view is an anchor and a candidate (the script's batch
is one augmented image per sample; with ``data.views: 2`` the two views of a scene are two
samples that share their labels, as SimCLR's baseline sees the same images), and the anchor
itself is among its candidates. The draws (labeling, permutation, distinct class) are made for
the global batch with the default generator and each rank takes its rows, so two processes
take the one-process step; the gate's BatchNorm, like the projector's, normalises over the
global batch (``GlobalBatchNorm1d``).

Scoped down: ResNet-18 / ViT become the platform's small CNN, the projector's hidden width is
512 (code: 2048; SimCLR's baseline here uses 512), and AdamW at SimCLR's settings replaces
Adam(1e-3, wd 5e-4) so that the comparison with SimCLR changes the objective only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig, view_name
from modules.distributed import gather_no_grad, rank
from modules.losses.simlap import simlap_loss
from modules.registry import METHODS
from modules.simclr import GlobalBatchNorm1d, ProjectionHead, check_views, projected_views
from modules.towers.output import TowerOutput

PAIRS = ("arbitrary", "identical", "distinct")


@dataclass
class SimLAPConfig(MethodConfig):
    """``pairs``: how ``y2`` is drawn (``arbitrary``, ``identical``, ``distinct``);
    ``tasks``: the labelings contrasted (empty: every label the data declares); ``gate``:
    False fixes ``g = 1``; ``head_hidden``, ``head_dim``: the projector (code: 2048 -> 256);
    ``label_dim``, ``gate_hidden``: the label embedding and the gate MLP's width (code: 512,
    1024). The temperature is ``model.temperature`` (paper: 0.1, fixed)."""

    name: str = "simlap"
    pairs: str = "arbitrary"
    tasks: list[str] = field(default_factory=list)
    gate: bool = True
    head_hidden: int = 512
    head_dim: int = 256
    label_dim: int = 512
    gate_hidden: int = 1024
    loss_weights: dict[str, float] = field(default_factory=lambda: {"simlap": 1.0, "ce": 1.0})

    def __post_init__(self) -> None:
        if self.pairs not in PAIRS:
            raise ValueError(f"pairs: one of {list(PAIRS)}, got {self.pairs!r}")
        widths = (self.head_hidden, self.head_dim, self.label_dim, self.gate_hidden)
        if min(widths) < 1:
            raise ValueError(f"head_hidden, head_dim, label_dim, gate_hidden: positive, {widths}")
        if len(set(self.tasks)) < len(self.tasks):
            raise ValueError(f"tasks: repeated labeling in {self.tasks}")


class LabelPairGate(nn.Module):
    """``sigmoid(MLP((E[y1] + E[y2]) / 2))`` in (0, 1)^out: the code's ``BasicGate`` (fused),
    its BatchNorms over the global batch of anchors."""

    def __init__(self, classes: int, label_dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(classes, label_dim)
        self.mlp = nn.Sequential(
            nn.ReLU(),
            GlobalBatchNorm1d(label_dim),
            nn.Linear(label_dim, hidden),
            nn.ReLU(),
            GlobalBatchNorm1d(hidden),
            nn.Linear(hidden, out),
        )

    def forward(self, y1: Tensor, y2: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp((self.embedding(y1) + self.embedding(y2)) / 2))


def pair_classes(
    labels: Tensor, sizes: Tensor, offsets: Tensor, views: int, pairs: str
) -> tuple[Tensor, Tensor]:
    """(``y1``, ``y2``) [V b] in the union label space for this rank's anchors (the ``views``
    views of its ``b`` samples, view-major), from its samples' labels [b, T] (within-labeling
    classes; ``sizes``, ``offsets`` [T] per labeling). Drawn for the global batch from the
    default generator (the same on every rank), each rank keeping its rows."""
    local = labels.shape[0]
    everyone = gather_no_grad(labels)  # [N, T]
    n = everyone.shape[0]
    task = torch.randint(labels.shape[1], (views, n), device=labels.device)
    samples = torch.arange(n, device=labels.device).expand(views, n)
    y1 = everyone[samples, task]
    if pairs == "identical":
        y2 = y1
    elif pairs == "arbitrary":
        partner = torch.randperm(views * n, device=labels.device).view(views, n) % n
        y2 = everyone[partner, task]
    else:  # distinct: one of the other classes of the labeling, uniformly
        shift = 1 + (torch.rand(views, n, device=labels.device) * (sizes[task] - 1)).long()
        y2 = (y1 + shift) % sizes[task]
    mine = slice(rank() * local, (rank() + 1) * local)
    return (
        (y1 + offsets[task])[:, mine].reshape(-1),
        (y2 + offsets[task])[:, mine].reshape(-1),
    )


@METHODS.register("simlap", SimLAPConfig)
class SimLAP(AlignmentModule):
    """Label-pair-gated contrast of the projected views + a linear head on ``sg(h)`` per
    labeling (see the module docstring)."""

    loss_terms = ("simlap", "ce")
    num_encoders = 1
    loss_on_eval = False  # evaluation batches carry the plain image, no views
    #: the labeling and the pair class are random draws (the default generator, global batch)
    deterministic_overrides = {"pairs": "identical", "tasks": ["shape"]}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: SimLAPConfig = self.method_cfg
        self.num_views = check_views(self, 1, exact=False)
        self.tasks = tuple(cfg.tasks or self.labels)
        unknown = [t for t in self.tasks if t not in self.labels]
        if unknown or not self.tasks:
            raise ValueError(f"method.tasks: {unknown or 'none'} not among {list(self.labels)}")
        sizes = torch.tensor([self.labels[t] for t in self.tasks])
        self.register_buffer("sizes", sizes, persistent=False)
        self.register_buffer("offsets", sizes.cumsum(0) - sizes, persistent=False)
        dim = self.hparams["model"]["embed_dim"]
        self.head = nn.Sequential(
            ProjectionHead(dim, cfg.head_hidden, cfg.head_dim), nn.LayerNorm(cfg.head_dim)
        )
        self.gate = (
            LabelPairGate(int(sizes.sum()), cfg.label_dim, cfg.gate_hidden, cfg.head_dim)
            if cfg.gate
            else None
        )
        self.classifiers = nn.ModuleDict({t: nn.Linear(dim, self.labels[t]) for t in self.tasks})

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: SimLAPConfig = self.method_cfg
        views = range(self.num_views)
        z = torch.cat(projected_views(self, self.head, batch, outputs, views))  # [V b, D]
        labels = torch.stack([batch[f"label/{t}"] for t in self.tasks], dim=1)  # [b, T]
        y1, y2 = pair_classes(labels, self.sizes, self.offsets, self.num_views, cfg.pairs)
        gates = self.gate(y1, y2) if self.gate is not None else torch.ones_like(z)
        union = (labels + self.offsets).repeat(self.num_views, 1)  # [V b, T]
        contrast = simlap_loss(z, z, gates, y1, y2, union, self.scale)
        name = self.modalities[0]
        h = torch.cat([self.embedding(name, outputs[view_name(name, v)]) for v in views]).detach()
        ce = [
            F.cross_entropy(head(h), batch[f"label/{t}"].repeat(self.num_views))
            for t, head in self.classifiers.items()
        ]
        return {"simlap": contrast, "ce": torch.stack(ce).mean()}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """The online linear heads' accuracy (``classifier`` evaluator)."""
        return {"classifier": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """``logits/<encoder>/<task>`` of the heads on the evaluation images' ``h``."""
        name = self.modalities[0]
        h = self.embedding(name, outputs[name])
        return {f"logits/{name}/{t}": head(h) for t, head in self.classifiers.items()}
