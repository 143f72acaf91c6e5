"""Every experiments/*.yaml runs end to end on a tiny embedded dataset and lands in MLflow."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from experiments.config import load_experiment
from experiments.stages import run_experiment
from modules.base import load_module

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
YAMLS = sorted(p.name for p in EXPERIMENTS.glob("*.yaml") if p.name != "base.yaml")


#: Metrics each data family adds (pairs also get retrieval, alignment/uniformity and the gap).
FAMILY_METRICS = {
    "image_text": ["test/zero_shot/shape/accuracy"],
    "video_text": ["test/zero_shot/direction/accuracy"],
    "audio_visual": ["test/sync/accuracy", "test/sync/auroc", "test/active_speaker/accuracy"],
    "medical_report": ["test/zero_shot/effusion/auroc"],
    "shapes_views": ["test/knn/shape/accuracy", "test/linear_probe/color/accuracy"],
    "shapes_sounds": ["test/zero_shot/shape/accuracy", "test/retrieval/audio_to_text/R1"],
    "shapes_depth_sounds": ["test/retrieval/depth_to_audio/R1", "test/zero_shot/shape/accuracy"],
    "shapes_sizes": ["test/regression/size/MAE", "test/regression/size/few/MAE"],
    "timed_events": ["test/grounding/mIoU", "test/grounding/R1_IoU0.5"],
    # the audio-text geometry, and the mask grounding its one method (epcformer) asks for
    "referring_shapes": ["test/modality_gap", "test/mask_grounding/audio/accuracy"],
    "spoken_commands": ["test/retrieval/audio_to_text/R1"],
    "video_domains": ["test/classifier/video/action/accuracy"],
    "shapes_salient": ["test/linear_probe/color/accuracy", "test/knn/group/accuracy"],
    "shapes_domains": ["test/classifier/image/shape/accuracy"],
    "segmented_documents": ["test/segmentation/pk", "test/segmentation/windowdiff"],
    "text_corpus": ["test/generation/contrastive/rep2", "test/generation/isotropy"],
    "shapes_generators": [
        "test/open_world/source/known/accuracy",
        "test/open_world/source/novel/accuracy",
    ],
    "sentences": ["test/sts/spearman"],
    "tagged_captions": ["test/token_f1/target/f1", "test/token_f1/source/f1"],
    # by data.mode: word_translation (languages) or semantic_shift (periods); the tiny corpora
    # may hold no test word (tests/test_word_evaluators.py checks the evaluators' keys)
    "word_corpora": [],
    "definitions": ["test/sts/spearman"],
}
#: Families whose two encoders are not a retrieval pair (a query and its clip: grounding).
UNPAIRED = {"timed_events", "word_corpora"}


def stage_data(stage) -> str:
    """The data family a stage runs on (a chain's stages may differ: languagebind.yaml)."""
    return stage.plain["data"]["name"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One sqlite store and output folder for the module (creating a store costs seconds)."""
    return tmp_path_factory.mktemp("runs")


def tiny(store: Path, *extra: str) -> list[str]:
    return [
        "data.num_train=48",
        "data.num_val=8",
        "data.num_test=8",
        "data.batch_size=16",
        "data.eval_batch_size=32",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        f"output_dir={store / 'outputs'}",
        f"logger.tracking_uri=sqlite:///{store / 'mlflow.db'}",
        *extra,
    ]


#: Per-experiment overrides the tiny data needs (48 items cannot fill a batch of 16 per MCL
#: cluster; tests/test_mcl.py checks the clustered batches themselves).
TINY_EXTRA = {
    "mcl.yaml": ["stages.stage1.method.num_clusters=1", "stages.stage2.method.num_clusters=1"],
    "hycd_gap.yaml": [
        f"stages.{stage}.data.batch_size=16"
        for stage in ("finetune_small", "refine_small", "finetune_large", "refine_large")
    ],
    "languagebind.yaml": [  # its CLIP stage reads image_text: a data block of its own
        f"stages.pretrain.data.{key}"
        for key in (
            "num_train=48",
            "num_val=8",
            "num_test=8",
            "batch_size=16",
            "eval_batch_size=32",
        )
    ],
    # 16 intents in 4 tasks: 96 items give one batch of 16 per task, 32 give every intent
    # evaluation items
    "coconut.yaml": ["data.num_train=96", "data.num_val=32", "data.num_test=32"],
    # the tiny corpora's seed dictionary holds fewer pairs than a batch of 16
    # (and its stages set their own epochs: 5 and 30)
    "si_en_alignment.yaml": [
        "stages.align.data.batch_size=4",
        "stages.embed.trainer.max_epochs=1",
        "stages.align.trainer.max_epochs=2",
    ],
    # the bag-of-words coherence: loading the pretrained MiniLM would cost seconds here
    # (tests/test_causal_lm.py checks the generation metrics themselves)
    "contrastive_search.yaml": ["evaluation.options.generation.coherence=bow"],
    "structure.yaml": [
        "stages.structure.data.num_train=48",
        "stages.structure.trainer.max_epochs=1",
    ],
}


@pytest.mark.parametrize("name", YAMLS)
def test_experiment_runs_a_few_steps(name, store):
    overrides = tiny(store, f"logger.experiment_name=smoke-{name}", *TINY_EXTRA.get(name, []))
    stages = load_experiment(EXPERIMENTS / name, overrides)
    results = run_experiment(stages)
    assert [r.name for r in results] == [s.name for s in stages]
    for result, stage in zip(results, stages, strict=True):
        assert result.checkpoint.is_file()
        module = load_module(str(result.checkpoint))  # weights_only load, tokenizer included
        keys = list(FAMILY_METRICS[stage_data(stage)])
        if module.loss_on_eval:
            keys.append("test/loss")
        if len(module.modalities) == 2 and stage_data(stage) not in UNPAIRED:
            a, b = module.modalities
            keys += [
                f"test/retrieval/{a}_to_{b}/R1",
                f"test/retrieval/{b}_to_{a}/median_rank",
                "test/alignment",
                f"test/uniformity/{a}",
                "test/modality_gap",
                "test/modality_gap_raw",
            ]
        missing = [key for key in keys if key not in result.metrics]
        assert not missing, missing
        if "text" in module.towers:
            words = module.tokenizer.vocab[3:]
            assert len(words) > 10 and module.towers["text"].embed.num_embeddings == len(words) + 3
            embedded = module.encode_texts([" ".join(words[:4]), " ".join(words[4:9])])
            torch.testing.assert_close(embedded.norm(dim=-1), torch.ones(2))


def test_hycd_logs_a_parent_with_two_nested_stages_and_reuses_pretrain(store, caplog):
    overrides = tiny(store, "logger.experiment_name=chain")
    run_experiment(load_experiment(EXPERIMENTS / "hycd.yaml", overrides))
    with caplog.at_level(logging.INFO, logger="alignlab"):
        second = run_experiment(load_experiment(EXPERIMENTS / "hycd.yaml", overrides))
    assert second[0].cached and not second[1].cached
    assert "stage pretrain: reusing the finished stage" in caplog.text

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("chain")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2  # one per invocation
    latest = max(parents, key=lambda r: r.info.start_time)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == latest.info.run_id]
    assert sorted(r.data.tags["alignlab.stage"] for r in children) == ["pretrain", "refine"]
    by_stage = {r.data.tags["alignlab.stage"]: r for r in children}
    assert by_stage["pretrain"].data.tags["alignlab.cached"] == "true"
    refine = by_stage["refine"]
    assert refine.data.params["method.name"] == "clip_refine"
    assert refine.data.params["method.alpha"] == "0.5"
    for key in (
        "train/loss",
        "train/loss/rafa",
        "train/loss/hycd",
        "train/loss/clip",
        "val/retrieval/image_to_text/R1",
        "test/retrieval/text_to_image/R10",
        "test/alignment",
        "test/uniformity/text",
        "test/modality_gap",
        "test/zero_shot/color/accuracy",
    ):
        assert key in refine.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(refine.info.run_id)}
    assert "config.yaml" in artifacts
    plots = {a.path for a in client.list_artifacts(refine.info.run_id, "plots")}
    assert {"plots/similarity_matrix.png", "plots/embedding_pca.png"} <= plots
    assert "test/modality_gap" in latest.data.metrics


def test_a_stage_reuses_a_finished_stage_of_another_name_with_its_config(tmp_path, caplog):
    """clip.yaml's ``main`` and hycd.yaml's ``pretrain`` are one config (a stage's name is not
    part of its hash): the chain starts from the stage clip.yaml trained."""
    overrides = tiny(tmp_path, "logger.experiment_name=shared")
    (main,) = run_experiment(load_experiment(EXPERIMENTS / "clip.yaml", overrides))
    with caplog.at_level(logging.INFO, logger="alignlab"):
        pretrain, _ = run_experiment(load_experiment(EXPERIMENTS / "hycd.yaml", overrides))
    assert pretrain.cached and pretrain.hash == main.hash
    assert pretrain.checkpoint == main.checkpoint
    assert f"from {main.checkpoint.parent}" in caplog.text


def write_jsonl_dataset(root: Path) -> None:
    """Tiny real-format data: coloured squares with two captions each, three splits."""
    from PIL import Image

    colours = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220)}
    (root / "imgs").mkdir(parents=True)
    for split, count in (("train", 24), ("val", 6), ("test", 6)):
        lines = []
        for i in range(count):
            name, rgb = list(colours.items())[i % 3]
            path = f"imgs/{split}{i}.png"
            Image.new("RGB", (20, 20), rgb).save(root / path)
            lines.append(json.dumps({"image": path, "captions": [f"a {name} square", f"{name}"]}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_hycd_runs_on_a_jsonl_dataset_and_vit(store, tmp_path):
    """The real-format path through the whole chain (vocabulary carried into the refine stage)."""
    write_jsonl_dataset(tmp_path / "data")
    overrides = tiny(
        store,
        "data.format=jsonl",
        f"data.root={tmp_path / 'data'}",
        "data.image_size=32",
        "data.batch_size=8",
        "model.image={name: vit, patch_size: 8, width: 32, depth: 1, heads: 2}",
        "logger.experiment_name=jsonl",
    )
    pretrain, refine = run_experiment(load_experiment(EXPERIMENTS / "hycd.yaml", overrides))
    assert "test/retrieval/image_to_text/R1" in refine.metrics
    assert not any("zero_shot" in key for key in refine.metrics)  # real data: no label tasks
    vocab = load_module(str(pretrain.checkpoint)).tokenizer.vocab
    assert load_module(str(refine.checkpoint)).tokenizer.vocab == vocab
    assert set(vocab[3:]) == {"a", "square", "red", "green", "blue"}


def test_labelled_jsonl_gets_zero_shot_and_class_retrieval_with_short_epochs(store, tmp_path):
    """A user's small labelled JSONL dataset: 24 training images in batches of 8 (3 steps an
    epoch, fewer than the logging interval and the 50 warm-up steps) trains, logs its steps and
    reports zero-shot accuracy (prompt ensembles from templates) and class retrieval."""
    write_jsonl_dataset(tmp_path / "data")
    for split in ("train", "val", "test"):
        path = tmp_path / "data" / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            row["label"] = row["captions"][1]  # the colour name
        path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    overrides = tiny(
        store,
        "data.format=jsonl",
        f"data.root={tmp_path / 'data'}",
        "data.image_size=20",
        "data.batch_size=8",
        "trainer.limit_train_batches=null",
        "trainer.log_every_n_steps=50",
        "data.prompt_templates=['a {c} square', 'a photo of something {c}']",
        "logger.experiment_name=labelled",
    )
    (result,) = run_experiment(load_experiment(EXPERIMENTS / "clip.yaml", overrides))
    for key in (
        "test/zero_shot/label/accuracy",
        "test/class_retrieval/R1",
        "test/class_retrieval/mAP",
    ):
        assert key in result.metrics, key
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    logged = client.get_metric_history(result.run_id, "train/loss")
    # the interval is capped at the epoch's 3 steps: logged once in the 1-epoch run (an interval
    # of 50 would log nothing)
    assert [m.step for m in logged] == [2]
