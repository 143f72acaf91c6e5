"""Run an experiment: its stages in order, each trained, validated, tested and logged.

A stage's result (final checkpoint + test metrics) is stored under
``<output_dir>/<stage>-<config hash>/``. Stages before the last are reused from there when an
identical stage (same resolved config and same upstream stages) has finished before, unless
``rerun_stages=true``; the last stage is the experiment itself and always runs.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (before lightning)

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import MLFlowLogger

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
)
from experiments.config import Stage, config_hash, references
from experiments.tracking import Tracker
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


def run_experiment(stages: list[Stage], tracker: Tracker | None = None) -> list[StageResult]:
    """Train/reuse every stage in order; log them to MLflow (nested when there are several)."""
    final = stages[-1].plain
    hashes = stage_hashes(stages)
    tracker = tracker or Tracker(
        final["logger"]["tracking_uri"],
        final["logger"]["experiment_name"] or final["name"],
        final["logger"]["fallback_to_local"],
    )
    parent_id = None
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
            parent_id = tracker.start_run(f"{final['name']}-{data}-{hashes[stages[-1].name]}", tags)
            if tracker.active:
                tracker.log_artifact(parent_id, _write_yaml(stages, hashes))
    results: dict[str, StageResult] = {}
    ok = False
    try:
        for i, stage in enumerate(stages):
            stage_dir = Path(stage.plain["output_dir"]) / f"{stage.name}-{hashes[stage.name]}"
            # the last stage always runs, unless resuming an experiment it already finished
            last = i == len(stages) - 1
            reusable = (not last or stage.plain["resume"]) and not stage.plain["rerun_stages"]
            if reusable and (stage_dir / DONE).is_file():
                results[stage.name] = _reuse(stage, stage_dir, tracker, parent_id)
            else:
                results[stage.name] = _train(
                    stage, hashes[stage.name], stage_dir, results, tracker, parent_id
                )
        ok = True
    finally:
        if parent_id is not None:
            if ok:
                metrics = results[stages[-1].name].metrics
                tracker.log_metrics(
                    parent_id, {k: v for k, v in metrics.items() if k.startswith("test/")}
                )
            tracker.finish(parent_id, ok)
    return list(results.values())


def _write_yaml(stages: list[Stage], hashes: dict[str, str]) -> Path:
    out = Path(stages[-1].plain["output_dir"]) / f"experiment-{hashes[stages[-1].name]}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump({"stages": {s.name: s.plain for s in stages}}, sort_keys=False))
    return out


def _reuse(stage: Stage, stage_dir: Path, tracker: Tracker, parent_id: str | None) -> StageResult:
    saved = json.loads((stage_dir / DONE).read_text())
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
        )
    log.info(
        "stage %s: reusing the finished stage with config hash %s from %s "
        "(rerun_stages=true to retrain)",
        stage.name,
        saved["hash"],
        stage_dir,
    )
    method, data = _names(stage)
    run_id = tracker.start_run(
        f"{stage.name}:{method}-{data}-{saved['hash']}",
        {
            "alignlab.stage": stage.name,
            "alignlab.method": method,
            "alignlab.data": data,
            "alignlab.config_hash": saved["hash"],
            "alignlab.cached": "true",
            "alignlab.source_run_id": str(saved.get("run_id")),
        },
        parent_id,
    )
    tracker.log_params(run_id, stage.plain)
    tracker.log_metrics(run_id, saved["metrics"])
    tracker.finish(run_id, True)
    return StageResult(
        stage.name,
        saved["hash"],
        stage_dir / "model.ckpt",
        saved["metrics"],
        run_id,
        True,
        0.0,
        tracker.run_url(run_id) if tracker.active else "",
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
    encoders, training views, class labels and their names, and the towers' input facts."""
    names = dict(getattr(datamodule, "class_names", None) or {})
    labels = dict(getattr(datamodule, "labels", None) or {})
    return {
        "modalities": list(datamodule.modalities),
        "views": dict(getattr(datamodule, "views", None) or {}),
        "labels": labels or {task: len(values) for task, values in names.items()},
        "class_names": {task: list(values) for task, values in names.items()},
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

    run_name = (
        f"{stage.name}:{method}-{data_name}-{digest}"
        if parent_id
        else f"{method}-{data_name}-{digest}"
    )
    last = stage_dir / LAST
    resume_from = last if cfg["resume"] and last.is_file() else None
    if resume_from is not None:
        identity = resume_identity(resume_from, method, digest)
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
        if cfg["resume"]:
            log.info("stage %s: nothing to resume in %s; starting", stage.name, stage_dir)
        tags = {
            "alignlab.method": method,
            "alignlab.data": data_name,
            "alignlab.config_hash": digest,
        }
        if parent_id:
            tags["alignlab.stage"] = stage.name
        run_id = tracker.start_run(run_name, tags, parent_id)
        tracker.log_params(run_id, cfg)
        stage_dir.mkdir(parents=True, exist_ok=True)
        config_file = stage_dir / "config.yaml"
        config_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
        tracker.log_artifact(run_id, config_file)
    log.info(
        "stage %s: %s on %s, config hash %s, MLflow %s",
        stage.name,
        method,
        data_name,
        digest,
        tracker.run_url(run_id),
    )

    trainer_cfg = {k: v for k, v in cfg["trainer"].items() if v is not None}
    if not module.automatic_optimization:  # the module clips in its own (manual) step
        module.gradient_clip_val = trainer_cfg.pop("gradient_clip_val", None)
    logger = MLFlowLogger(
        experiment_name=tracker.experiment_name, tracking_uri=tracker.uri, run_id=run_id
    )
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
        RunState(run_id, method, digest),
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
    ok = False
    try:
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
        ok = True
    finally:
        tracker.finish(run_id, ok)
    metrics = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    if trainer.is_global_zero:
        result = {"hash": digest, "run_id": run_id, "metrics": metrics, "stage": stage.name}
        tmp = stage_dir / f".{DONE}.tmp"
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True))
        os.replace(tmp, stage_dir / DONE)
        last.unlink(missing_ok=True)  # finished: model.ckpt supersedes it
    seconds = time.perf_counter() - start
    url = tracker.run_url(run_id) if tracker.active else ""
    return StageResult(
        stage.name, digest, stage_dir / "model.ckpt", metrics, run_id, False, seconds, url
    )
