"""Config loading: inheritance, overrides, named-block replacement and one-line errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.config import (
    ConfigError,
    config_hash,
    flatten,
    load_experiment,
    merge,
    parse_overrides,
    references,
)
from experiments.run import main
from experiments.stages import stage_hashes

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_child_overrides_parent_and_cli_overrides_both(tmp_path):
    write(tmp_path, "parent.yaml", "name: p\nmethod: {name: clip, label_smoothing: 0.1}\nseed: 3\n")
    child = write(tmp_path, "child.yaml", "base: parent.yaml\nname: c\noptim: {lr: 0.5}\n")
    (stage,) = load_experiment(child, ["seed=7", "method.label_smoothing=0.2"])
    assert stage.name == "main"
    assert stage.plain["name"] == "c"
    assert stage.plain["seed"] == 7
    assert stage.plain["optim"]["lr"] == 0.5
    assert stage.plain["method"]["label_smoothing"] == 0.2
    assert stage.plain["optim"]["weight_decay"] == 0.1  # dataclass default survives


def test_new_method_name_replaces_the_block():
    merged = merge(
        {"method": {"name": "clip", "label_smoothing": 0.1}}, {"method": {"name": "clip_refine"}}
    )
    assert merged == {"method": {"name": "clip_refine"}}
    merged = merge({"method": {"name": "clip", "a": 1}}, {"method": {"b": 2}})
    assert merged == {"method": {"name": "clip", "a": 1, "b": 2}}
    merged = merge({"name": "parent", "seed": 1}, {"name": "child"})  # the experiment's name
    assert merged == {"name": "child", "seed": 1}


def test_parse_overrides_types_and_nesting():
    out = parse_overrides(["a.b=1", "a.c=0.5", "d=abc", "e=[1, 2]", "f=null", "g=true"])
    assert out == {"a": {"b": 1, "c": 0.5}, "d": "abc", "e": [1, 2], "f": None, "g": True}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["novalue"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "method.alpha=0.3",
            "method.alpha: unknown key "
            "(known: chunk_elements, label_smoothing, loss_weights, name)",
        ),
        ("method.label_smoothing=abc", "method.label_smoothing: expected float, got 'abc'"),
        ("optim.lr=fast", "optim.lr: expected float, got 'fast'"),
        ("trainer.max_epoch=3", "trainer.max_epoch: unknown key"),
        (
            "method.name=nope",
            "method.name: unknown method 'nope'; known: align, alpro, ",
        ),
        (
            "model.image.name=resnet",
            "model.image.name: unknown tower 'resnet'; image towers: cnn, vit",
        ),
        (
            "model.image.name=transformer",
            "model.image.name: 'transformer' is a text tower; image towers: cnn, vit",
        ),
        (
            "data.name=imagenet",
            "data.name: unknown data 'imagenet'; known: audio_visual, ",
        ),
        ("model.audio.name=cnn", "model.audio.name: 'cnn' is an image tower; audio towers"),
        (
            "model.video.frame.name=transformer",
            "model.video.frame.name: 'transformer' is not an image tower",
        ),
        ("model.video.temporal=lstm", "model.video.temporal: expected one of"),
        ("model.video.frame.channelz=3", "model.video.frame.channelz: Key 'channelz'"),
        ("data.train_pairs=all", "data.train_pairs must be one of"),
        (
            "optim.micro_batch_size=48",
            "optim.micro_batch_size: must be a positive divisor of data.batch_size 128, got 48",
        ),
        ("optim.micro_batch_size=0", "optim.micro_batch_size: must be a positive divisor"),
        (
            "trainer.accumulate_grad_batches=4",
            "trainer.accumulate_grad_batches: not supported: summed gradients of k small "
            "contrastive batches",
        ),
    ],
)
def test_errors_name_the_key_path(override, message):
    with pytest.raises(ConfigError) as info:
        load_experiment(EXPERIMENTS / "clip.yaml", [override])
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_stage_errors_name_the_stage():
    with pytest.raises(
        ConfigError, match=r"^stages\.refine\.method\.alpha: expected float, got 'x'$"
    ):
        load_experiment(EXPERIMENTS / "hycd.yaml", ["stages.refine.method.alpha=x"])
    with pytest.raises(ConfigError, match="stages.refine.init_from: 'nowhere' is neither"):
        load_experiment(EXPERIMENTS / "hycd.yaml", ["stages.refine.init_from=nowhere"])


def test_missing_method_and_file(tmp_path):
    path = write(tmp_path, "x.yaml", "name: x\n")
    with pytest.raises(ConfigError, match="^method: missing required value$"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_experiment(tmp_path / "nope.yaml")
    path = write(tmp_path, "y.yaml", "method: {name: clip}\n")
    with pytest.raises(ConfigError, match="^name: missing required value$"):
        load_experiment(path)


def test_base_loop_is_reported(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    path = write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_experiment(path)


def test_hycd_chains_pretrain_then_refine_with_paper_defaults():
    pretrain, refine = load_experiment(EXPERIMENTS / "hycd.yaml")
    assert (pretrain.name, refine.name) == ("pretrain", "refine")
    assert pretrain.plain["method"]["name"] == "clip"
    method = refine.plain["method"]
    assert method["name"] == "clip_refine"
    assert (method["alpha"], method["t_kd"]) == (0.5, 1.0)
    assert method["loss_weights"] == {"clip": 0.0, "rafa": 1.0, "hycd": 1.0}
    assert refine.plain["init_from"] == refine.plain["teacher_from"] == "pretrain"
    assert refine.plain["trainer"]["max_epochs"] == 1


def test_hash_ignores_logging_but_not_training_keys():
    (a,) = load_experiment(EXPERIMENTS / "clip.yaml")
    (b,) = load_experiment(
        EXPERIMENTS / "clip.yaml", ["logger.experiment_name=other", "output_dir=x"]
    )
    (c,) = load_experiment(EXPERIMENTS / "clip.yaml", ["optim.lr=0.01"])
    assert config_hash(a.plain) == config_hash(b.plain)
    assert config_hash(a.plain) != config_hash(c.plain)
    assert config_hash(a.plain) != config_hash(a.plain, ["init_from:abc"])


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": {},
    }


def test_main_prints_one_line_and_returns_2(capsys):
    assert main([str(EXPERIMENTS / "clip.yaml"), "optim.lr=abc"]) == 2
    err = capsys.readouterr().err
    assert err == "config error: optim.lr: expected float, got 'abc'\n"


def test_cli_exit_code_2_without_traceback():
    proc = subprocess.run(
        [
            sys.executable,
            str(EXPERIMENTS / "run.py"),
            str(EXPERIMENTS / "clip.yaml"),
            "method.alpha=0.5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "config error: method.alpha: unknown key "
        "(known: chunk_elements, label_smoothing, loss_weights, name)"
    ]


def test_cli_scalar_block_stops_before_any_work(tmp_path):
    """``method=clip`` (a scalar where the method's block belongs): one line, exit 2, quickly,
    and nothing written (no data, stage directory or MLflow run)."""
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(EXPERIMENTS / "run.py"),
            str(EXPERIMENTS / "clip.yaml"),
            "method=clip",
            f"output_dir={tmp_path / 'outputs'}",
            f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "config error: method: expected a block of keys (method.name=..., ...), "
        "got the scalar 'clip'"
    ]
    assert time.monotonic() - start < 60  # imports only: no data, no trainer
    assert list(tmp_path.iterdir()) == []


def test_stage_references_per_tower_and_features_from(tmp_path):
    chain = write(
        tmp_path,
        "chain.yaml",
        f"base: {EXPERIMENTS / 'base.yaml'}\nname: chain\n"
        "stages:\n"
        "  a: {method: {name: clip}}\n"
        "  b: {method: {name: clip}, seed: 1}\n"
        "  c:\n"
        "    method: {name: mcl}\n"
        "    init_from: {image: a, text: b}\n"
        "    features_from: [a, b]\n"
        "    model: {frozen: [text]}\n",
    )
    a, b, c = load_experiment(chain)
    assert references(c.plain) == [
        ("init_from.image", "a"),
        ("init_from.text", "b"),
        ("features_from[0]", "a"),
        ("features_from[1]", "b"),
    ]
    hashes = stage_hashes([a, b, c])
    changed = stage_hashes(load_experiment(chain, ["stages.b.seed=2"]))
    assert changed["c"] != hashes["c"]  # c's hash follows the stages it reads
    with pytest.raises(ConfigError, match=r"stages.c.features_from\[1\]: 'zz' is neither"):
        load_experiment(chain, ["stages.c.features_from=[a,zz]"])
    with pytest.raises(ConfigError, match="init_from.sound: unknown modality"):
        load_experiment(chain, ["stages.c.init_from={sound: a}"])
    with pytest.raises(ConfigError, match="model.frozen: unknown modality 'txt'"):
        load_experiment(chain, ["stages.c.model.frozen=[txt]"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structure_source_stages_differ_for_every_experiment_seed(seed):
    """The two 'never trained together' CLIP runs of structure.yaml must be two runs: their
    stage configs (and so their cached checkpoints) differ whatever seed=N the user gives."""
    from experiments.config import REPO_ROOT

    stages = load_experiment(REPO_ROOT / "experiments" / "structure.yaml", [f"seed={seed}"])
    by_name = {s.name: s.plain for s in stages}
    assert by_name["img_src"]["seed"] == by_name["txt_src"]["seed"] == seed
    hashes = stage_hashes(stages)
    assert hashes["img_src"] != hashes["txt_src"]
