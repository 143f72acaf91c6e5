"""Load-time checks of experiments/config.py: a scalar where a block belongs, values out of
range, trainer settings this machine or Lightning cannot run, tracking URI schemes and keys
repeated in one YAML mapping. Each error is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.config import ConfigError, load_experiment, precisions

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CLIP = EXPERIMENTS / "clip.yaml"


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    """The one-line ConfigError that loading ``path`` with ``overrides`` raises."""
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine without CUDA or MPS, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("override", "first", "got"),
    [
        ("method=clip", "name", "the scalar 'clip'"),
        ("data=5", "name", "the scalar 5"),
        ("trainer=fast", "max_epochs", "the scalar 'fast'"),
        ("optim=1", "lr", "the scalar 1"),
        ("model.image=cnn", "name", "the scalar 'cnn'"),
        ("data.augment=3", "train", "the scalar 3"),
        ("method=null", "name", "null"),
        ("method=[1, 2]", "name", "the list [1, 2]"),
    ],
)
def test_a_scalar_where_a_block_belongs(override, first, got):
    key = override.split("=")[0]
    assert error_of(CLIP, [override]) == (
        f"{key}: expected a block of keys ({key}.{first}=..., ...), got {got}"
    )


def test_a_single_value_where_a_list_belongs():
    assert error_of(CLIP, ["optim.betas=3"]) == "optim.betas: expected a list, got 3"
    assert error_of(CLIP, ["model.frozen=text"]) == "model.frozen: expected a list, got 'text'"


def test_a_scalar_block_in_a_yaml_file_and_in_a_stage(tmp_path):
    path = write(tmp_path, f"base: {CLIP}\ntrainer: fast\n")
    assert error_of(path).startswith("trainer: expected a block of keys (trainer.max_epochs=")
    path = write(tmp_path, f"base: {CLIP}\nmethod: clip\n")
    assert error_of(path) == (
        "method: expected a block of keys (method.name=..., ...), got the scalar 'clip'"
    )
    assert error_of(EXPERIMENTS / "hycd.yaml", ["stages.refine.method=clip_refine"]) == (
        "stages.refine.method: expected a block of keys (method.name=..., ...), "
        "got the scalar 'clip_refine'"
    )


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.batch_size=0",
            "data.batch_size and data.eval_batch_size must be positive, got 0 and 256",
        ),
        (
            "data.eval_batch_size=-4",
            "data.batch_size and data.eval_batch_size must be positive, got 128 and -4",
        ),
        ("data.batch_size=2.5", "data.batch_size: expected integer, got 2.5"),
        ("data.num_workers=-1", "data.num_workers must be >= 0, got -1"),
        ("optim.lr=0", "optim.lr: must be > 0, got 0.0 (a zero learning rate trains nothing)"),
        ("optim.lr=-0.1", "optim.lr: must be > 0, got -0.1"),
        ("model.temperature=0", "model.temperature: must be > 0, got 0.0"),
        ("model.embed_dim=0", "model.embed_dim: must be > 0, got 0"),
        ("model.max_logit_scale=-1", "model.max_logit_scale: must be > 0, got -1.0"),
        ("optim.weight_decay=-0.1", "optim.weight_decay: must be >= 0, got -0.1"),
        ("optim.warmup_steps=-1", "optim.warmup_steps: must be >= 0, got -1"),
        ("trainer.num_nodes=0", "trainer.num_nodes: must be >= 1, got 0"),
        (
            "trainer.max_epochs=0",
            "trainer.max_epochs: 0 trains nothing; set it >= 1, or set init_from "
            "(a stage or checkpoint) for an evaluation-only stage",
        ),
        ("trainer.max_steps=0", "trainer.max_steps: 0 trains nothing"),
        ("trainer.max_epochs=-2", "trainer.max_epochs: must be -1 (no limit) or >= 0, got -2"),
        (
            "trainer.precision=fp16",
            "trainer.precision: 'fp16' is not a Lightning precision; known: 16, 16-mixed, 16-true,",
        ),
        ("trainer.precision=17", "trainer.precision: '17' is not a Lightning precision"),
    ],
)
def test_values_out_of_range(override, message):
    assert error_of(CLIP, [override]).startswith(message)


def test_an_evaluation_only_stage_may_train_zero_epochs():
    stages = load_experiment(EXPERIMENTS / "clip_mea.yaml")
    baseline = next(s for s in stages if s.name == "baseline")
    assert baseline.plain["trainer"]["max_epochs"] == 0
    assert error_of(EXPERIMENTS / "clip_mea.yaml", ["stages.baseline.init_from=null"]).startswith(
        "stages.baseline.trainer.max_epochs: 0 trains nothing"
    )


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "bf16", "16", "32", "64-true"])
def test_lightning_precisions_load(precision):
    assert precision in precisions()
    (stage,) = load_experiment(CLIP, [f"trainer.precision={precision}"])
    assert stage.plain["trainer"]["precision"] == precision


# ----------------------------------------------------------------------------- accelerator, devices


@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "mps"])
def test_an_accelerator_this_machine_lacks(no_gpu, accelerator):
    assert error_of(CLIP, [f"trainer.accelerator={accelerator}"]) == (
        f"trainer.accelerator: {accelerator!r} is not available on this machine; "
        "use accelerator=cpu (or auto: the best one found)"
    )


def test_accelerators_that_always_or_here_run(no_gpu, monkeypatch):
    for accelerator in ("cpu", "auto"):
        load_experiment(CLIP, [f"trainer.accelerator={accelerator}"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for accelerator in ("gpu", "cuda"):
        load_experiment(CLIP, [f"trainer.accelerator={accelerator}", "trainer.devices=[0, 1]"])
    assert error_of(CLIP, ["trainer.accelerator=gpuu"]).startswith(
        "trainer.accelerator: unknown 'gpuu'; known: auto, cpu, cuda, gpu, mps"
    )


@pytest.mark.parametrize(
    ("accelerator", "devices"),
    [("cpu", "2"), ("cpu", "auto"), ("auto", "-1"), ("auto", "[0, 1]"), ("auto", "'0,1'")],
)
def test_devices_lightning_takes(accelerator, devices):
    load_experiment(CLIP, [f"trainer.accelerator={accelerator}", f"trainer.devices={devices}"])


@pytest.mark.parametrize(
    ("accelerator", "devices", "message"),
    [
        (
            "cpu",
            "0",
            "a positive number of processes or 'auto' (accelerator cpu has no indices), got 0",
        ),
        ("cpu", "-1", "a positive number of processes or 'auto'"),
        ("cpu", "[0, 1]", "a positive number of processes or 'auto'"),
        (
            "auto",
            "0",
            "a positive number of devices, -1 (all), 'auto' or a list of device indices, got 0",
        ),
        ("auto", "true", "a positive number of devices, -1 (all), 'auto' or a list"),
        ("auto", "[]", "a positive number of devices, -1 (all), 'auto' or a list"),
        ("auto", "[0, 0]", "a positive number of devices, -1 (all), 'auto' or a list"),
    ],
)
def test_devices_lightning_refuses(accelerator, devices, message):
    overrides = [f"trainer.accelerator={accelerator}", f"trainer.devices={devices}"]
    assert error_of(CLIP, overrides).startswith(f"trainer.devices: expected {message}")


# ----------------------------------------------------------------------------- tracking URI


@pytest.mark.parametrize(
    "uri",
    [
        "null",
        "''",
        "sqlite:////tmp/mlflow.db",
        "file:/tmp/mlruns",
        "/tmp/mlruns",
        "http://127.0.0.1:5000",
        "https://mlflow.example.org",
        "databricks",
        "postgresql://user@host:5432/mlflow",
        "mysql+pymysql://user@host/mlflow",
    ],
)
def test_tracking_uris_mlflow_takes(uri):
    load_experiment(CLIP, [f"logger.tracking_uri={uri}"])


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("htp://host", "unknown scheme 'htp' in 'htp://host'"),
        ("sqlte:///x", "unknown scheme 'sqlte' in 'sqlte:///x'"),
        (
            "mlruns",
            "'mlruns' has no scheme (a relative path would change with the current directory)",
        ),
    ],
)
def test_a_misspelt_tracking_uri(uri, problem):
    assert error_of(CLIP, [f"logger.tracking_uri={uri}"]) == (
        f"logger.tracking_uri: {problem}; expected http://, https://, file:, sqlite:///, "
        "postgresql://, mysql://, mssql://, databricks or an absolute path (null: the local store)"
    )


# ----------------------------------------------------------------------------- duplicate keys


def test_a_key_twice_in_one_mapping(tmp_path):
    path = write(tmp_path, f"base: {CLIP}\nseed: 1\nname: a\nseed: 2\n")
    assert error_of(path) == f"{path} line 4: key 'seed' appears twice"


def test_a_nested_key_twice_and_in_a_parent_file(tmp_path):
    parent = write(
        tmp_path,
        f"base: {CLIP}\ntrainer:\n  max_epochs: 1\n  devices: 1\n  max_epochs: 2\n",
        "parent.yaml",
    )
    assert error_of(parent) == f"{parent} line 5: key 'max_epochs' appears twice"
    child = write(tmp_path, "base: parent.yaml\nname: c\n", "child.yaml")
    assert error_of(child) == f"{parent} line 5: key 'max_epochs' appears twice"
    flow = write(tmp_path, f"base: {CLIP}\nmethod: {{name: clip, name: align}}\n", "flow.yaml")
    assert error_of(flow) == f"{flow} line 2: key 'name' appears twice"


def test_the_same_key_in_different_mappings_and_merge_keys_are_fine(tmp_path):
    path = write(
        tmp_path,
        f"base: {CLIP}\n"
        "trainer: &short {max_epochs: 1, devices: 1}\n"
        "stages:\n"
        "  a: {trainer: {max_epochs: 2}}\n"
        "  b:\n"
        "    trainer:\n"
        "      <<: *short\n"
        "      max_epochs: 3\n",
    )
    a, b = load_experiment(path)
    assert (a.plain["trainer"]["max_epochs"], b.plain["trainer"]["max_epochs"]) == (2, 3)


def test_a_key_twice_in_an_override():
    assert error_of(CLIP, ["method={name: clip, name: align}"]) == (
        "override 'method={name: clip, name: align}': key 'name' appears twice"
    )


# ----------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize(
    "path",
    sorted(p.name for p in EXPERIMENTS.glob("*.yaml") if p.name != "base.yaml"),
)
def test_every_shipped_experiment_loads(path):
    assert load_experiment(EXPERIMENTS / path)
