"""What a run shows in the MLflow UI (experiments/run_page.py), piece by piece; the served UI's
view of whole runs is checked in tests/test_tracking_server.py."""

from __future__ import annotations

import json

import numpy as np
import torch

from experiments.config import load_experiment
from experiments.run_page import (
    SUMMARY,
    dataset_input,
    description,
    experiment_name,
    headline,
    rounded,
    run_name,
    ui_link,
    used_params,
)
from tests.test_experiments import EXPERIMENTS


def test_runs_are_named_by_method_what_the_command_changed_and_seed():
    overrides = ["optim.lr=3e-4", "seed=2", "output_dir=/x", "logger.tracking_uri=http://h:1"]
    assert run_name("clip", 2, overrides) == "clip optim.lr=3e-4 seed=2"
    assert run_name("clip", 0, []) == "clip seed=0"
    assert run_name("clip_refine", 0, ["seed=0"], stage="refine") == "refine: clip_refine seed=0"
    # a chain's parent leaves stage-specific overrides to its stages
    chain = ["stages.refine.method.alpha=0.3", "optim.lr=1e-4"]
    assert run_name("hycd", 1, chain, chain=True) == "hycd optim.lr=1e-4 seed=1"


def test_params_are_the_blocks_the_run_uses():
    (stage,) = load_experiment(EXPERIMENTS / "clip.yaml")
    params = used_params(stage.plain, ["image", "text"])
    assert params["model.image.name"] == "cnn" and params["method.name"] == "clip"
    assert not [k for k in params if k.startswith(("model.video", "model.audio", "logger."))]
    assert "trainer.enable_progress_bar" not in params and "output_dir" not in params
    assert None not in params.values() and "" not in params.values()
    assert "data.root" not in params  # None: the built-in data
    assert used_params(stage.plain, ["video", "text"])["model.video.name"] == "frames"


def test_experiment_is_the_data_unless_named():
    (stage,) = load_experiment(EXPERIMENTS / "clip.yaml")
    assert experiment_name(stage.plain) == "image_text"
    (named,) = load_experiment(EXPERIMENTS / "clip.yaml", ["logger.experiment_name=mine"])
    assert experiment_name(named.plain) == "mine"
    on_disk = {**stage.plain, "data": {"name": "image_text", "format": "coco", "root": "/d/coco"}}
    assert experiment_name(on_disk) == "image_text-coco-coco"
    (swav,) = load_experiment(EXPERIMENTS / "swav.yaml")
    assert experiment_name(swav.plain) == swav.plain["data"]["name"]


def test_dataset_input_names_the_data_and_digests_what_decides_it():
    data = {"name": "image_text", "format": "embedded", "root": None, "num_train": 100}
    entry = dataset_input({**data, "batch_size": 8}, {"train": 100, "val": 10})
    assert entry.dataset.name == "image_text-embedded"
    assert entry.dataset.source_type == "code"
    assert json.loads(entry.dataset.profile) == {"train_items": 100, "val_items": 10}
    assert [(t.key, t.value) for t in entry.tags] == [("mlflow.data.context", "train")]
    # loader knobs do not change the digest; the data's contents do
    same = dataset_input({**data, "batch_size": 64, "num_workers": 4}, {})
    other = dataset_input({**data, "num_train": 200}, {})
    assert same.dataset.digest == entry.dataset.digest != other.dataset.digest
    disk = dataset_input({"name": "image_text", "format": "coco", "root": "/d/coco"}, {})
    assert disk.dataset.name == "image_text-coco-coco" and disk.dataset.source_type == "local"
    assert json.loads(disk.dataset.source) == {"uri": "/d/coco"}


def test_values_are_rounded_to_six_significant_digits():
    assert rounded(float(np.float32(9.54))) == 9.54  # not 9.539999961853027
    assert rounded(float(torch.tensor(15.76))) == 15.76
    assert rounded(0.1149999976158142) == 0.115  # float32 arithmetic's last-digit noise
    assert rounded(1 / 3) == 0.333333 and rounded(123456.7) == 123457.0
    assert rounded(-2.65) == -2.65 and rounded(0.0) == 0.0 and rounded(2.5e-7) == 2.5e-7


def test_headline_metrics_sort_first_and_are_rounded():
    metrics = {
        "test/retrieval/image_to_text/R1": float(np.float32(47.3)),
        "test/retrieval/image_to_text/R5": 80.0,
        "test/modality_gap": 0.1149999976158142,
        "val/retrieval/image_to_text/R1": 40.0,
        "train/loss": 1.0,
    }
    shown = headline(metrics)
    assert shown == {
        f"{SUMMARY}modality_gap": 0.115,
        f"{SUMMARY}retrieval/image_to_text/R1": 47.3,
    }
    lowercase_keys = sorted([*metrics, "data/skipped", "epoch"])
    assert sorted([*shown, *lowercase_keys])[:2] == list(shown)  # the UI sorts by code point


def test_description_says_how_to_rerun_what_changed_and_the_results(tmp_path):
    text = description(
        "python experiments/run.py experiments/clip.yaml optim.lr=3e-4",
        ["optim.lr=3e-4", "output_dir=/x"],
        "abc123",
        tmp_path,
        {"test/retrieval/mean_R1": float(np.float32(15.76)), "test/loss": 3.0},
        (4, "val/retrieval/mean_R1", float(np.float32(16.1))),
    )
    assert text.startswith("`python experiments/run.py experiments/clip.yaml optim.lr=3e-4`")
    assert "Overrides: `optim.lr=3e-4`" in text and "output_dir" not in text.split("\n")[2]
    assert "Best checkpoint: epoch 4, val/retrieval/mean_R1 = 16.1." in text
    assert "| retrieval/mean_R1 | 15.76 |" in text and "test/loss" not in text
    assert "percentages" in text
    assert "| test metric" not in description("c", [], "h", tmp_path)  # before testing


def test_ui_links_land_on_the_runs_table():
    assert ui_link("http://host:5000/", "3") == (
        "http://host:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert ui_link("sqlite:////x/mlflow.db", "3", "ab") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/ab?workflowType=machine_learning"
    )
