"""Experiment configuration: YAML -> OmegaConf structured config, inheritance, overrides, checks.

A YAML file may name a parent with ``base: other.yaml`` (relative to the file); the child
overrides the parent and ``key=value`` arguments override both. Blocks that carry a ``name``
(``method``, ``data``, ``model.<modality>``) are replaced rather than merged when
the child picks a different name, so switching method never inherits the old method's keys.

Every problem is raised as one ``ConfigError`` whose message names the key path, before any
work starts: keys repeated in one YAML mapping, unknown keys, wrong types, a scalar where a
block of keys belongs, missing required values, unknown registry names, values out of range
(sizes, rates, temperatures, trainer settings this machine or Lightning cannot run) and a
tracking URI of no known scheme.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from modules.registry import DATAMODULES, METHODS, TOWERS, Registry, UnknownNameError

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the key path."""


MODALITIES = ("image", "text", "video", "audio", "depth", "corpus_a", "corpus_b")


@dataclass
class ModelConfig:
    """One tower block per modality, the shared embedding width and the temperature.

    Only the towers of the modalities the data pairs (``datamodule.modalities``) are built.
    """

    embed_dim: int = 128
    image: Any = field(default_factory=lambda: {"name": "cnn"})
    text: Any = field(default_factory=lambda: {"name": "transformer"})
    video: Any = field(default_factory=lambda: {"name": "frames"})
    audio: Any = field(default_factory=lambda: {"name": "audio_cnn"})
    depth: Any = field(default_factory=lambda: {"name": "depth_cnn"})
    # word-embedding tables, one per corpus (datamodules/word_corpora.py)
    corpus_a: Any = field(default_factory=lambda: {"name": "word_table", "key": "corpus_a"})
    corpus_b: Any = field(default_factory=lambda: {"name": "word_table", "key": "corpus_b"})
    temperature: float = 0.07
    learnable_temperature: bool = True
    max_logit_scale: float = 100.0
    # towers kept fixed (no gradient, eval mode), e.g. [image] for a locked pretrained tower
    frozen: list[str] = field(default_factory=list)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr`` (per step)."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 50
    # the warm-up lasts at most this fraction of the run's steps (a 27-step run on a small
    # dataset is not all warm-up); None: warmup_steps whatever the run's length
    max_warmup_fraction: float | None = 0.25
    min_lr_ratio: float = 0.0
    # back-propagate the contrastive batch (data.batch_size) this many samples at a time with
    # gradient caching: same gradient, activation memory of one micro-batch (None: all at once)
    micro_batch_size: int | None = None


@dataclass
class TrainerConfig:
    """The subset of ``lightning.Trainer`` arguments an experiment may set."""

    max_epochs: int = 5
    max_steps: int = -1
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    log_every_n_steps: int = 10
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    check_val_every_n_epoch: int = 1
    gradient_clip_val: float | None = None
    deterministic: bool = False
    enable_progress_bar: bool = True


@dataclass
class LoggerConfig:
    """MLflow tracking; ``tracking_uri`` None means the project's sqlite store in ``mlflow/``.

    A server URI that does not answer stops the run before training, unless
    ``fallback_to_local`` is true: then the run logs to the local store, with a warning.
    """

    tracking_uri: str | None = None
    experiment_name: str | None = None
    fallback_to_local: bool = False


@dataclass
class EvaluationConfig:
    """Which evaluators run in validation and test (callbacks/evaluators.py).

    ``evaluators``: None for the data's defaults, or a list that replaces them; the method's own
    evaluators are always added; ``exclude`` removes some; ``options.<name>`` sets an
    evaluator's options (e.g. ``options: {knn: {k: 10}}``).
    """

    evaluators: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """One experiment. With ``stages``, each stage is this config overridden by its block."""

    name: str = MISSING
    seed: int = 0
    # added to ``seed`` for this stage's random draws: a stage that must differ from another
    # one of the same experiment (two independent runs) sets an offset, never its own seed, so
    # every stage still follows the experiment's ``seed=N``
    seed_offset: int = 0
    method: Any = MISSING
    data: Any = field(default_factory=lambda: {"name": "image_text"})
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output_dir: str = "outputs"
    # start from an earlier stage or a checkpoint file: every tower and the temperature, or a
    # mapping modality -> stage/checkpoint for some towers only (the others start fresh)
    init_from: Any = None
    teacher_from: str | None = None
    # earlier stages (or checkpoints) whose trained models the method reads before training
    features_from: list[str] = field(default_factory=list)
    rerun_stages: bool = False
    # continue each unfinished stage from its last.ckpt, logging into the same MLflow run
    resume: bool = False
    # write last.ckpt every this many optimiser steps (0: never; a finished stage keeps model.ckpt)
    checkpoint_every_n_steps: int = 100
    stages: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stage:
    """A fully resolved stage: its name, validated config and plain-dict form."""

    name: str
    cfg: DictConfig
    plain: dict[str, Any]


# ----------------------------------------------------------------------------- loading


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping, at ``line`` (1-based) of its second time."""

    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"line {line}: key {key!r} appears twice")
        self.key, self.line = key, line


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping: PyYAML would keep the
    last value silently, so an edit lower in a file could undo one above it unnoticed."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor`` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports an unhashable key
            if key in seen:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(text: str) -> Any:
    """``text`` parsed as safe YAML with :class:`UniqueKeyLoader`."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)


def load_yaml_chain(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML at ``path`` merged over its ``base:`` ancestors (plain dicts)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    resolved = path.resolve()
    if resolved in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        raw = read_yaml(path.read_text()) or {}
    except DuplicateKeyError as err:
        raise ConfigError(f"{path} {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    raw.pop("benchmark", None)  # the file's own comparisons (experiments/benchmark.py), not config
    parent = raw.pop("base", None)
    if parent is None:
        return raw
    return merge(load_yaml_chain(path.parent / parent, (*_seen, resolved)), raw)


def merge(parent: Any, child: Any, _nested: bool = False) -> Any:
    """Deep-merge plain containers; a nested block with a new ``name`` replaces the old one.

    (The top level's ``name`` is the experiment's name, not a component's: it merges.)
    """
    if not (isinstance(parent, dict) and isinstance(child, dict)):
        return copy.deepcopy(child)
    if _nested and "name" in child and "name" in parent and child["name"] != parent["name"]:
        return copy.deepcopy(child)
    out = copy.deepcopy(parent)
    for key, value in child.items():
        out[key] = merge(out[key], value, True) if key in out else copy.deepcopy(value)
    return out


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``a.b=1`` arguments as a nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        try:
            parsed = read_yaml(value) if value else None
        except DuplicateKeyError as err:
            raise ConfigError(f"override {item!r}: key {err.key!r} appears twice") from None
        except yaml.YAMLError:
            parsed = value
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is already set to a value")
        node[leaf] = parsed
    return out


# ----------------------------------------------------------------------------- validation


def _expected_type(err: ValidationError) -> str:
    msg = str(err.msg)
    for marker in ("could not be converted to ", "is not a valid "):
        if marker in msg:
            return msg.split(marker, 1)[1].split()[0].lower()
    return msg.splitlines()[0]


def _block_error(path: str, value: Any, keys: list[str]) -> ConfigError:
    """The error for ``value`` given where a block of ``keys`` belongs (``method=clip``)."""
    first = "name" if "name" in keys else next(iter(keys), "<key>")
    if value is None:
        got = "null"
    else:
        got = f"the {'list' if isinstance(value, list) else 'scalar'} {value!r}"
    return ConfigError(f"{path}: expected a block of keys ({path}.{first}=..., ...), got {got}")


def _check_shapes(schema: DictConfig, raw: dict[str, Any], prefix: str) -> None:
    """Blocks and lists of ``raw`` given as single values, reported with their key path
    (OmegaConf's merge reports them naming no key: ``None: expected None, got None``)."""
    for key, value in raw.items():
        if key not in schema or OmegaConf.is_missing(schema, key):
            continue  # unknown keys and untyped required ones are reported elsewhere
        default, path = schema[key], f"{prefix}{key}"
        if isinstance(default, DictConfig) and isinstance(value, dict):
            _check_shapes(default, value, f"{path}.")
        elif isinstance(default, DictConfig):
            raise _block_error(path, value, [str(k) for k in default.keys()])
        elif isinstance(default, ListConfig) and not isinstance(value, list | None):
            raise ConfigError(f"{path}: expected a list, got {value!r}")


def _structured(schema: type, raw: Any, prefix: str) -> DictConfig:
    """``raw`` validated against dataclass ``schema``; errors name ``prefix`` + key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.')}: expected a mapping, got {raw!r}")
    defaults = OmegaConf.structured(schema)
    _check_shapes(defaults, raw, prefix)
    try:
        return OmegaConf.merge(defaults, raw)
    except ConfigKeyError as err:
        known = ", ".join(_field_names(schema, str(err.full_key)))
        raise ConfigError(f"{prefix}{err.full_key}: unknown key (known: {known})") from None
    except ValidationError as err:
        raise ConfigError(
            f"{prefix}{err.full_key}: expected {_expected_type(err)}, got {err.value!r}"
        ) from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{prefix}{err.full_key}: {str(err.msg).splitlines()[0]}") from None


def _field_names(schema: type, full_key: str) -> list[str]:
    """Field names of the (nested) dataclass that holds ``full_key``'s last part."""
    node = OmegaConf.structured(schema)
    for part in full_key.split(".")[:-1]:
        child = node.get(part) if isinstance(node, DictConfig) else None
        if not isinstance(child, DictConfig):
            break
        node = child
    return sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []


def _under(path: str, message: str) -> str:
    """``message`` from a block's own check, placed under the block's key path: a message
    that starts with a relative key (``frame.name: ...``) continues the path."""
    if message.startswith(path):
        return message
    head = message.split(":", 1)[0]
    if head and " " not in head:
        return f"{path}.{message}"
    return f"{path}: {message}"


def _registered(registry: Registry, raw: Any, path: str) -> DictConfig:
    """A named block validated against its registered config dataclass."""
    if not isinstance(raw, dict):
        raise _block_error(path, raw, ["name"])
    if "name" not in raw:
        raise ConfigError(f"{path}.name: missing required value (known: {registry.names()})")
    try:
        entry = registry.get(raw["name"])
    except UnknownNameError as err:
        raise ConfigError(f"{path}.name: {err}") from None
    cfg = _structured(entry.config, raw, f"{path}.")
    try:
        OmegaConf.to_object(cfg)  # runs the dataclass's own checks (__post_init__)
    except ValueError as err:
        message = str(err).splitlines()[0]
        raise ConfigError(_under(path, message)) from None
    return cfg


def article(word: str) -> str:
    """``word`` with its indefinite article ("an image", "a text")."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _tower(raw: Any, modality: str) -> DictConfig:
    """A ``model.<modality>`` block: its name must be a tower of that modality."""
    name = raw.get("name") if isinstance(raw, dict) else None
    fitting = [
        n
        for n in TOWERS.names()
        if modality in getattr(TOWERS.get(n).cls, "modalities", (TOWERS.get(n).cls.modality,))
    ]
    if name is not None and name not in fitting:
        known = f"{modality} towers: {', '.join(fitting)}"
        if name not in TOWERS.names():
            raise ConfigError(f"model.{modality}.name: unknown tower {name!r}; {known}")
        other = TOWERS.get(name).cls.modality
        raise ConfigError(f"model.{modality}.name: {name!r} is {article(other)} tower; {known}")
    return _registered(TOWERS, raw, f"model.{modality}")


def validate(raw: dict[str, Any]) -> DictConfig:
    """A single-stage raw dict as a validated ``ExperimentConfig`` DictConfig."""
    if "accumulate_grad_batches" in (raw.get("trainer") or {}):
        raise ConfigError(
            "trainer.accumulate_grad_batches: not supported: summed gradients of k small "
            "contrastive batches give each sample only its own batch's negatives; "
            "set optim.micro_batch_size for a big batch in small pieces"
        )
    cfg = _structured(ExperimentConfig, raw, "")
    if OmegaConf.is_missing(cfg, "method"):
        raise ConfigError("method: missing required value")
    cfg.method = _registered(METHODS, _plain(cfg.method), "method")
    cfg.data = _registered(DATAMODULES, _plain(cfg.data), "data")
    for side in MODALITIES:
        cfg.model[side] = _tower(_plain(cfg.model[side]), side)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]}: missing required value")
    if cfg.checkpoint_every_n_steps < 0:
        raise ConfigError(
            "checkpoint_every_n_steps: must be 0 (never) or positive, "
            f"got {cfg.checkpoint_every_n_steps}"
        )
    _check_init_from(cfg.init_from)
    unknown = sorted(set(cfg.model.frozen) - set(MODALITIES))
    if unknown:
        raise ConfigError(f"model.frozen: unknown modality {unknown[0]!r}; known: {MODALITIES}")
    _check_bounds(cfg)
    _check_optim(cfg)
    _check_trainer(cfg.trainer, has_init=cfg.init_from is not None)
    _check_tracking_uri(cfg.logger.tracking_uri)
    return cfg


def _plain(node: Any) -> Any:
    """A config node as plain Python containers (a scalar, e.g. ``method=clip``, as it is)."""
    return OmegaConf.to_container(node) if isinstance(node, DictConfig | ListConfig) else node


# (key, lowest allowed value, whether that value itself is allowed, why not if not obvious);
# the data block's batch sizes and workers are checked by its dataclass (datamodules/config.py)
BOUNDS: tuple[tuple[str, float, bool, str], ...] = (
    ("model.embed_dim", 0, False, ""),
    ("model.temperature", 0, False, ""),
    ("model.max_logit_scale", 0, False, ""),
    ("optim.lr", 0, False, " (a zero learning rate trains nothing)"),
    ("optim.weight_decay", 0, True, ""),
    ("optim.warmup_steps", 0, True, ""),
    ("trainer.num_nodes", 1, True, ""),
)


def _check_bounds(cfg: DictConfig) -> None:
    """Every :data:`BOUNDS` key is in its range."""
    for key, lowest, inclusive, why in BOUNDS:
        value = OmegaConf.select(cfg, key)
        if value < lowest or (value == lowest and not inclusive):
            relation = ">=" if inclusive else ">"
            note = why if value == lowest else ""
            raise ConfigError(f"{key}: must be {relation} {lowest}, got {value}{note}")


def _check_optim(cfg: DictConfig) -> None:
    """The warm-up fraction is a fraction; micro-batches split the batch evenly."""
    fraction = cfg.optim.max_warmup_fraction
    if fraction is not None and not 0 <= fraction <= 1:
        raise ConfigError(f"optim.max_warmup_fraction: must be in [0, 1], got {fraction}")
    micro = cfg.optim.micro_batch_size
    if micro is not None and (micro < 1 or cfg.data.batch_size % micro):
        raise ConfigError(
            f"optim.micro_batch_size: must be a positive divisor of data.batch_size "
            f"{cfg.data.batch_size}, got {micro}"
        )


def _check_trainer(trainer: DictConfig, has_init: bool) -> None:
    """Settings the ``lightning.Trainer`` would refuse only once the stage is built, or that
    would make it train nothing."""
    _check_accelerator(trainer.accelerator)
    _check_devices(trainer.devices, trainer.accelerator)
    _check_precision(trainer.precision)
    _check_length(trainer, has_init)


def _check_length(trainer: DictConfig, has_init: bool) -> None:
    """``max_epochs``/``max_steps``: -1 (no limit) or more; 0 only for an evaluation-only
    stage, one that starts from ``init_from`` (e.g. clip_mea.yaml's ``baseline``)."""
    for key in ("max_epochs", "max_steps"):
        value = trainer[key]
        if value < -1:
            raise ConfigError(f"trainer.{key}: must be -1 (no limit) or >= 0, got {value}")
        if value == 0 and not has_init:
            raise ConfigError(
                f"trainer.{key}: 0 trains nothing; set it >= 1, or set init_from "
                "(a stage or checkpoint) for an evaluation-only stage"
            )


def _check_devices(devices: Any, accelerator: str) -> None:
    """A positive number of devices, -1 (all), "auto" or a list of device indices; with the CPU
    accelerator only a number of processes or "auto", as Lightning's CPU accelerator takes."""
    if accelerator == "cpu":
        expected = "a positive number of processes or 'auto' (accelerator cpu has no indices)"
        fine = devices == "auto" or _count(devices)
    else:
        expected = "a positive number of devices, -1 (all), 'auto' or a list of device indices"
        fine = devices in ("auto", -1, "-1") or _count(devices) or _indices(devices)
    if not fine:
        raise ConfigError(f"trainer.devices: expected {expected}, got {_plain(devices)!r}")


def _count(value: Any) -> bool:
    """Whether ``value`` is a positive number of devices (``2`` or ``"2"``)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _indices(value: Any) -> bool:
    """Whether ``value`` lists distinct device indices (``[0, 1]``, or ``"0,1"`` / ``"0,"``)."""
    if isinstance(value, str) and re.fullmatch(r"\d+(,\d+)*,?", value) and "," in value:
        return True
    if not isinstance(value, ListConfig) or not value:
        return False
    items = list(value)
    numbers = all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items)
    return numbers and len(set(items)) == len(items)


def precisions() -> list[str]:
    """Every ``trainer.precision`` the installed Lightning accepts, as strings (the field is a
    string: ``precision=16`` arrives as ``"16"``)."""
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT  # its own list

    literals = get_args(_PRECISION_INPUT)  # a Union of Literals
    return sorted({str(value) for literal in literals for value in get_args(literal)})


def _check_precision(precision: str) -> None:
    known = precisions()
    if precision not in known:
        raise ConfigError(
            f"trainer.precision: {precision!r} is not a Lightning precision; known: "
            f"{', '.join(known)}"
        )


def _accelerator_available(name: str) -> bool | None:
    """Whether accelerator ``name`` can run on this machine (None: Lightning knows no such
    accelerator)."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    builtin = {"auto": True, "cpu": True, "cuda": cuda, "gpu": cuda or mps, "mps": mps}
    if name in builtin:
        return builtin[name]
    from lightning.pytorch.accelerators import AcceleratorRegistry

    if name not in AcceleratorRegistry:
        return None
    try:
        return bool(AcceleratorRegistry[name]["accelerator"].is_available())
    except ImportError:  # e.g. tpu without torch_xla installed
        return False


def _check_accelerator(name: str) -> None:
    available = _accelerator_available(name)
    if available is None:
        from lightning.pytorch.accelerators import AcceleratorRegistry

        known = sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()})
        raise ConfigError(f"trainer.accelerator: unknown {name!r}; known: {', '.join(known)}")
    if not available:
        raise ConfigError(
            f"trainer.accelerator: {name!r} is not available on this machine; "
            "use accelerator=cpu (or auto: the best one found)"
        )


# MLflow's tracking stores: servers, local folders and SQLAlchemy databases (``dialect+driver``)
TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def _check_tracking_uri(uri: str | None) -> None:
    """``logger.tracking_uri`` has a scheme MLflow stores runs under (a misspelt one would
    only fail once the run starts), or is an absolute path or ``databricks``."""
    if not uri:
        return
    scheme = urlsplit(uri).scheme.split("+", 1)[0].lower()
    if scheme in TRACKING_SCHEMES or (not scheme and (uri == "databricks" or uri[0] == "/")):
        return
    problem = (
        f"unknown scheme {scheme!r} in {uri!r}"
        if scheme
        else f"{uri!r} has no scheme (a relative path would change with the current directory)"
    )
    raise ConfigError(
        f"logger.tracking_uri: {problem}; expected http://, https://, file:, sqlite:///, "
        "postgresql://, mysql://, mssql://, databricks or an absolute path (null: the local store)"
    )


def _check_init_from(value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, DictConfig):
        raise ConfigError(
            f"init_from: expected a stage, a checkpoint or a mapping modality -> stage, got {value}"
        )
    for side, ref in value.items():
        if side not in MODALITIES:
            raise ConfigError(f"init_from.{side}: unknown modality; known: {MODALITIES}")
        if not isinstance(ref, str):
            raise ConfigError(f"init_from.{side}: expected a stage or checkpoint, got {ref!r}")


def references(plain: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (key, stage or checkpoint) a stage config starts from or reads, in a fixed order:
    ``init_from`` (or ``init_from.<modality>``), ``teacher_from``, ``features_from[i]``."""
    init = plain["init_from"]
    refs = (
        [(f"init_from.{side}", ref) for side, ref in sorted(init.items())]
        if isinstance(init, dict)
        else [("init_from", init)]
    )
    refs.append(("teacher_from", plain["teacher_from"]))
    refs += [(f"features_from[{i}]", ref) for i, ref in enumerate(plain["features_from"])]
    return [(key, ref) for key, ref in refs if ref is not None]


# ----------------------------------------------------------------------------- stages


def resolve_stages(raw: dict[str, Any]) -> list[Stage]:
    """The experiment's stages in order; a config without ``stages`` is one stage, ``main``."""
    stage_blocks = raw.get("stages") or {"main": {}}
    if not isinstance(stage_blocks, dict):
        raise ConfigError(
            f"stages: expected a mapping of stage name -> overrides, got {stage_blocks!r}"
        )
    shared = {k: v for k, v in raw.items() if k != "stages"}
    stages: list[Stage] = []
    for name, block in stage_blocks.items():
        block = block or {}
        if not isinstance(block, dict):
            raise ConfigError(f"stages.{name}: expected a mapping, got {block!r}")
        if "stages" in block:
            raise ConfigError(f"stages.{name}.stages: stages cannot nest")
        try:
            cfg = validate(merge(shared, block))
        except ConfigError as err:
            key = str(err).split(":", 1)[0]
            in_block = raw.get("stages") and _has_path(block, key)
            raise ConfigError(f"stages.{name}.{err}" if in_block else str(err)) from None
        earlier = [s.name for s in stages]
        plain = OmegaConf.to_container(cfg, resolve=True)
        for key, ref in references(plain):
            if ref not in earlier and not Path(ref).is_file():
                raise ConfigError(
                    f"stages.{name}.{key}: {ref!r} is neither an earlier stage {earlier} "
                    "nor a checkpoint file"
                )
        plain.pop("stages")
        stages.append(Stage(name, cfg, plain))
    return stages


def _has_path(tree: Any, dotted: str) -> bool:
    """Whether ``dotted`` (or its first part that is a leaf) is set in ``tree``."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> list[Stage]:
    """Load ``path`` with its parents and ``key=value`` overrides into resolved stages."""
    raw = merge(load_yaml_chain(path), parse_overrides(overrides or []))
    return resolve_stages(raw)


def config_hash(plain: dict[str, Any], upstream: list[str] | None = None) -> str:
    """Short hash of what determines a stage's result (not where it is logged)."""
    ignored = ("logger", "name", "rerun_stages", "output_dir", "resume", "checkpoint_every_n_steps")
    relevant = {k: v for k, v in plain.items() if k not in ignored}
    relevant["trainer"] = {
        k: v for k, v in relevant["trainer"].items() if k not in ("enable_progress_bar",)
    }
    blob = json.dumps({"config": relevant, "upstream": upstream or []}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists become one value)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name) if isinstance(value, dict) and value else {name: value})
    return out
