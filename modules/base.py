"""DualTowerModule: the shared base of every method.

It owns the towers (an ``nn.ModuleDict`` keyed by modality), the temperature, an optional frozen
teacher, the optimiser and schedule, and the train/validation/test steps. A method subclass only
says which loss terms it computes (``losses``); the base weights them with
``method.loss_weights``, sums them and logs every term.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (before lightning)

import copy
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from modules.distributed import all_ranks
from modules.grad_cache import cached_backward
from modules.registry import METHODS, TOWERS, as_dataclass
from modules.towers import TowerContext, build_tower
from modules.towers.output import TowerOutput
from modules.towers.tokenizer import WordTokenizer


@dataclass
class MethodConfig:
    """Fields every method has; subclasses add the paper's hyper-parameters."""

    name: str = "clip"
    loss_weights: dict[str, float] = field(default_factory=dict)


def load_checkpoint(path: str) -> dict[str, Any]:
    """A Lightning checkpoint read safely (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_module(path: str) -> DualTowerModule:
    """The trained method of a checkpoint, rebuilt with its config and tokenizer, in eval mode."""
    return module_from_checkpoint(load_checkpoint(path))


def module_from_checkpoint(checkpoint: dict[str, Any]) -> DualTowerModule:
    """:func:`load_module` for a checkpoint already read with :func:`load_checkpoint`."""
    hparams = checkpoint["hyper_parameters"]
    module = METHODS.get(hparams["method"]["name"]).cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return module.eval()


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss term became NaN or infinite."""


class DualTowerModule(L.LightningModule):
    """Towers keyed by modality + learnable temperature + optional frozen teacher.

    Subclasses set ``loss_terms`` (the names ``losses`` returns) and implement ``losses``.
    ``requires_teacher`` methods get a frozen copy of the towers, filled by ``set_teacher``.
    """

    loss_terms: ClassVar[tuple[str, ...]] = ()
    requires_teacher: ClassVar[bool] = False

    def __init__(
        self,
        method: dict[str, Any],
        model: dict[str, Any],
        optim: dict[str, Any],
        vocab: list[str],
        context: dict[str, Any],
    ) -> None:
        """``context``: ``modalities`` (the pair the data provides, item side first) and the
        input facts of :class:`~modules.towers.TowerContext` (``datamodule.tower_context()``)."""
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.method_cfg = as_dataclass(METHODS.get(method["name"]).config, method)
        self.optim_cfg = optim
        unknown = set(self.method_cfg.loss_weights) - set(self.loss_terms)
        if unknown:
            raise ValueError(
                f"method.loss_weights: unknown term(s) {sorted(unknown)}; "
                f"{method['name']} computes {list(self.loss_terms)}"
            )
        self.modalities = tuple(context["modalities"])
        if len(set(self.modalities)) < 2:
            raise ValueError(f"need at least two distinct modalities, got {self.modalities}")
        inputs = TowerContext(
            vocab_size=len(vocab), **{k: v for k, v in context.items() if k != "modalities"}
        )
        self.tokenizer = WordTokenizer(vocab, max_len=inputs.max_text_len)
        self.towers = nn.ModuleDict(
            {
                side: build_tower(
                    as_dataclass(TOWERS.get(model[side]["name"]).config, model[side]),
                    model["embed_dim"],
                    inputs,
                )
                for side in self.modalities
            }
        )
        # Stored as log(1/T) (CLIP); clamped to [0, ln max_logit_scale] after each step.
        self.max_log_scale = math.log(model["max_logit_scale"])
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / model["temperature"])),
            requires_grad=model["learnable_temperature"],
        )
        # optim.micro_batch_size: gradient caching (modules/grad_cache.py) in manual optimisation
        self.micro_batch_size: int | None = optim.get("micro_batch_size")
        self.automatic_optimization = self.micro_batch_size is None
        #: Norm clipping applied by the manual step (Lightning's own clipping is automatic-only).
        self.gradient_clip_val: float | None = None
        #: Towers kept fixed (``model.frozen``): no gradient, always in eval mode.
        self.frozen = tuple(model.get("frozen") or ())
        unknown_frozen = set(self.frozen) - set(self.modalities)
        if unknown_frozen:
            raise ValueError(
                f"model.frozen: {sorted(unknown_frozen)} not among this data's towers "
                f"{list(self.modalities)}"
            )
        for side in self.frozen:
            self.towers[side].requires_grad_(False).eval()
        self.teacher: nn.ModuleDict | None = None
        if self.requires_teacher:
            self.teacher = copy.deepcopy(self.towers).requires_grad_(False).eval()

    # ------------------------------------------------------------------ encoding

    @staticmethod
    def encode_with(towers: nn.ModuleDict, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Every tower of ``towers`` applied to ``batch``, keyed by modality."""
        return {side: tower(batch) for side, tower in towers.items()}

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The student towers' outputs for ``batch``."""
        return self.encode_with(self.towers, batch)

    @torch.no_grad()
    def encode_teacher(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The frozen teacher's outputs (no gradient)."""
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} has no teacher; set teacher_from")
        return self.encode_with(self.teacher, batch)

    def embedding(self, side: str, output: TowerOutput) -> torch.Tensor:
        """The (unnormalised) embedding of ``side`` that the method compares and that every
        metric reads: the tower's pooled projection, unless a method maps it further (FDT's
        codebook mixture, an alignment head)."""
        return output.pooled

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings of raw strings (zero-shot prompts)."""
        if "text" not in self.towers:
            raise RuntimeError(f"{type(self).__name__} has no text tower ({self.modalities})")
        ids, mask = self.tokenizer.encode(texts)
        out = self.towers["text"](
            {"text_ids": ids.to(self.device), "text_mask": mask.to(self.device)}
        )
        return F.normalize(self.embedding("text", out), dim=-1)

    @torch.no_grad()
    def encode_input(self, batch: dict[str, Any], modality: str, key: str) -> torch.Tensor:
        """L2-normalised embeddings of ``batch[key]`` through the ``modality`` tower, e.g. a
        time-shifted clip (``video_shifted``) through the video tower."""
        tower = self.towers[modality]
        return F.normalize(self.embedding(modality, tower({tower.key: batch[key]})), dim=-1)

    @property
    def scale(self) -> torch.Tensor:
        """The logit scale 1/T (exp of the stored parameter)."""
        return self.logit_scale.exp()

    # ------------------------------------------------------------------ teacher / init

    def load_student_weights(
        self, state_dict: dict[str, torch.Tensor], sides: tuple[str, ...] | None = None
    ) -> None:
        """Initialise towers and temperature from a checkpoint's ``state_dict``; with ``sides``,
        only those towers (the temperature then keeps its configured value)."""
        prefixes = tuple(f"towers.{side}." for side in sides or self.modalities)
        own = {
            k: v
            for k, v in state_dict.items()
            if k.startswith(prefixes) or (sides is None and k == "logit_scale")
        }
        self.load_state_dict(own, strict=False)
        missing = [k for k in self.state_dict() if k.startswith(prefixes) and k not in own]
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} tower weights, e.g. {missing[0]}")

    def prepare_fit(
        self, datamodule: L.LightningDataModule, earlier: list[DualTowerModule]
    ) -> None:
        """Before training: read the trained models of ``features_from`` (earlier stages).
        Only methods that use them (MCL's clusters) override this."""
        if earlier:
            raise ValueError(
                f"features_from: method {self.method_cfg.name} does not read earlier stages"
            )

    def set_teacher(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Freeze the towers of a checkpoint's ``state_dict`` as the teacher."""
        if self.teacher is None:
            self.teacher = copy.deepcopy(self.towers)
        towers = {
            k.removeprefix("towers."): v for k, v in state_dict.items() if k.startswith("towers.")
        }
        self.teacher.load_state_dict(towers, strict=True)
        self.teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> DualTowerModule:
        """Switch modes but keep the teacher and the frozen towers in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        for side in self.frozen:
            self.towers[side].eval()
        return self

    # ------------------------------------------------------------------ losses

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        """The method's loss terms, by name (see ``loss_terms``)."""
        raise NotImplementedError

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of terms (weight 1 unless ``method.loss_weights`` says otherwise).

        Terms with weight 0 are still computed and logged but left out of the sum.
        """
        weights = self.method_cfg.loss_weights
        active = [
            weights.get(name, 1.0) * value
            for name, value in terms.items()
            if weights.get(name, 1.0)
        ]
        if not active:
            raise ValueError("method.loss_weights: every loss term has weight 0")
        return torch.stack(active).sum()

    def _step(
        self, batch: dict[str, Any], split: str
    ) -> tuple[torch.Tensor, dict[str, TowerOutput]]:
        outputs = self.encode(batch)
        terms = self.losses(batch, outputs)
        loss = self.total_loss(terms)
        self._log_losses(terms, loss, split, len(batch["index"]))
        return loss, outputs

    def _log_losses(
        self, terms: dict[str, torch.Tensor], loss: torch.Tensor, split: str, size: int
    ) -> None:
        on_step = split == "train"
        logged = {f"{split}/loss/{name}": value.detach() for name, value in terms.items()}
        logged[f"{split}/loss"] = loss.detach()
        self.log_dict(
            logged, on_step=on_step, on_epoch=not on_step, batch_size=size, sync_dist=not on_step
        )
        if on_step:  # the total on the progress bar too (not logged twice)
            self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=size)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.automatic_optimization:
            outputs = self.encode(batch)
            terms = self.losses(batch, outputs)
            self._stop_if_not_finite(terms)
            loss = self.total_loss(terms)
            self._log_losses(terms, loss, "train", len(batch["index"]))
        else:
            loss = self._cached_training_step(batch)
        self.log("train/logit_scale", self.scale.detach(), on_step=True, on_epoch=False)
        return loss

    def _cached_training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One optimiser step on the whole contrastive batch, back-propagated one micro-batch
        at a time (gradient caching); same gradient as the automatic step."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        terms: dict[str, torch.Tensor] = {}

        def batch_loss(outputs: dict[str, TowerOutput]) -> torch.Tensor:
            terms.update(self.losses(batch, outputs))
            return self.total_loss(terms)

        # DDP: let only the last pass all-reduce (averaging is linear, so any pass that does
        # sync early still gives the same result)
        no_sync = getattr(self.trainer.strategy.model, "no_sync", nullcontext)

        def backward(surrogate: torch.Tensor, last: bool) -> None:
            with nullcontext() if last else no_sync():
                self.manual_backward(surrogate)

        params = [p for p in self.parameters() if p.requires_grad]
        loss = cached_backward(
            self.encode, batch_loss, params, batch, self.micro_batch_size, backward
        )
        self._stop_if_not_finite(terms)
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val)
        optimizer.step()
        self.lr_schedulers().step()
        self._clamp_temperature()
        self._log_losses(
            {k: v.detach() for k, v in terms.items()}, loss, "train", len(batch["index"])
        )
        return loss

    def _stop_if_not_finite(self, terms: dict[str, torch.Tensor]) -> None:
        """Before the update: if a loss term is NaN/inf on any rank, save the weights (the last
        good state) to ``<stage dir>/last-good.ckpt`` and stop with the term and the step."""
        values = torch.stack([value.detach().float() for value in terms.values()])
        finite = torch.isfinite(values)
        if all_ranks(bool(finite.all())):
            return
        path = Path(self.trainer.default_root_dir) / "last-good.ckpt"
        self.trainer.save_checkpoint(str(path))
        names = list(terms)
        bad = (
            ", ".join(
                f"train/loss/{names[i]} = {values[i].item()}"
                for i in range(len(names))
                if not finite[i]
            )
            or "a loss term on another rank"
        )
        raise NonFiniteLossError(
            f"{bad} at step {self.global_step} (epoch {self.current_epoch}): training stopped "
            f"before the update; the last good state is in {path}"
        )

    def _eval_step(self, batch: dict[str, Any], split: str) -> dict[str, Any]:
        """What the metric callbacks read: the pair's embeddings (``item`` side, e.g. image,
        and ``caption`` side, e.g. text) L2-normalised and raw, with ids and labels."""
        _, outputs = self._step(batch, split)
        item, caption = (self.embedding(side, outputs[side]) for side in self.modalities[:2])
        return {
            "item": F.normalize(item, dim=-1),
            "caption": F.normalize(caption, dim=-1),
            "raw": {"item": item, "caption": caption},
            "item_id": batch["item_id"],
            "index": batch["index"],
            "labels": {
                k.removeprefix("label/"): v for k, v in batch.items() if k.startswith("label/")
            },
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test")

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW; no weight decay on the temperature, norms and biases (ndim < 2)."""
        decay, no_decay = [], []
        for _, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 else decay).append(param)
        cfg = self.optim_cfg
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg["lr"],
            betas=tuple(cfg["betas"]),
            eps=cfg["eps"],
        )
        # The total is set in on_train_start: asking the trainer for it here would load the
        # training data before a resumed run restores the loader's position.
        self._schedule = WarmupCosine(cfg["warmup_steps"], cfg["min_lr_ratio"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_start(self) -> None:
        """Give the schedule its number of steps and set the current rate from it."""
        self._schedule.total = max(1, int(self.trainer.estimated_stepping_batches))
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for group, base in zip(
                scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True
            ):
                group["lr"] = base * self._schedule(scheduler.last_epoch)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step, then clamp log(1/T) to [0, ln max_logit_scale] (CLIP, Radford et al. 2021)."""
        super().optimizer_step(*args, **kwargs)
        self._clamp_temperature()

    @torch.no_grad()
    def _clamp_temperature(self) -> None:
        self.logit_scale.clamp_(0.0, self.max_log_scale)


class WarmupCosine:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine to ``min_ratio`` at
    ``total`` steps (None until the trainer knows it: the warm-up part needs no total)."""

    def __init__(self, warmup: int, min_ratio: float, total: int | None = None) -> None:
        self.warmup, self.min_ratio, self.total = warmup, min_ratio, total

    def __call__(self, step: int) -> float:
        total = self.total if self.total is not None else math.inf
        warmup = min(self.warmup, max(total - 1, 0))
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> WarmupCosine:
    """The schedule of ``total`` steps (see :class:`WarmupCosine`)."""
    return WarmupCosine(warmup, min_ratio, total)
