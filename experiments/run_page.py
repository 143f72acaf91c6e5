"""What a run shows in the MLflow UI: its experiment, name, description, dataset, params and
headline metrics.

MLflow's runs table is where researchers compare runs, so a run must be told apart by its name
(method and what differs from the YAML), say what it is in its description (command,
overrides, headline test metrics, the best checkpoint), show its data in the Dataset column,
carry only the params it used, and offer a few headline metrics whose keys sort first in the
UI's column menus (``Summary/...``: MLflow sorts keys by code point, capitals before lowercase).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from experiments.config import MODALITIES, flatten

# MLflow's experiment kind: the UI opens such an experiment on its runs table ("Model
# training"), not on the GenAI overview of traces
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# the query that makes the UI show the runs table (remembered by the browser afterwards)
UI_QUERY = "?workflowType=machine_learning"

# test metrics that make a run's headline, by the end of their key
HEADLINE = (
    "/mean_R1",
    "/R1",
    "/mAP",
    "/modality_gap",
    "/alignment",
    "/accuracy",
    "/mean_auroc",
    "/mrv",
    "/MAE",
    "/spearman",
    "/f1",
    "/pk",
    "/windowdiff",
    "/P1",
    "/average_precision",
    "/diversity",
    "/coherence",
)
SUMMARY = "Summary/"
UNITS = (
    "R<K>, mAP and accuracies are percentages; spearman is Spearman's rho x 100; modality_gap "
    "is the distance between the two "
    "modalities' mean embeddings; alignment the mean distance of positive pairs."
)
# loader knobs that do not change which data a run sees
_NOT_DATA = ("batch_size", "eval_batch_size", "num_workers", "cache_dir", "max_skipped_fraction")
# config keys that say how a run is executed or logged, not what it is
_NOT_PARAMS = (
    "logger.",
    "trainer.enable_progress_bar",
    "rerun_stages",
    "resume",
    "checkpoint_every_n_steps",
    "output_dir",
    "stages",
)


def experiment_name(cfg: dict[str, Any]) -> str:
    """``logger.experiment_name``, else the data the run is compared on: the data family, and
    for files on disk their format and folder (``image_text``, ``image_text-coco-coco2017``).
    Methods run on the same data share one runs table."""
    if cfg["logger"]["experiment_name"]:
        return cfg["logger"]["experiment_name"]
    data = cfg["data"]
    parts = [data["name"]]
    if data.get("format", "embedded") != "embedded":
        parts.append(data["format"])
        if data.get("root"):
            parts.append(Path(data["root"]).name)
    return "-".join(parts)


def override_keys(overrides: list[str]) -> list[tuple[str, str]]:
    """``key=value`` arguments as (key, value), without the ones that only say where to log."""
    pairs = [item.partition("=")[::2] for item in overrides]
    return [(k, v) for k, v in pairs if not k.startswith(_NOT_PARAMS)]


def run_name(
    method: str, seed: int, overrides: list[str], stage: str | None = None, chain: bool = False
) -> str:
    """``clip optim.lr=3e-4 seed=1``: the method, what the command line changed, the seed.
    A stage run of a chain starts with its stage (``refine: clip_refine seed=0``)."""
    changed = [f"{k}={v}" for k, v in override_keys(overrides) if k != "seed"]
    if chain and stage is None:
        changed = [item for item in changed if not item.startswith("stages.")]
    name = " ".join([method, *changed, f"seed={seed}"])
    return f"{stage}: {name}" if stage else name


def used_params(cfg: dict[str, Any], modalities: list[str]) -> dict[str, Any]:
    """The flattened config a run used: towers of the data's modalities only, no logging or
    execution knobs, no unset (None or empty) values."""
    unused = tuple(f"model.{m}." for m in MODALITIES if m not in modalities)
    out = {}
    for key, value in flatten(cfg).items():
        if key.startswith(unused + _NOT_PARAMS) or value in (None, "", [], {}):
            continue
        out[key] = value
    return out


def dataset_input(data: dict[str, Any], sizes: dict[str, int]) -> DatasetInput:
    """The run's data as an MLflow dataset input (the runs table's Dataset column): named by
    family and format, digested from the keys that decide its contents, profiled by split size."""
    fmt, root = data.get("format", "embedded"), data.get("root")
    on_disk = fmt != "embedded" and bool(root)
    content = {k: v for k, v in data.items() if k not in _NOT_DATA}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    dataset = Dataset(
        name=f"{data['name']}-{fmt}" + (f"-{Path(root).name}" if on_disk else ""),
        digest=digest[:8],
        source_type="local" if on_disk else "code",
        source=json.dumps(
            {"uri": str(Path(root).resolve())}
            if on_disk
            else {"tags": {"generator": f"alignlab {data['name']} (built in)"}}
        ),
        profile=json.dumps({f"{split}_items": n for split, n in sizes.items()}),
    )
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "train")])


def rounded(value: float) -> float:
    """A metric to 6 significant digits (9.54, not 9.539999961853027): metrics are computed in
    float32, whose last of ~7 digits is rounding noise."""
    return float(f"{value:.6g}")


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The test metrics that make a run's headline, as ``Summary/<metric>`` (rounded)."""
    return {
        SUMMARY + key.removeprefix("test/"): rounded(value)
        for key, value in sorted(metrics.items())
        if key.startswith("test/") and key.endswith(HEADLINE)
    }


def description(
    command: str,
    overrides: list[str],
    config_hash: str,
    stage_dir: Path,
    metrics: dict[str, float] | None = None,
    best: tuple[int, str, float] | None = None,
) -> str:
    """The run's description (markdown): how to run it again, what it changed, where its files
    are, and (once tested) its headline test metrics and best checkpoint."""
    changed = override_keys(overrides)
    lines = [f"`{command}`", ""]
    lines.append(
        "Overrides: " + (", ".join(f"`{k}={v}`" for k, v in changed) if changed else "none")
    )
    lines.append(f"Config hash `{config_hash}`; files in `{stage_dir}`.")
    if best is not None:
        epoch, monitor, score = best
        lines.append(f"Best checkpoint: epoch {epoch}, {monitor} = {rounded(score):g}.")
    if metrics:
        lines += ["", "| test metric | value |", "| --- | --- |"]
        lines += [
            f"| {key.removeprefix(SUMMARY)} | {value:g} |"
            for key, value in headline(metrics).items()
        ]
        lines += ["", UNITS]
    return "\n".join(lines)


def ui_link(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """A UI link that lands on the runs table (or a run): the server's own, or for the local
    store the one ``bash mlflow/serve.sh`` serves."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    page = f"{base}/#/experiments/{experiment_id}"
    return f"{page}/runs/{run_id}{UI_QUERY}" if run_id else f"{page}/runs{UI_QUERY}"
