"""CoMix (Sahoo, Shah, Panda, Saenko & Das, "Contrast and Mix: Temporal Contrastive Video Domain
Adaptation with Background Mixing", NeurIPS 2021; methods/part1.md section 5; official code
``CVIR/CoMix`` ``core/adapt.py``, which this follows where the paper is loose).

One video encoder ``f`` and a linear classifier ``h`` (logits ``l = h(f(x))``), trained on
labelled source videos and unlabelled target videos with

    L = CE_ls(l(x_s), y_s) + lambda_bgm [L_bgm(src) + L_bgm(tgt)] + lambda_tpl L_tpl(tgt).

- **Speeds (Sec. 3.1):** the *fast* view is the whole clip (T frames); the *slow* view keeps one
  random frame of each of n equal chunks, n = T * f with f drawn from {1/4, 1/2, 3/4} per step
  (the code's n in {4, 8, 12} of 16 clips), the same frames for the whole batch.
- **Background mixing (Sec. 3.3):** ``x~ = (1 - gamma) x + gamma b``, ``b`` the temporal median
  frame of a video of the *other* domain (the one at the same batch position), one
  ``gamma ~ U(0, gamma_max)`` per step (code: ``np.random.uniform(0, max_gamma)``).
- **L_bgm (Eq. 5):** SupCon (modules/losses/supcon.py, tau 0.5) over four views of each video,
  {fast, slow, mixed fast, mixed slow}, positives the same video (3 per anchor), per domain.
- **L_tpl (Eq. 6):** pseudo-labels ``argmax softmax((l_fast + l_slow) / 2)`` (no gradient),
  kept where the top probability is >= ``threshold``; SupCon over the {fast, slow} views of the
  kept target videos with the pseudo-labels as classes.
- SupCon's features are ``softmax(l)``, not L2-normalised, and its loss carries the SupCon
  code's ``temperature / base_temperature`` = 0.5 / 0.07 factor (``core/losses.py``); the
  paper's text suggests normalised features (the ⚠ of the spec): the code was followed.

Loss terms: ``ce``, ``bgm`` (source + target), ``tpl``, and ``pseudo_ce`` (the code's
``pseudo_cls_loss``: CE on the confident target pseudo-labels, averaged over all target videos;
computed there but left out of the loss, weight 0 here). The baselines are loss weights:
source-only ``{ce: 1, bgm: 0, tpl: 0}``, plain pseudo-labelling ``{ce: 1, bgm: 0, tpl: 0,
pseudo_ce: 1}``. Adaptation terms are switched off for the first ``warm_start_steps`` (the
code's source-only warm start, 4 k of 14 k iterations).

Scoped down: I3D + GCN over 16 clip nodes become the platform's frames tower (a per-frame CNN
and a temporal transformer over T frames, read in order); the slow view is a subset of frames,
not of I3D clip features; the background is the median of the (unaugmented) clip tensor, in
the step rather than pre-computed; defaults are the Jester setting (lambda_bgm = lambda_tpl =
0.1: its classes, like ours, are motion directions), label smoothing 0.1, threshold 0.7.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig
from modules.losses.contrastive import local_ids
from modules.losses.supcon import supcon_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput

#: the views of each domain: name suffix -> (mixed with the other domain's background, slow)
VIEWS = {
    "": (False, False),
    "@slow": (False, True),
    "@mix": (True, False),
    "@mixslow": (True, True),
}


@dataclass
class CoMixConfig(MethodConfig):
    """``task``: the label the classifier predicts (``label/<task>``); ``target_key``: the
    batch entry of the unlabelled target clips."""

    name: str = "comix"
    task: str = "action"
    target_key: str = "target_video"
    temperature: float = 0.5  # SupCon tau of L_bgm and L_tpl
    base_temperature: float = 0.07  # SupCon code's base_temperature (loss x tau / base)
    threshold: float = 0.7  # pseudo-label confidence
    gamma_max: float = 0.5  # background mixing ratio ~ U(0, gamma_max)
    slow_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    random_slow: bool = True  # a random frame per chunk (False: the chunk's middle frame)
    label_smoothing: float = 0.1
    warm_start_steps: int = 0
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"ce": 1.0, "bgm": 0.1, "tpl": 0.1, "pseudo_ce": 0.0}
    )

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.base_temperature <= 0:
            raise ValueError("temperature: temperature and base_temperature must be positive")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.gamma_max <= 1.0:
            raise ValueError(f"gamma_max: must be in [0, 1], got {self.gamma_max}")
        if not self.slow_fractions or not all(0 < f <= 1 for f in self.slow_fractions):
            raise ValueError(f"slow_fractions: need values in (0, 1], got {self.slow_fractions}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.warm_start_steps < 0:
            raise ValueError(f"warm_start_steps: must be >= 0, got {self.warm_start_steps}")


def slow_frames(num_frames: int, chunks: int, random: bool) -> Tensor:
    """Frame indices of the slow view: one per chunk of ``np.array_split(range(T), n)``, a
    random one (``random``) or the chunk's middle one."""
    bounds = torch.linspace(0, num_frames, chunks + 1).round().long()
    starts, sizes = bounds[:-1], (bounds[1:] - bounds[:-1]).clamp_min(1)
    offsets = (torch.rand(chunks) * sizes).long() if random else sizes // 2
    return (starts + offsets).clamp_max(num_frames - 1)


def background_mix(clip: Tensor, background: Tensor, gamma: float) -> Tensor:
    """``(1 - gamma) clip + gamma background``: clip [B, T, C, H, W], background [B, C, H, W]
    (broadcast over time)."""
    return (1.0 - gamma) * clip + gamma * background[:, None]


@METHODS.register("comix", CoMixConfig)
class CoMix(AlignmentModule):
    """Video classifier adapted to an unlabelled target domain by temporal contrast (fast vs
    slow), background mixing and pseudo-label contrast (see the module docstring)."""

    loss_terms = ("ce", "bgm", "tpl", "pseudo_ce")
    num_encoders = 1
    loss_on_eval = False  # evaluation batches carry no target clips
    deterministic_overrides = {"gamma_max": 0.0, "slow_fractions": [0.5], "random_slow": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: CoMixConfig = self.method_cfg
        if cfg.task not in self.labels:
            raise ValueError(f"method.task: {cfg.task!r} is not a data label ({list(self.labels)})")
        self.video = self.modalities[0]
        self.classifier = nn.Linear(self.hparams["model"]["embed_dim"], self.labels[cfg.task])

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Training: the four views (fast, slow, mixed fast, mixed slow) of the source clips
        (``video``, ``video@slow``, ...) and of the target clips (``target``, ``target@slow``,
        ...); evaluation: the clip alone."""
        if not self.training:
            return super().encode(batch)
        cfg: CoMixConfig = self.method_cfg
        tower = self.towers[self.video]
        clips = {self.video: batch["video"], "target": batch[cfg.target_key]}
        backgrounds = {name: clip.median(dim=1).values for name, clip in clips.items()}
        other = {self.video: backgrounds["target"], "target": backgrounds[self.video]}
        gamma = float(torch.rand(()) * cfg.gamma_max)
        num_frames = batch["video"].shape[1]
        fraction = cfg.slow_fractions[int(torch.randint(len(cfg.slow_fractions), ()))]
        slow = slow_frames(num_frames, max(1, round(num_frames * fraction)), cfg.random_slow)
        outputs = {}
        for name, clip in clips.items():
            for suffix, (mixed, is_slow) in VIEWS.items():
                x = background_mix(clip, other[name], gamma) if mixed else clip
                x = x[:, slow.to(x.device)] if is_slow else x
                outputs[name + suffix] = tower({tower.key: x})
        return outputs

    def logits(self, output: TowerOutput) -> Tensor:
        """Class logits of a tower output."""
        return self.classifier(self.embedding(self.video, output))

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: CoMixConfig = self.method_cfg
        logits = {name: self.logits(out) for name, out in outputs.items()}
        probs = {name: value.softmax(dim=-1) for name, value in logits.items()}
        ce = F.cross_entropy(
            logits[self.video], batch[f"label/{cfg.task}"], label_smoothing=cfg.label_smoothing
        )
        # one id per video, distinct across ranks (its position in the global batch)
        videos = local_ids(None, batch["video"].shape[0], ce.device)
        bgm = sum(
            supcon_loss(
                [probs[name + s] for s in VIEWS], videos, cfg.temperature, cfg.base_temperature
            )
            for name in (self.video, "target")
        )
        with torch.no_grad():
            fused = ((logits["target"] + logits["target@slow"]) / 2).softmax(dim=-1)
            confidence, pseudo = fused.max(dim=-1)
            confident = confidence >= cfg.threshold
        tpl = supcon_loss(
            [probs["target"], probs["target@slow"]],
            pseudo,
            cfg.temperature,
            cfg.base_temperature,
            keep=confident,
        )
        pseudo_ce = (F.cross_entropy(logits["target"], pseudo, reduction="none") * confident).mean()
        active = float(self.global_step >= cfg.warm_start_steps)
        return {"ce": ce, "bgm": bgm * active, "tpl": tpl * active, "pseudo_ce": pseudo_ce * active}

    def scalars(self, outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """The fraction of target videos with a confident pseudo-label."""
        if "target@slow" not in outputs:
            return {}
        with torch.no_grad():
            fused = (self.logits(outputs["target"]) + self.logits(outputs["target@slow"])) / 2
            confident = fused.softmax(dim=-1).max(dim=-1).values >= self.method_cfg.threshold
        return {"pseudo_label_fraction": confident.float().mean()}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Target accuracy of the classifier (``classifier`` evaluator)."""
        return {"classifier": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """``logits/video/<task>`` of the evaluation clips (the target domain)."""
        return {f"logits/{self.video}/{self.method_cfg.task}": self.logits(outputs[self.video])}
