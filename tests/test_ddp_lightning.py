"""The same YAML on one process and on two DDP processes (CPU, gloo) trains the same weights and
reports the same test metrics; so do two ``torchrun`` processes that back-propagate the batch
in micro-batches (gradient caching).

Each two-process run is ``experiments/run.py`` in a subprocess: Lightning's ``ddp`` strategy
re-launches the script it runs, which must not be pytest (see ENVIRONMENT.md). The one-process
run is run.py's ``main()`` in the test's process, on one thread like the subprocesses.
``data.batch_size`` is the global batch, so only trainer keys change between the runs. The data
is deterministic (``train_pairs: caption``, no augmentation): random augmentation is drawn per
rank and agrees only in distribution.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.processes import run_main

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.train_pairs=caption",
    "data.num_train=32",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=32",
    "data.eval_batch_size=16",
    "model.image.channels=[8,16,32]",
    "model.text.width=32",
    "model.text.depth=1",
    "model.embed_dim=32",
    "optim.warmup_steps=2",
    "trainer.max_epochs=1",
    "trainer.max_steps=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]
DDP = ["trainer.devices=2", "trainer.strategy=ddp"]
RUNS = {
    "single": ([sys.executable], []),
    "ddp": ([sys.executable], DDP),
    "torchrun_micro": (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
        [*DDP, "optim.micro_batch_size=4"],
    ),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Output folder of each run (they share one MLflow store, one experiment each)."""
    root = tmp_path_factory.mktemp("lightning-ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = {}
    for name, (launcher, extra) in RUNS.items():
        command = [
            *launcher,
            str(REPO / "experiments" / "run.py"),
            str(REPO / "experiments" / "clip.yaml"),
            *TINY,
            *extra,
            f"output_dir={root / name}",
            f"logger.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"logger.experiment_name=ddp-{name}",
        ]
        if name == "single":  # one process: run.py's main() here, on one thread like the others
            code, err = run_main(command)
            assert code == 0, f"{name} failed:\n{err[-3000:]}"
        else:  # Lightning's ddp re-launches the script it runs, so not from pytest
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
            assert done.returncode == 0, f"{name} failed:\n{done.stderr[-3000:]}"
        out[name] = root / name
    out["store"] = root / "mlflow.db"
    return out


def stage_dir(output: Path) -> Path:
    (found,) = output.glob("main-*")
    return found


def weights(output: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(stage_dir(output) / "model.ckpt", weights_only=True)
    return checkpoint["state_dict"]


def test_global_steps_and_batches_are_the_same(runs):
    for name in RUNS:
        checkpoint = torch.load(stage_dir(runs[name]) / "model.ckpt", weights_only=True)
        assert checkpoint["global_step"] == 4, name


@pytest.mark.parametrize("name", ["ddp", "torchrun_micro"])
def test_two_processes_train_the_weights_of_one(runs, name):
    single, other = weights(runs["single"]), weights(runs[name])
    assert single.keys() == other.keys()
    assert abs(single["temperature.log_scale"].item() - math.log(1 / 0.07)) > 1e-3  # it trained
    # Two processes convolve and reduce 16 rows each where one process takes 32, so float32
    # rounding differs; Adam's normalised first steps carry it into the weights at up to ~2e-6
    # (measured: 2.2e-6 after 4 steps). A wrong gradient (a missing gather, a factor of 2) moves
    # them by ~lr = 1e-3 per step.
    for key in single:
        torch.testing.assert_close(other[key], single[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.parametrize("name", ["ddp", "torchrun_micro"])
def test_distributed_evaluation_reports_the_single_process_metrics(runs, name):
    """Test embeddings are gathered over ranks with their sample ids and the padding repeats
    dropped: every retrieval, alignment and zero-shot metric matches one process."""
    single = json.loads((stage_dir(runs["single"]) / "result.json").read_text())["metrics"]
    other = json.loads((stage_dir(runs[name]) / "result.json").read_text())["metrics"]
    evaluated = [k for k in single if not k.startswith("test/loss")]
    assert "test/retrieval/image_to_text/R1" in evaluated
    assert "test/zero_shot/shape/accuracy" in evaluated
    assert sorted(other) == sorted(single)
    for key in evaluated:
        assert other[key] == pytest.approx(single[key], abs=1e-5), key


def test_only_rank_zero_logs_one_run_per_experiment(runs):
    client = MlflowClient(f"sqlite:///{runs['store']}")
    for name in RUNS:
        experiment = client.get_experiment_by_name(f"ddp-{name}")
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test/retrieval/mean_R1"] >= 0
