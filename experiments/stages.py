"""Run an experiment: its stages in order, each trained, validated, tested and logged.

A stage's result (final checkpoint + test metrics) is stored under
``<output_dir>/<stage>-<config hash>/`` (a relative ``output_dir`` is under the checkout, like
the MLflow store, so a run resumes from any working directory). Stages before the last are
reused from there when an identical stage (same resolved config and same upstream stages) has
finished before, unless ``rerun_stages=true``; the last stage is the experiment itself and
always runs.

Every run this creates ends FINISHED, FAILED or (SIGTERM, Ctrl+C) KILLED, whatever stops it.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (before lightning)

import getpass
import json
import logging
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from callbacks.data_health import SkippedSamples
from callbacks.evaluation import EmbeddingMetrics
from callbacks.evaluators import chosen_evaluators, monitor_of
from callbacks.plots import EmbeddingPlots
from callbacks.progress import Throughput
from experiments.checkpoints import (
    LAST,
    AtomicCheckpointIO,
    PeriodicCheckpoint,
    RunState,
    resume_identity,
    stage_lock,
)
from experiments.config import MODALITIES, REPO_ROOT, Stage, config_hash, references
from experiments.run_page import (
    EXPERIMENT_TAGS,
    dataset_input,
    description,
    experiment_name,
    headline,
    run_name,
    used_params,
)
from experiments.tracking import OFFLINE, Tracker
from modules.base import FitContext, load_checkpoint, module_from_checkpoint
from modules.registry import DATAMODULES, METHODS, as_dataclass
from modules.towers import build_tokenizer

log = logging.getLogger("alignlab")
DONE = "result.json"


@dataclass
class StageResult:
    """Where a finished stage's checkpoint is and what its test metrics were."""

    name: str
    hash: str
    checkpoint: Path
    metrics: dict[str, float]
    run_id: str | None
    cached: bool
    seconds: float
    url: str = ""  # where the run is in MLflow (a UI link for a server)
    params: dict | None = None  # the params the stage's run shows


class Interrupted(Exception):
    """A stage stopped by SIGTERM or Ctrl+C; its run is marked KILLED. Says where the stage's
    last checkpoint is (``resume=true`` continues from it), if one was written."""

    def __init__(self, signal_name: str, stage: str, checkpoint: Path | None) -> None:
        self.signal_name, self.stage, self.checkpoint = signal_name, stage, checkpoint
        super().__init__(f"{signal_name} in stage {stage}")


# Lightning turns SIGTERM into SIGTERMException (a SystemExit) at the next batch boundary and
# Ctrl+C into SystemExit(1); run.py turns a SIGTERM outside the trainer into SIGTERMException
INTERRUPTS = (KeyboardInterrupt, SystemExit)


def signal_name(err: BaseException) -> str:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return "SIGTERM" if isinstance(err, SIGTERMException) else "SIGINT"


def end_status(err: BaseException | None) -> str:
    """The MLflow status of a run that ended with ``err`` (None: it finished)."""
    if err is None:
        return "FINISHED"
    return "KILLED" if isinstance(err, (*INTERRUPTS, Interrupted)) else "FAILED"


def output_root(cfg: dict) -> Path:
    """``output_dir``, a relative one under the checkout (where the MLflow store is too)."""
    path = Path(cfg["output_dir"]).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def stage_hashes(stages: list[Stage]) -> dict[str, str]:
    """Each stage's hash, chained through the stages it starts from."""
    hashes: dict[str, str] = {}
    for stage in stages:
        upstream = []
        for key, ref in references(stage.plain):
            if ref in hashes:
                upstream.append(f"{key}:{hashes[ref]}")
            else:
                stat = Path(ref).stat()
                upstream.append(f"{key}:{Path(ref).resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        hashes[stage.name] = config_hash(stage.plain, upstream)
    return hashes


def _names(stage: Stage) -> tuple[str, str]:
    return stage.plain["method"]["name"], stage.plain["data"]["name"]


@dataclass
class Invocation:
    """How the experiment was started: the command line and its ``key=value`` overrides (they
    name the runs and go into their descriptions)."""

    overrides: list[str]
    config: str = ""  # the YAML file
    command: str = ""

    def __post_init__(self) -> None:
        self.command = self.command or " ".join(["python", *sys.argv])

    def tags(self) -> dict[str, str]:
        """The runs table's Source and User columns: the YAML and who ran it."""
        source = Path(self.config or sys.argv[0]).resolve()
        if source.is_relative_to(REPO_ROOT):
            source = source.relative_to(REPO_ROOT)
        return {
            "mlflow.source.name": str(source),
            "mlflow.source.type": "LOCAL",
            "mlflow.user": _user(),
        }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return str(os.getuid())


def run_experiment(
    stages: list[Stage], tracker: Tracker | None = None, invocation: Invocation | None = None
) -> list[StageResult]:
    """Train/reuse every stage in order; log them to MLflow (nested when there are several)."""
    final = stages[-1].plain
    hashes = stage_hashes(stages)
    invocation = invocation or Invocation([])
    tracker = tracker or Tracker(
        final["logger"]["tracking_uri"],
        experiment_name(final),
        final["logger"]["fallback_to_local"],
    )
    tracker.set_experiment_tags(EXPERIMENT_TAGS)
    parent_id = None
    root = output_root(final)
    if len(stages) > 1:
        method, data = _names(stages[-1])
        tags = {
            "alignlab.method": method,
            "alignlab.data": data,
            "alignlab.stages": ",".join(hashes),
            "alignlab.config_hash": hashes[stages[-1].name],  # covers the upstream stages
        }
        # resuming: continue the unfinished parent run of the same chain, not a second one
        parent_id = tracker.find_unfinished(tags) if final["resume"] else None
        if parent_id is not None:
            tracker.reopen(parent_id)
        else:
            name = run_name(final["name"], final["seed"], invocation.overrides, chain=True)
            parent_id = tracker.start_run(name, {**tags, **invocation.tags()})
            if tracker.active:
                tracker.log_artifact(parent_id, _write_yaml(stages, hashes, root))
        parent_text = (invocation.command, invocation.overrides, hashes[stages[-1].name], root)
        tracker.set_tags(parent_id, {"mlflow.note.content": description(*parent_text)})
    results: dict[str, StageResult] = {}
    error: BaseException | None = None
    try:
        for i, stage in enumerate(stages):
            stage_dir = output_root(stage.plain) / f"{stage.name}-{hashes[stage.name]}"
            # the last stage always runs, unless resuming an experiment it already finished
            last = i == len(stages) - 1
            reusable = (not last or stage.plain["resume"]) and not stage.plain["rerun_stages"]
            finished = _finished(stage_dir) if reusable else None
            if finished is not None:
                results[stage.name] = _reuse(stage, finished, tracker, parent_id, invocation)
            else:
                # one run at a time writes a stage's folder (under DDP: the launching process)
                lock = stage_lock(stage_dir) if rank_zero_only.rank == 0 else nullcontext()
                with lock:
                    results[stage.name] = _train(
                        stage,
                        hashes[stage.name],
                        stage_dir,
                        results,
                        tracker,
                        parent_id,
                        invocation,
                    )
    except BaseException as err:
        error = err
        raise
    finally:
        if parent_id is not None:
            if error is None:  # the chain shows its last stage's params and test results
                result = results[stages[-1].name]
                tested = {k: v for k, v in result.metrics.items() if k.startswith("test/")}
                tracker.log_params(parent_id, result.params or {})
                tracker.log_metrics(parent_id, {**tested, **headline(tested)})
                text = description(*parent_text, metrics=tested)
                tracker.set_tags(parent_id, {"mlflow.note.content": text})
            tracker.finish(parent_id, end_status(error))
        tracker.flush(root)
    return list(results.values())


def _finished(stage_dir: Path) -> Path | None:
    """A finished stage folder of this config hash: the stage's own, else one another stage
    name wrote (a name is not part of the hash: clip.yaml's ``main`` and every chain's
    ``pretrain`` are one config)."""
    if (stage_dir / DONE).is_file():
        return stage_dir
    digest = stage_dir.name.rsplit("-", 1)[-1]
    return next(
        (d for d in sorted(stage_dir.parent.glob(f"*-{digest}")) if (d / DONE).is_file()), None
    )


def _write_yaml(stages: list[Stage], hashes: dict[str, str], root: Path) -> Path:
    out = root / f"experiment-{hashes[stages[-1].name]}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump({"stages": {s.name: s.plain for s in stages}}, sort_keys=False))
    return out


def _reuse(
    stage: Stage,
    stage_dir: Path,
    tracker: Tracker,
    parent_id: str | None,
    invocation: Invocation,
) -> StageResult:
    saved = json.loads((stage_dir / DONE).read_text())
    params = saved.get("params") or used_params(stage.plain, list(MODALITIES))
    if parent_id is not None and saved.get("run_id") in tracker.children(parent_id):
        # a resumed chain: this stage finished earlier under the same parent run
        log.info("stage %s: finished earlier in this run (%s)", stage.name, stage_dir)
        return StageResult(
            stage.name,
            saved["hash"],
            stage_dir / "model.ckpt",
            saved["metrics"],
            saved["run_id"],
            True,
            0.0,
            tracker.run_url(saved["run_id"]),
            params,
        )
    log.info(
        "stage %s: reusing the finished stage with config hash %s from %s "
        "(rerun_stages=true to retrain)",
        stage.name,
        saved["hash"],
        stage_dir,
    )
    method, data = _names(stage)
    name = run_name(
        method, stage.plain["seed"], invocation.overrides, stage.name if parent_id else None
    )
    run_id = tracker.start_run(
        name,
        {
            "alignlab.stage": stage.name,
            "alignlab.method": method,
            "alignlab.data": data,
            "alignlab.config_hash": saved["hash"],
            "alignlab.cached": "true",
            "alignlab.source_run_id": str(saved.get("run_id")),
            **invocation.tags(),
        },
        parent_id,
    )
    tracker.log_params(run_id, params)
    tracker.log_metrics(run_id, {**saved["metrics"], **headline(saved["metrics"])})
    text = description(
        invocation.command, invocation.overrides, saved["hash"], stage_dir, saved["metrics"]
    )
    tracker.set_tags(run_id, {"mlflow.note.content": f"Reused from {stage_dir}.\n\n{text}"})
    tracker.finish(run_id, True)
    return StageResult(
        stage.name,
        saved["hash"],
        stage_dir / "model.ckpt",
        saved["metrics"],
        run_id,
        True,
        0.0,
        tracker.run_url(run_id),
        params,
    )


def _checkpoint_path(ref: str, results: dict[str, StageResult]) -> str:
    """The checkpoint a reference (``init_from``, ``teacher_from``, ``features_from``) names:
    an earlier stage or a path."""
    return str(results[ref].checkpoint if ref in results else ref)


def build(
    cfg: dict, tokenizer_state: dict | None = None
) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The datamodule (set up for fitting) and the untrained method of a resolved stage config.

    The tokenizer belongs to the text encoder (``model.text``): rebuilt from
    ``tokenizer_state`` (a checkpoint's, so a stage keeps the ids its text tower was trained
    with) or built from the training captions, then handed to the data."""
    data_entry = DATAMODULES.get(cfg["data"]["name"])
    data_cfg = as_dataclass(data_entry.config, cfg["data"])
    datamodule = data_entry.cls(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if datamodule.needs_tokenizer:
        texts = None if tokenizer_state is not None else datamodule.training_texts()
        datamodule.tokenizer = build_tokenizer(
            cfg["model"]["text"], texts, data_cfg.max_text_len, state=tokenizer_state
        )
    module = METHODS.get(cfg["method"]["name"]).cls(
        method=cfg["method"],
        model=cfg["model"],
        optim=cfg["optim"],
        tokenizer=datamodule.tokenizer.state() if datamodule.tokenizer is not None else None,
        context=data_context(datamodule),
    )
    return datamodule, module


def data_context(datamodule: L.LightningDataModule) -> dict:
    """What a method is told about the data at construction (saved with its checkpoint): its
    encoders, training views, class labels, their names and descriptions (where the data has
    them), and the towers' input facts."""
    names = dict(getattr(datamodule, "class_names", None) or {})
    labels = dict(getattr(datamodule, "labels", None) or {})
    return {
        "modalities": list(datamodule.modalities),
        "views": dict(getattr(datamodule, "views", None) or {}),
        "labels": labels or {task: len(values) for task, values in names.items()},
        "class_names": {task: list(values) for task, values in names.items()},
        "label_descriptions": {
            task: list(texts)
            for task, texts in (getattr(datamodule, "label_descriptions", None) or {}).items()
        },
        **datamodule.tower_context(),
    }


def fit_context(datamodule: L.LightningDataModule, earlier: list) -> FitContext:
    """The narrow view of the training data a method's ``prepare_fit`` gets."""
    return FitContext(
        earlier=earlier,
        num_items=datamodule.num_items("train"),
        loader=lambda indices: datamodule.ordered_loader("train", indices),
        group_batches=datamodule.group_batches,
    )


def _train(
    stage: Stage,
    digest: str,
    stage_dir: Path,
    results: dict[str, StageResult],
    tracker: Tracker,
    parent_id: str | None,
    invocation: Invocation,
) -> StageResult:
    start = time.perf_counter()
    cfg = stage.plain
    method, data_name = _names(stage)
    L.seed_everything(cfg["seed"] + cfg["seed_offset"], workers=True, verbose=False)
    paths = {key: _checkpoint_path(ref, results) for key, ref in references(cfg)}
    loaded = {path: load_checkpoint(path) for path in set(paths.values())}
    init = {
        key.partition(".")[2] or None: loaded[p]
        for key, p in paths.items()
        if key.startswith("init_from")
    }
    teacher = loaded.get(paths.get("teacher_from", ""))
    method_cls = METHODS.get(method).cls
    if method_cls.requires_teacher and teacher is None:
        raise ValueError(
            f"stage {stage.name}: method {method} needs teacher_from (a stage or checkpoint)"
        )

    # the text tower's tokenizer comes with its weights
    sources = [init.get("text"), init.get(None), teacher, *init.values()]
    state = next((c["hyper_parameters"]["tokenizer"] for c in sources if c is not None), None)
    datamodule, module = build(cfg, state)
    for side, checkpoint in init.items():
        module.load_student_weights(checkpoint["state_dict"], None if side is None else (side,))
    if teacher is not None:
        module.set_teacher(teacher["state_dict"])
    module.fit_log = fit_context(
        datamodule,
        [
            module_from_checkpoint(loaded[p])
            for key, p in paths.items()
            if key.startswith("features_from")
        ],
    )
    module.prepare_fit(module.fit_log)

    last = stage_dir / LAST
    resume_from = last if cfg["resume"] and last.is_file() else None
    identity = resume_identity(resume_from, method, digest) if resume_from else None
    # a run started while the tracking server was down has no id the store knows
    reopened = identity is not None and not str(identity["run_id"]).startswith(OFFLINE)
    if reopened:
        run_id = identity["run_id"] if tracker.active else None
        tracker.reopen(run_id)
        log.info(
            "stage %s: resuming from %s (step %d) into MLflow run %s",
            stage.name,
            resume_from,
            identity["global_step"],
            run_id,
        )
    else:
        if identity is not None:
            log.info(
                "stage %s: resuming from %s into a new MLflow run (its first started while "
                "the tracking server was down)",
                stage.name,
                resume_from,
            )
        elif cfg["resume"]:
            log.info("stage %s: nothing to resume in %s; starting", stage.name, stage_dir)
        tags = {
            "alignlab.method": method,
            "alignlab.data": data_name,
            "alignlab.config_hash": digest,
            "alignlab.stage_dir": str(stage_dir),
        }
        if parent_id:
            tags["alignlab.stage"] = stage.name
        name = run_name(
            method, cfg["seed"], invocation.overrides, stage.name if parent_id else None
        )
        run_id = tracker.start_run(name, {**tags, **invocation.tags()}, parent_id)
    params = used_params(cfg, list(datamodule.modalities))
    # from here on the run exists: whatever stops the stage, its run ends FAILED or KILLED
    error: BaseException | None = None
    try:
        if not reopened:
            _open_run(cfg, params, digest, stage_dir, datamodule, tracker, run_id, invocation)
        metrics, best = _fit(
            cfg, method, digest, stage, stage_dir, datamodule, module, tracker, run_id, resume_from
        )
        if tracker.active:
            tracker.log_metrics(run_id, headline(metrics))
            text = description(
                invocation.command, invocation.overrides, digest, stage_dir, metrics, best
            )
            tracker.set_tags(run_id, {"mlflow.note.content": text})
    except BaseException as err:
        error = err
        if isinstance(err, INTERRUPTS):
            saved = last if last.is_file() else None
            raise Interrupted(signal_name(err), stage.name, saved) from err
        raise
    finally:
        tracker.finish(run_id, end_status(error))
        tracker.flush(stage_dir)  # what a dead server did not take: sent, kept locally or saved
    if rank_zero_only.rank == 0:
        result = {
            "hash": digest,
            "run_id": run_id,
            "metrics": metrics,
            "stage": stage.name,
            "params": params,
        }
        tmp = stage_dir / f".{DONE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
        os.replace(tmp, stage_dir / DONE)
        last.unlink(missing_ok=True)  # finished: model.ckpt supersedes it
    seconds = time.perf_counter() - start
    return StageResult(
        stage.name,
        digest,
        stage_dir / "model.ckpt",
        metrics,
        run_id,
        False,
        seconds,
        tracker.run_url(run_id),
        params,
    )


def _open_run(
    cfg: dict,
    params: dict,
    digest: str,
    stage_dir: Path,
    datamodule: L.LightningDataModule,
    tracker: Tracker,
    run_id: str | None,
    invocation: Invocation,
) -> None:
    """A new stage run's params, data, description and resolved config."""
    tracker.log_params(run_id, params)
    sizes = {}
    for split in ("train", "val", "test"):
        try:
            sizes[split] = datamodule.num_items(split)
        except (KeyError, NotImplementedError, TypeError, AttributeError):
            continue  # a split the data does not count (e.g. streamed shards)
    tracker.log_inputs(run_id, [dataset_input(cfg["data"], sizes)])
    text = description(invocation.command, invocation.overrides, digest, stage_dir)
    tracker.set_tags(run_id, {"mlflow.note.content": text})
    stage_dir.mkdir(parents=True, exist_ok=True)
    config_file = stage_dir / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tracker.log_artifact(run_id, config_file)


def _fit(
    cfg: dict,
    method: str,
    digest: str,
    stage: Stage,
    stage_dir: Path,
    datamodule: L.LightningDataModule,
    module: L.LightningModule,
    tracker: Tracker,
    run_id: str | None,
    resume_from: Path | None,
) -> tuple[dict[str, float], tuple[int, str, float] | None]:
    """Train, test and save a stage; its test metrics and best checkpoint (epoch, monitor,
    score)."""
    log.info(
        "stage %s: %s on %s, config hash %s, MLflow %s",
        stage.name,
        method,
        cfg["data"]["name"],
        digest,
        tracker.run_url(run_id),
    )
    trainer_cfg = {k: v for k, v in cfg["trainer"].items() if v is not None}
    if not module.automatic_optimization:  # the module clips in its own (manual) step
        module.gradient_clip_val = trainer_cfg.pop("gradient_clip_val", None)
    logger = tracker.logger(run_id)
    evaluation = cfg["evaluation"]
    monitor = monitor_of(chosen_evaluators(module, datamodule, evaluation), datamodule)
    best = ModelCheckpoint(
        dirpath=stage_dir / "checkpoints",
        filename="best",
        monitor=monitor[0] if monitor else None,
        mode=monitor[1] if monitor else "max",
        save_top_k=1,
        enable_version_counter=False,
    )
    # a short epoch logs at least once (Lightning warns when it has fewer batches than this)
    try:
        steps_per_epoch = len(datamodule.train_dataloader())
    except TypeError:  # a streaming loader has no length
        steps_per_epoch = None
    if steps_per_epoch:
        trainer_cfg["log_every_n_steps"] = max(
            1, min(trainer_cfg.get("log_every_n_steps", 50), steps_per_epoch)
        )
    callbacks = [
        EmbeddingMetrics(evaluation),
        EmbeddingPlots(stage_dir / "plots"),
        RunState(run_id, method, digest, tracker.resolved),
        SkippedSamples(),
        best,
    ]
    if cfg["checkpoint_every_n_steps"]:
        callbacks.append(PeriodicCheckpoint(stage_dir, cfg["checkpoint_every_n_steps"]))
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks += [RichProgressBar(leave=True), Throughput()]
    trainer = L.Trainer(
        **trainer_cfg,
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(stage_dir),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the datamodule shards global batches itself
    )
    trainer.fit(
        module,
        datamodule=datamodule,
        ckpt_path=str(resume_from) if resume_from else None,
        weights_only=True,
    )
    tested = trainer.test(module, datamodule=datamodule, verbose=False)
    trainer.save_checkpoint(str(stage_dir / "model.ckpt"))
    trainer.strategy.barrier("checkpoint-saved")  # later stages on other ranks read it
    saved = Path(best.best_model_path or stage_dir / "model.ckpt")
    tracker.log_artifact(run_id, saved, "checkpoints")
    metrics = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    return metrics, _best(best)


def _best(best: ModelCheckpoint) -> tuple[int, str, float] | None:
    """The best checkpoint's epoch, monitored metric and score (None without a monitor)."""
    if not best.best_model_path or best.best_model_score is None:
        return None
    epoch = torch.load(best.best_model_path, mmap=True, weights_only=True)["epoch"]
    return int(epoch), str(best.monitor), float(best.best_model_score)
