"""The shared base of every method: named encoders, temperatures, steps, optimisation.

:class:`AlignmentModule` owns any number of named encoders (an ``nn.ModuleDict`` of towers keyed
by the data's modalities: one modality seen through several views, a pair, three modalities),
the temperature, an optional frozen teacher, the optimiser and schedule, and the
train/validation/test steps. :class:`DualTowerModule` is its common case, a pair.

A method implements public hooks only (docs/new_method.md):

- ``losses(batch, outputs) -> {term: loss}``: the base weights them with
  ``method.loss_weights``, sums them and logs every term;
- ``embedding(name, output)``: what the loss and every evaluator compare;
- ``encode(batch)``: which encoders run on which batch entries (default: every encoder on its
  input and on its views ``<key>@<v>``, returned as ``<name>@<v>``);
- ``scalars(outputs)``: extra values to log;
- ``evaluators()``: evaluations the method needs beyond the data's defaults, by name;
- ``eval_outputs(batch, outputs)``: extra tensors for those evaluators (predictions, logits);
- ``prepare_fit(ctx)``: before training, with a narrow :class:`FitContext`;
- ``lr_multipliers()``: parameters trained at a multiple of ``optim.lr`` (class proxies).

Temperatures are :class:`Temperature` modules that clamp themselves after every step.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (before lightning)

import copy
import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.distributed import all_ranks
from modules.grad_cache import cached_backward
from modules.registry import METHODS, TOWERS, as_dataclass
from modules.towers import TowerContext, build_tokenizer, build_tower
from modules.towers.output import TowerOutput


@dataclass
class MethodConfig:
    """Fields every method has; subclasses add the paper's hyper-parameters."""

    name: str = "clip"
    loss_weights: dict[str, float] = field(default_factory=dict)


def load_checkpoint(path: str, map_location: Any = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint read safely (tensors and plain containers only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_module(path: str) -> AlignmentModule:
    """The trained method of a checkpoint, rebuilt with its config and tokenizer, in eval mode."""
    return module_from_checkpoint(load_checkpoint(path))


def module_from_checkpoint(checkpoint: dict[str, Any]) -> AlignmentModule:
    """:func:`load_module` for a checkpoint already read with :func:`load_checkpoint`."""
    hparams = checkpoint["hyper_parameters"]
    module = METHODS.get(hparams["method"]["name"]).cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return module.eval()


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss term became NaN or infinite."""


class Temperature(nn.Module):
    """A learnable (or fixed) temperature stored as log(1/T) (CLIP), kept in
    [1/max_scale, max_temperature] by :meth:`clamp_`, which the base calls after every
    optimiser step for every ``Temperature`` of the method."""

    def __init__(
        self,
        temperature: float,
        learnable: bool = True,
        max_scale: float = 100.0,
        max_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 < temperature:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.min_log, self.max_log = math.log(1.0 / max_temperature), math.log(max_scale)
        if self.min_log > self.max_log:
            raise ValueError(
                f"max_temperature {max_temperature} is below 1 / max_scale {1 / max_scale}"
            )
        self.log_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable
        )
        self.clamp_()  # a start outside the range is clamped before the first step

    @property
    def scale(self) -> torch.Tensor:
        """The logit scale 1/T."""
        return self.log_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_scale.clamp_(self.min_log, self.max_log)


@dataclass
class FitContext:
    """What a method may read before training (``prepare_fit``), and nothing more.

    - ``earlier``: the trained models of ``features_from`` (earlier stages), in order;
    - ``num_items``: training items (images, clips, ...);
    - ``loader(indices)``: the training items in order (``indices``: a subset), un-shuffled and
      not sharded, e.g. to embed the whole training set on every rank;
    - ``group_batches(groups)``: draw training batches within groups of items (``groups[i]``:
      the group of item ``i``; None: random batches);
    - ``log_metrics`` / ``log_text``: values and text files the run logs when training starts.
    """

    earlier: list[AlignmentModule]
    num_items: int
    loader: Callable[[Iterable[int] | None], Iterable[dict[str, Any]]]
    group_batches: Callable[[np.ndarray | None], None]
    metrics: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def log_metrics(self, values: dict[str, float]) -> None:
        self.metrics.update(values)

    def log_text(self, name: str, text: str) -> None:
        self.texts[name] = text


def view_name(name: str, view: int) -> str:
    """The key of view ``view`` of ``name`` in batches and encoder outputs: ``image@1``."""
    return f"{name}@{view}"


def input_key(tower: nn.Module) -> str:
    """The batch entry a tower reads (text towers read ``text_ids`` / ``text_mask``)."""
    return getattr(tower, "key", "text")


def tower_input(tower: nn.Module, batch: dict[str, Any], key: str) -> dict[str, Any] | None:
    """What ``tower`` reads to encode ``batch[key]`` (e.g. a view ``image@1``; for a text
    tower the tokens ``<key>_ids`` / ``<key>_mask``), None if the batch lacks it."""
    if input_key(tower) == "text":
        if f"{key}_ids" not in batch:
            return None
        return {"text_ids": batch[f"{key}_ids"], "text_mask": batch[f"{key}_mask"]}
    return {input_key(tower): batch[key]} if key in batch else None


class AlignmentModule(L.LightningModule):
    """Named encoders + learnable temperature + optional frozen teacher (see the module
    docstring for the hooks a method implements).

    Subclasses set ``loss_terms`` (the names ``losses`` returns) and implement ``losses``.
    ``requires_teacher`` methods get a frozen copy of the towers, filled by ``set_teacher``.
    ``loss_on_eval``: whether validation/test batches also compute the loss (``val/loss``);
    methods trained on views the evaluation batches do not carry turn it off.
    """

    loss_terms: ClassVar[tuple[str, ...]] = ()
    requires_teacher: ClassVar[bool] = False
    loss_on_eval: ClassVar[bool] = True
    #: How many encoders the method needs (None: any number).
    num_encoders: ClassVar[int | None] = None
    #: ``method.*`` overrides that remove the loss's random draws (views, noise), for checks
    #: that compare two runs of a step bit for bit (tests/conformance/test_methods.py); keys
    #: starting with ``model.`` override the model block (a tower's dropout: SimCSE's views).
    deterministic_overrides: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        method: dict[str, Any],
        model: dict[str, Any],
        optim: dict[str, Any],
        tokenizer: dict[str, Any] | None,
        context: dict[str, Any],
    ) -> None:
        """``tokenizer``: the text encoder's tokenizer state (``tokenizer.state()``; None
        without a text encoder); ``context``:
        ``modalities`` (the data's encoders, in order), ``views`` (modality -> views per
        training sample), ``labels`` (task -> classes), ``class_names`` (task -> names),
        ``label_descriptions`` (task -> a description per class, optional) and the input
        facts of :class:`~modules.towers.TowerContext`."""
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
        if not self.modalities or len(set(self.modalities)) < len(self.modalities):
            raise ValueError(f"need distinct encoder names, got {self.modalities}")
        if self.num_encoders is not None and len(self.modalities) != self.num_encoders:
            raise ValueError(
                f"method {method['name']} needs {self.num_encoders} encoders; the data has "
                f"{list(self.modalities)}"
            )
        #: Training views per modality (``image@0``, ``image@1``, ...).
        self.views: dict[str, int] = dict(context.get("views") or {})
        #: The data's class labels (task -> number of classes) and their names.
        self.labels: dict[str, int] = dict(context.get("labels") or {})
        self.class_names: dict[str, list[str]] = dict(context.get("class_names") or {})
        #: A sentence describing each class (task -> texts, label-id order), where the data has one.
        self.label_descriptions: dict[str, list[str]] = dict(
            context.get("label_descriptions") or {}
        )
        facts = {
            k: v
            for k, v in context.items()
            if k not in ("modalities", "views", "labels", "class_names", "label_descriptions")
        }
        max_text_len = facts.get("max_text_len", TowerContext.max_text_len)
        #: The text encoder's tokenizer (None without one), rebuilt from its saved state.
        self.tokenizer = (
            build_tokenizer(model["text"], None, max_text_len, state=tokenizer)
            if "text" in self.modalities and tokenizer is not None
            else None
        )
        vocab_size = self.tokenizer.vocab_size if self.tokenizer is not None else 0
        inputs = TowerContext(vocab_size=vocab_size, **facts)
        self.towers = nn.ModuleDict(
            {
                name: build_tower(
                    as_dataclass(TOWERS.get(model[name]["name"]).config, model[name]),
                    model["embed_dim"],
                    inputs,
                )
                for name in self.modalities
            }
        )
        # Stored as log(1/T) (CLIP); clamped to [0, ln max_logit_scale] after each step.
        self.temperature = Temperature(
            model["temperature"], model["learnable_temperature"], model["max_logit_scale"]
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
        for name in self.frozen:
            self.towers[name].requires_grad_(False).eval()
        self.teacher: nn.ModuleDict | None = None
        if self.requires_teacher:
            self.teacher = copy.deepcopy(self.towers).requires_grad_(False).eval()
        #: What ``prepare_fit`` asked to log when training starts (metrics, text files).
        self.fit_log: FitContext | None = None

    # ------------------------------------------------------------------ hooks (public)

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Every encoder on its input and on each of its views in ``batch`` (``image`` and
        ``image@0``, ``image@1``, ... -> outputs ``image``, ``image@0``, ...)."""
        return self.encode_with(self.towers, batch)

    def embedding(self, name: str, output: TowerOutput) -> torch.Tensor:
        """The (unnormalised) embedding of encoder ``name`` that the method compares and that
        every evaluator reads: the tower's pooled projection, unless a method maps it further
        (FDT's codebook mixture, an alignment head)."""
        return output.pooled

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        """The method's loss terms, by name (see ``loss_terms``)."""
        raise NotImplementedError

    def scalars(self, outputs: dict[str, TowerOutput]) -> dict[str, torch.Tensor]:
        """Extra values to log with each step's losses (``<split>/<name>``); none by default."""
        return {}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Evaluations the method needs beyond the data's defaults: name -> options
        (callbacks/evaluators.py lists them); none by default."""
        return {}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        """Extra tensors the method's evaluators read (e.g. ``logits/<task>``,
        ``prediction/<target>``); none by default."""
        return {}

    def prepare_fit(self, ctx: FitContext) -> None:
        """Before training: read the earlier stages' models (``ctx.earlier``), embed the
        training set, request batch groups. Only methods that need it override this."""
        if ctx.earlier:
            raise ValueError(
                f"features_from: method {self.method_cfg.name} does not read earlier stages"
            )

    def lr_multipliers(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter name (as ``named_parameters`` spells it, or a
        module prefix of it, e.g. ``class_weights``): those trainable parameters get
        ``optim.lr * multiplier`` in groups of their own, on the same schedule (warm-up and
        cosine scale every group alike). None by default; a name that matches no trainable
        parameter is an error."""
        return {}

    # ------------------------------------------------------------------ encoding helpers

    def encode_with(self, towers: nn.ModuleDict, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Every tower of ``towers`` on its input and views present in ``batch``."""
        outputs: dict[str, TowerOutput] = {}
        for name, tower in towers.items():
            key = input_key(tower)
            if key in batch or f"{key}_ids" in batch:
                outputs[name] = tower(batch)
            for v in range(self.views.get(name, 0)):
                inputs = tower_input(tower, batch, view_name(key, v))
                if inputs is not None:
                    outputs[view_name(name, v)] = tower(inputs)
        return outputs

    @torch.no_grad()
    def encode_teacher(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The frozen teacher's outputs (no gradient)."""
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} has no teacher; set teacher_from")
        return self.encode_with(self.teacher, batch)

    def normalized(self, name: str, output: TowerOutput) -> torch.Tensor:
        """L2-normalised ``embedding(name, output)``."""
        return F.normalize(self.embedding(name, output), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings of raw strings (zero-shot prompts)."""
        if "text" not in self.towers or self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__} has no text encoder ({self.modalities})")
        ids, mask = self.tokenizer.encode(texts)
        out = self.towers["text"](
            {"text_ids": ids.to(self.device), "text_mask": mask.to(self.device)}
        )
        return self.normalized("text", out)

    @torch.no_grad()
    def encode_input(self, batch: dict[str, Any], modality: str, key: str) -> torch.Tensor:
        """L2-normalised embeddings of ``batch[key]`` through the ``modality`` encoder, e.g. a
        time-shifted clip (``video_shifted``) through the video tower, or a second sentence
        (``text@1``: its tokens ``text@1_ids`` / ``text@1_mask``) through the text tower."""
        tower = self.towers[modality]
        inputs = tower_input(tower, batch, key)
        if inputs is None:
            raise KeyError(f"batch has no {key!r} for the {modality} encoder")
        return self.normalized(modality, tower(inputs))

    @property
    def scale(self) -> torch.Tensor:
        """The logit scale 1/T of the main temperature."""
        return self.temperature.scale

    # ------------------------------------------------------------------ teacher / init

    def load_student_weights(
        self, state_dict: dict[str, torch.Tensor], sides: tuple[str, ...] | None = None
    ) -> None:
        """Initialise towers and temperature from a checkpoint's ``state_dict``; with ``sides``,
        only those towers. A fixed temperature (``model.learnable_temperature: false``) is the
        stage's own and keeps its configured value (e.g. CUAXU's tau = 0.01 when fine-tuning a
        CLIP that learned another); a learnable one continues from the checkpoint's."""
        prefixes = tuple(f"towers.{side}." for side in sides or self.modalities)
        continued = sides is None and self.hparams["model"]["learnable_temperature"]
        own = {
            k: v
            for k, v in state_dict.items()
            if k.startswith(prefixes) or (continued and k == "temperature.log_scale")
        }
        self.load_state_dict(own, strict=False)
        missing = [k for k in self.state_dict() if k.startswith(prefixes) and k not in own]
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} tower weights, e.g. {missing[0]}")

    def set_teacher(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Freeze the towers of a checkpoint's ``state_dict`` as the teacher."""
        if self.teacher is None:
            self.teacher = copy.deepcopy(self.towers)
        towers = {
            k.removeprefix("towers."): v for k, v in state_dict.items() if k.startswith("towers.")
        }
        self.teacher.load_state_dict(towers, strict=True)
        self.teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> AlignmentModule:
        """Switch modes but keep the teacher and the frozen towers in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        for name in self.frozen:
            self.towers[name].eval()
        return self

    # ------------------------------------------------------------------ steps

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

    def _log_step(
        self,
        terms: dict[str, torch.Tensor],
        loss: torch.Tensor,
        outputs: dict[str, TowerOutput],
        split: str,
        size: int,
    ) -> None:
        on_step = split == "train"
        logged = {f"{split}/loss/{name}": value.detach() for name, value in terms.items()}
        logged[f"{split}/loss"] = loss.detach()
        logged |= {f"{split}/{k}": v.detach() for k, v in self.scalars(outputs).items()}
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
        else:
            loss, terms, outputs = self._cached_training_step(batch)
        self._log_step(terms, loss, outputs, "train", len(batch["index"]))
        self.log("train/logit_scale", self.scale.detach(), on_step=True, on_epoch=False)
        return loss

    def _cached_training_step(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, TowerOutput]]:
        """One optimiser step on the whole contrastive batch, back-propagated one micro-batch
        at a time (gradient caching); same gradient as the automatic step."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        terms: dict[str, torch.Tensor] = {}
        seen: dict[str, TowerOutput] = {}

        def batch_loss(outputs: dict[str, TowerOutput]) -> torch.Tensor:
            seen.update(outputs)
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
        self._clamp_temperatures()
        return loss, {k: v.detach() for k, v in terms.items()}, seen

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
        """What the evaluators read: every encoder's embedding L2-normalised and raw, the
        sample ids, labels and targets, and the method's ``eval_outputs``."""
        outputs = self.encode(batch)
        if self.loss_on_eval:
            terms = self.losses(batch, outputs)
            self._log_step(terms, self.total_loss(terms), outputs, split, len(batch["index"]))
        # the encoders' embeddings, and those of views the evaluation batch carries (an STS
        # pair's second sentence ``text@1``)
        names = [n for n in outputs if n.partition("@")[0] in self.modalities]
        raw = {name: self.embedding(name, outputs[name]) for name in names}
        return {
            "embeddings": {name: F.normalize(value, dim=-1) for name, value in raw.items()},
            "raw": raw,
            "item_id": batch["item_id"],
            "index": batch["index"],
            "labels": {
                k.removeprefix("label/"): v for k, v in batch.items() if k.startswith("label/")
            },
            "targets": {
                k.removeprefix("target/"): v for k, v in batch.items() if k.startswith("target/")
            },
            "outputs": self.eval_outputs(batch, outputs),
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test")

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW; no weight decay on the temperature, norms and biases (ndim < 2); the
        parameters of ``lr_multipliers`` in extra groups at their own rate."""
        cfg = self.optim_cfg
        optimizer = torch.optim.AdamW(
            self._param_groups(cfg["lr"], cfg["weight_decay"]),
            lr=cfg["lr"],
            betas=tuple(cfg["betas"]),
            eps=cfg["eps"],
        )
        # The total is set in on_train_start: asking the trainer for it here would load the
        # training data before a resumed run restores the loader's position.
        self._schedule = WarmupCosine(
            cfg["warmup_steps"], cfg["min_lr_ratio"], max_fraction=cfg.get("max_warmup_fraction")
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """[decay, no decay] at ``lr``, then one group per (multiplier, decay) of
        ``lr_multipliers`` (multiplier 1: the plain groups)."""
        multipliers = self.lr_multipliers()
        decay, no_decay = [], []
        extra: dict[tuple[float, bool], list[nn.Parameter]] = {}
        used: set[str] = set()
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            key = next((k for k in multipliers if name == k or name.startswith(f"{k}.")), None)
            plain = no_decay if param.ndim < 2 else decay
            if key is None or multipliers[key] == 1.0:
                plain.append(param)
            else:
                extra.setdefault((multipliers[key], param.ndim < 2), []).append(param)
            if key is not None:
                used.add(key)
        unknown = sorted(set(multipliers) - used)
        if unknown:
            raise ValueError(f"lr_multipliers: no trainable parameter named {unknown}")
        groups: list[dict[str, Any]] = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        for (multiplier, flat), params in extra.items():
            groups.append(
                {
                    "params": params,
                    "weight_decay": 0.0 if flat else weight_decay,
                    "lr": lr * multiplier,
                    "lr_multiplier": multiplier,
                }
            )
        return groups

    def on_train_start(self) -> None:
        """Give the schedule its number of steps and set the current rate from it; log what
        ``prepare_fit`` reported."""
        self._schedule.total = max(1, int(self.trainer.estimated_stepping_batches))
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for group, base in zip(
                scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True
            ):
                group["lr"] = base * self._schedule(scheduler.last_epoch)
        if self.fit_log is not None and self.logger is not None:
            if self.fit_log.metrics:
                self.logger.log_metrics(self.fit_log.metrics, step=0)
            experiment, run_id = getattr(self.logger, "experiment", None), self.logger.run_id
            if self.trainer.is_global_zero and hasattr(experiment, "log_text") and run_id:
                for name, text in self.fit_log.texts.items():
                    experiment.log_text(run_id, text, name)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step, then clamp every temperature (CLIP, Radford et al. 2021)."""
        super().optimizer_step(*args, **kwargs)
        self._clamp_temperatures()

    def _clamp_temperatures(self) -> None:
        for module in self.modules():
            if isinstance(module, Temperature):
                module.clamp_()


class DualTowerModule(AlignmentModule):
    """The common case: a pair of encoders, ``pair = (a, b)`` = the data's two modalities,
    item side first (an image, a clip, a study) and caption side second."""

    num_encoders = 2

    @property
    def pair(self) -> tuple[str, str]:
        return self.modalities[0], self.modalities[1]


class WarmupCosine:
    """LR multiplier: linear warm-up over ``warmup`` steps (at most ``max_fraction`` of the
    run's steps, so a short run is not all warm-up), then cosine to ``min_ratio`` at ``total``
    steps (None until the trainer knows it: the warm-up part needs no total)."""

    def __init__(
        self,
        warmup: int,
        min_ratio: float,
        total: int | None = None,
        max_fraction: float | None = None,
    ) -> None:
        self.warmup, self.min_ratio, self.total = warmup, min_ratio, total
        self.max_fraction = max_fraction

    def warmup_steps(self) -> int | float:
        """The warm-up length for the current ``total``."""
        total = self.total if self.total is not None else math.inf
        warmup = min(self.warmup, max(total - 1, 0))
        if self.max_fraction is not None and total != math.inf:
            warmup = min(warmup, int(self.max_fraction * total))
        return warmup

    def __call__(self, step: int) -> float:
        total = self.total if self.total is not None else math.inf
        warmup = self.warmup_steps()
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(
    warmup: int, total: int, min_ratio: float, max_fraction: float | None = None
) -> WarmupCosine:
    """The schedule of ``total`` steps (see :class:`WarmupCosine`)."""
    return WarmupCosine(warmup, min_ratio, total, max_fraction)
