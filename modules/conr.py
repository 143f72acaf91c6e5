"""ConR: contrastive regularisation for deep imbalanced regression (Keramati, Meng and Evans,
ICLR 2024; methods/part1.md section 31), after BorealisAI/ConR ``agedb-dir/train.py``.

One encoder and a linear regressor on its features (ResNet-50's pooled ``encoding`` and
``linear`` there; here the tower's pooled embedding, ``embedding("image", ...)``, and
``head``). A training step, with ``y`` the raw targets (no normalisation, as for AgeDB's ages)
and ``w`` optional per-sample weights (1 by default):

    L = L_reg + beta * L_ConR                            (methods/part1.md section 31)
    L_reg  = mean_i w_i |head(z(x_i)) - y_i|                     (``weighted_l1_loss``)
    L_ConR = conr_loss(cat(z(v0), z(v1)), cat(y, y), sg(cat(yhat(v0), yhat(v1))),
                       cat(w, w))                                 (modules/losses/conr.py)

where ``x`` is the plain training image, ``v0``, ``v1`` its two size-preserving views and
``yhat(v) = head(z(v))`` the views' predictions, detached (``outputs_c.clone().detach()``).
The terms are ``regression`` and ``conr``; ``loss_weights.conr`` is beta (4, the official
default). The baseline of the paper's tables (plain L1 regression) is this module with
``loss_weights.conr: 0``: it then skips encoding the views (nothing reads them), so it logs no
``conr`` term and costs a third of the forward passes.

Details and their source:

- ConR reads the features the regressor reads (the official ``encoding``, before
  ``linear``): the tower's pooled embedding (the CNN's mean-pooled map through the tower's
  linear projection); ``conr_loss`` L2-normalises them.
- The official regression input is a third draw of the training augmentation; here it is
  ``image`` as the data gives it (``data.augment.train``; experiments/conr.yaml).
- ConR's temperature is the model's temperature (``model.temperature``, 0.07: the official
  function overwrites its ``t`` with 0.07), kept fixed: ``model.learnable_temperature`` must
  be false.
- Weights (``reweight``: ``inverse`` or ``sqrt_inv``, optionally smoothed by LDS, Yang et al.
  2021): ``AgeDB._prepare_weights`` on the training targets, binned by ``int(y)`` up to
  ``max_target``; they scale both terms (``weights`` and ``weights_c`` there). Default
  ``none``, the plain baseline. One deviation: with ``inverse`` and LDS the official code
  smooths integer counts, which ``convolve1d`` truncates to integers; here they stay real.
- Evaluation batches carry no views: there the loss is the plain (unweighted) L1 of the
  regression term only (``val/loss`` is the validation MAE, as ``validate`` computes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.ndimage import convolve1d, gaussian_filter1d
from scipy.signal.windows import triang
from torch import Tensor, nn

from modules.base import AlignmentModule, FitContext, MethodConfig, view_name
from modules.losses.conr import conr_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput

REWEIGHTS = ("none", "inverse", "sqrt_inv")
LDS_KERNELS = ("gaussian", "triang", "laplace")


@dataclass
class ConRConfig(MethodConfig):
    """ConR's hyper-parameters (official defaults: ``-w 1``, ``-e 0.01``, ``--beta 4``)."""

    name: str = "conr"
    target: str = "size"  # the batch's ``target/<target>`` to regress
    omega: float = 1.0  # similarity window w, in target units
    eta: float = 0.01  # e: pushing weight exp(eta |y_i - y_j|)
    official_denominator: bool = True  # the exp(0) = 1 per non-positive column (losses/conr.py)
    reweight: str = "none"  # none | inverse | sqrt_inv (cost-sensitive re-weighting)
    lds: bool = False  # smooth the label histogram first (needs reweight != none)
    lds_kernel: str = "gaussian"  # gaussian | triang | laplace
    lds_ks: int = 9  # kernel size (odd), train.py's default
    lds_sigma: float = 1.0
    max_target: int = 121  # histogram bins int(y) in [0, max_target), the last one open-ended
    loss_weights: dict[str, float] = field(default_factory=lambda: {"regression": 1.0, "conr": 4.0})

    def __post_init__(self) -> None:
        if self.reweight not in REWEIGHTS:
            raise ValueError(f"reweight: one of {REWEIGHTS}, got {self.reweight!r}")
        if self.lds and self.reweight == "none":
            raise ValueError("lds: set reweight to sqrt_inv or inverse to use LDS")
        if self.lds_kernel not in LDS_KERNELS or self.lds_ks < 1 or self.lds_ks % 2 == 0:
            raise ValueError(f"lds_kernel in {LDS_KERNELS} and an odd lds_ks >= 1 needed")
        if self.omega < 0 or self.max_target < 1:
            raise ValueError("omega must be >= 0 and max_target >= 1")


def lds_kernel_window(kernel: str, ks: int, sigma: float) -> np.ndarray:
    """The LDS kernel, peak 1 (``get_lds_kernel_window`` of agedb-dir/utils.py)."""
    half = (ks - 1) // 2
    if kernel == "gaussian":
        base = np.zeros(ks)
        base[half] = 1.0
        window = gaussian_filter1d(base, sigma=sigma)
    elif kernel == "triang":
        window = triang(ks)
    else:
        window = np.exp(-np.abs(np.arange(-half, half + 1)) / sigma) / (2.0 * sigma)
    return window / window.max()


def bin_weights(targets: np.ndarray, cfg: ConRConfig) -> np.ndarray:
    """Per-bin weights [max_target] from the training targets (``AgeDB._prepare_weights``):
    1 / count (``inverse``, counts clipped to [5, 1000]) or 1 / sqrt(count) (``sqrt_inv``),
    counts LDS-smoothed first if ``lds``; scaled so the training samples' weights average 1."""
    bins = np.clip(targets.astype(np.int64), 0, cfg.max_target - 1)
    counts = np.bincount(bins, minlength=cfg.max_target).astype(np.float64)
    if cfg.reweight == "sqrt_inv":
        counts = np.sqrt(counts)
    else:
        counts = np.clip(counts, 5, 1000)
    if cfg.lds:
        window = lds_kernel_window(cfg.lds_kernel, cfg.lds_ks, cfg.lds_sigma)
        counts = convolve1d(counts, weights=window, mode="constant")
    with np.errstate(divide="ignore"):
        per_bin = 1.0 / counts  # inf only for bins no training sample falls in
    scale = len(bins) / per_bin[bins].sum()
    return np.where(np.isfinite(per_bin), scale * per_bin, 0.0)


@METHODS.register("conr", ConRConfig)
class ConR(AlignmentModule):
    """One encoder + linear regressor, trained with L1 plus beta times ConR on two views."""

    num_encoders = 1
    loss_terms = ("regression", "conr")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: ConRConfig = self.method_cfg
        if self.temperature.log_scale.requires_grad:
            raise ValueError(
                "conr: ConR's temperature is fixed (0.07 officially); set "
                "model.learnable_temperature: false (model.temperature is ConR's tau)"
            )
        (self.modality,) = self.modalities
        if self.views.get(self.modality, 0) < 2:
            raise ValueError(
                f"conr: needs two training views of {self.modality!r} "
                f"(data.views >= 2), the data gives {self.views.get(self.modality, 0)}"
            )
        self.head = nn.Linear(self.hparams["model"]["embed_dim"], 1)
        # per-bin sample weights (all 1 unless reweighting: filled by prepare_fit)
        self.register_buffer("weight_of_bin", torch.ones(cfg.max_target))

    def prepare_fit(self, ctx: FitContext) -> None:
        """With re-weighting, the per-bin weights from the training set's targets."""
        super().prepare_fit(ctx)
        cfg: ConRConfig = self.method_cfg
        if cfg.reweight == "none":
            return
        key = f"target/{cfg.target}"
        targets = np.concatenate([batch[key].numpy() for batch in ctx.loader(None)])
        table = torch.as_tensor(bin_weights(targets, cfg), dtype=self.weight_of_bin.dtype)
        self.weight_of_bin.copy_(table)
        ctx.log_metrics({"conr/max_weight": float(table.max())})

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The plain input and its views; the plain baseline (``loss_weights.conr: 0``) trains
        on the plain input only, so it skips the views (the same gradient, a third of the
        forward passes)."""
        if self.training and not self.regularised:
            return {self.modality: self.towers[self.modality](batch)}
        return super().encode(batch)

    @property
    def regularised(self) -> bool:
        """Whether ConR enters the training loss (beta != 0)."""
        return bool(self.method_cfg.loss_weights.get("conr", 1.0))

    def predict(self, output: TowerOutput) -> Tensor:
        """The regressor on the encoder's features: [B]."""
        return self.head(self.embedding(self.modality, output)).squeeze(-1)

    def sample_weights(self, targets: Tensor) -> Tensor | None:
        """Each training sample's weight by its target's bin (None without re-weighting)."""
        cfg: ConRConfig = self.method_cfg
        if cfg.reweight == "none" or not self.training:
            return None
        bins = targets.long().clamp(0, cfg.max_target - 1)
        return self.weight_of_bin[bins]

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """``regression``: (weighted) L1 on the plain input; ``conr``: ConR on the two views'
        features with their detached predictions (training batches only: they carry views)."""
        cfg: ConRConfig = self.method_cfg
        targets = batch[f"target/{cfg.target}"].float()
        weights = self.sample_weights(targets)
        error = (self.predict(outputs[self.modality]) - targets).abs()
        terms = {"regression": (error if weights is None else error * weights).mean()}
        views = [view_name(self.modality, v) for v in range(2)]
        if not all(view in outputs for view in views):
            if self.training and self.regularised:
                raise KeyError(f"conr: training batches need the views {views}")
            return terms
        features = torch.cat([self.embedding(self.modality, outputs[v]) for v in views])
        predictions = torch.cat([self.predict(outputs[v]) for v in views]).detach()
        terms["conr"] = conr_loss(
            features,
            targets.repeat(2),
            predictions,
            None if weights is None else weights.repeat(2),
            omega=cfg.omega,
            eta=cfg.eta,
            temperature=1 / self.scale,
            official_denominator=cfg.official_denominator,
        )
        return terms

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """MAE / GM overall and by shot region of the target (``regression`` evaluator)."""
        return {"regression": {"targets": [self.method_cfg.target]}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """The regressor's predictions on the plain (evaluation) images."""
        return {f"prediction/{self.method_cfg.target}": self.predict(outputs[self.modality])}
