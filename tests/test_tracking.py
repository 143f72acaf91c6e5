"""Tracker bookkeeping on a local store: params are the flattened config, long values cut to
MLflow's limit instead of failing the run."""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from experiments.tracking import Tracker


def test_params_are_flattened_and_long_values_truncated(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "params")
    run_id = tracker.start_run("clip-image_text-abc", {"alignlab.method": "clip"})
    long_list = list(range(5000))  # str() is ~29k characters
    config = {"optim": {"lr": 0.001, "betas": [0.9, 0.98]}, "data": {"classes": long_list}}
    tracker.log_params(run_id, config)
    tracker.finish(run_id, True)
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params["optim.lr"] == "0.001"
    assert run.data.params["optim.betas"] == "[0.9, 0.98]"
    value = run.data.params["data.classes"]
    assert len(value) == MAX_PARAM_VAL_LENGTH and str(long_list).startswith(value)
    assert run.data.tags["alignlab.method"] == "clip" and "alignlab.command" in run.data.tags
    assert run.info.run_name == "clip-image_text-abc" and run.info.status == "FINISHED"


def test_two_runs_racing_to_create_the_experiment_share_it(tmp_path, monkeypatch):
    """Seeds launched together on a fresh store: the second sees no experiment, then loses the
    race to create it, and must use the winner's instead of failing."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker(uri, "race")
    real = MlflowClient.get_experiment_by_name
    calls = []

    def not_yet_there(self, name):
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", not_yet_there)
    second = Tracker(uri, "race")
    assert second.experiment_id == first.experiment_id and len(calls) == 2
