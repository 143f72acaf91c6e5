"""Resume without loss: a run killed with SIGKILL mid-epoch and resumed with ``resume=true`` ends
with the weights and metrics of an uninterrupted run, in the same MLflow run. Also: checkpoints
of another config are refused, and a non-finite loss stops training with its name and step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader

from experiments.checkpoints import AtomicCheckpointIO, resume_identity
from modules.base import NonFiniteLossError
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import tiny_module

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.train_pairs=caption",
    "data.num_train=32",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=16",
    "data.eval_batch_size=40",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "checkpoint_every_n_steps=3",
]


def command(root: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "experiments" / "run.py"),
        str(REPO / "experiments" / "clip.yaml"),
        *TINY,
        f"output_dir={root / name}",
        f"logger.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"logger.experiment_name=resume-{name}",
        *extra,
    ]


def stage_dir(output: Path) -> Path:
    (found,) = output.glob("main-*")
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command(root, "whole"), env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    killed = subprocess.Popen(command(root, "killed"), env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list((root / "killed").glob("main-*/last.ckpt")):
        assert killed.poll() is None, killed.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    state = {
        "killed_code": killed.returncode,
        "finished": (stage_dir(root / "killed") / "result.json").exists(),
    }
    checkpoint = torch.load(stage_dir(root / "killed") / "last.ckpt", weights_only=True)
    state["killed_step"] = checkpoint["global_step"]

    resumed = subprocess.run(
        command(root, "killed", "resume=true"), env=env, capture_output=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    return {"root": root, "state": state, "log": resumed.stderr.decode()}


def test_the_kill_happened_mid_run(runs):
    state = runs["state"]
    assert state["killed_code"] == -signal.SIGKILL
    assert not state["finished"]
    assert 3 <= state["killed_step"] < 30 and state["killed_step"] % 10 != 0  # mid-epoch
    assert "resuming from" in runs["log"] and f"(step {state['killed_step']})" in runs["log"]


def test_resumed_run_ends_with_the_uninterrupted_weights_and_metrics(runs):
    root = runs["root"]
    whole = torch.load(stage_dir(root / "whole") / "model.ckpt", weights_only=True)
    resumed = torch.load(stage_dir(root / "killed") / "model.ckpt", weights_only=True)
    assert resumed["global_step"] == whole["global_step"] == 30
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    metrics = [
        json.loads((stage_dir(root / name) / "result.json").read_text())["metrics"]
        for name in ("whole", "killed")
    ]
    assert metrics[1].keys() == metrics[0].keys()
    for key, value in metrics[0].items():
        assert metrics[1][key] == pytest.approx(value, abs=1e-5), key
    assert not (stage_dir(root / "killed") / "last.ckpt").exists()  # finished: model.ckpt


def test_mlflow_shows_one_run_with_one_history(runs):
    client = MlflowClient(f"sqlite:///{runs['root'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resume-killed")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    # one history, no step twice; only the checkpointed step's own point may be missing (the
    # test kills right after the checkpoint, before that step's metrics reach the logger)
    killed_step = runs["state"]["killed_step"]
    assert len(steps) == len(set(steps)) and max(steps) == 29
    assert set(range(30)) - set(steps) <= {killed_step - 1}
    assert "test/retrieval/mean_R1" in run.data.metrics
    assert any(a.path == "checkpoints" for a in client.list_artifacts(run.info.run_id))


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(
        {"alignlab": {"run_id": "r", "method": "clip", "config_hash": "aaa"}, "global_step": 3},
        path,
    )
    assert resume_identity(path, "clip", "aaa")["run_id"] == "r"
    with pytest.raises(ValueError, match="method 'clip' with config hash aaa; this stage is"):
        resume_identity(path, "clip_refine", "bbb")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_non_finite_loss_stops_with_the_term_and_step_after_saving(tmp_path):
    vocab = WordTokenizer.build(["a red circle", "a blue square"]).vocab
    module = tiny_module(vocab)
    ids, mask = WordTokenizer(vocab, max_len=8).encode(["a red circle", "a blue square"] * 2)
    batches = []
    for step in range(3):
        image = torch.randn(4, 3, 16, 16)
        if step == 2:
            image[0] = float("nan")
        batches.append(
            {
                "image": image,
                "text_ids": ids,
                "text_mask": mask,
                "index": torch.arange(4),
                "item_id": torch.arange(4),
            }
        )
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        plugins=[AtomicCheckpointIO()],
    )
    with pytest.raises(NonFiniteLossError, match=r"train/loss/clip = nan at step 2 \(epoch 0\)"):
        trainer.fit(module, DataLoader(batches, batch_size=None))
    saved = torch.load(tmp_path / "last-good.ckpt", weights_only=True)
    assert saved["global_step"] == 2
    for key, value in saved["state_dict"].items():
        assert torch.isfinite(value).all(), key
        torch.testing.assert_close(value, module.state_dict()[key], msg=key)  # not updated


def test_a_resumed_chain_continues_its_parent_run(tmp_path, monkeypatch):
    """hycd's refine stage dies after training (its test fails); resume=true reuses the
    pretrain stage and finishes refine from last.ckpt: one parent, two stage runs, all finished."""
    from experiments.config import load_experiment
    from experiments.stages import run_experiment

    overrides = [
        "data.num_train=48",
        "data.num_val=8",
        "data.num_test=8",
        "data.batch_size=16",
        "data.eval_batch_size=40",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "checkpoint_every_n_steps=1",
        f"output_dir={tmp_path / 'out'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "logger.experiment_name=chain",
    ]
    real_test = L.Trainer.test

    def dies_in_refine(trainer, module, *args, **kwargs):
        if type(module).__name__ == "CLIPRefine":
            raise RuntimeError("killed")
        return real_test(trainer, module, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(L.Trainer, "test", dies_in_refine)
        with pytest.raises(RuntimeError, match="killed"):
            run_experiment(load_experiment(REPO / "experiments" / "hycd.yaml", overrides))
    results = run_experiment(
        load_experiment(REPO / "experiments" / "hycd.yaml", [*overrides, "resume=true"])
    )
    assert [r.cached for r in results] == [True, False]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("chain").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["alignlab.stage"]: r for r in runs if r is not parent}
    assert sorted(children) == ["pretrain", "refine"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    assert results[1].run_id == children["refine"].info.run_id
    assert "test/retrieval/mean_R1" in children["refine"].data.metrics
    assert "test/retrieval/mean_R1" in parent.data.metrics
