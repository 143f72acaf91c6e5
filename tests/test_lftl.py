"""LFTL (modules/lftl.py) and its data (datamodules/shapes_domains.py): the two-domain shapes
generator and its domain selection, the Office / VisDA image-list reader (a malformed line is a
one-line DataError naming file and line), the query rounds (replayed the same in every stage,
never re-querying an item, seeded), and a round's loss reading only the queried items' labels.
The losses themselves: tests/test_losses_lftl.py."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.embedded.shape_domains import ShapeDomainsConfig, generate
from datamodules.errors import DataError
from datamodules.formats.da_lists import read_image_list
from datamodules.shapes_domains import ShapesDomainsDataConfig, ShapesDomainsDataModule
from experiments.config import load_experiment
from experiments.stages import build, fit_context
from modules.lftl import LFTL, LFTLConfig

YAML = Path(__file__).resolve().parents[1] / "experiments" / "lftl.yaml"
TINY = ["data.num_train=60", "data.num_val=8", "data.num_test=8", "data.batch_size=16"]


@pytest.fixture(scope="module")
def chain():
    """The datamodule of a round (pool of 60) and a factory of fresh modules with random
    towers (one build; copies re-initialised with their own seeds)."""
    torch.manual_seed(0)
    plain = load_experiment(YAML, [*TINY, "method.budget=0.1"])[-1].plain
    datamodule, module = build(plain)

    def fresh(seed: int, **method) -> LFTL:
        copy_ = copy.deepcopy(module)
        copy_.method_cfg = replace(module.method_cfg, **method)
        torch.manual_seed(seed)
        for layer in copy_.modules():
            if hasattr(layer, "reset_parameters") and layer is not copy_:
                layer.reset_parameters()
        return copy_

    return datamodule, fresh


def prepared(chain, rounds: int, strategy: str = "lftl", seed: int = 0):
    """A round-``rounds`` module prepared with ``rounds`` earlier models (random towers), and
    those models."""
    datamodule, fresh = chain
    module = fresh(99, strategy=strategy)
    earlier = [fresh(100 + k).eval() for k in range(rounds)]
    torch.manual_seed(seed)
    module.prepare_fit(fit_context(datamodule, earlier))
    return module, earlier


def test_generator_is_deterministic_and_the_domains_differ_in_background_only() -> None:
    cfg = ShapeDomainsConfig(num_train=30, num_val=4, num_test=4)
    source, labels = generate(cfg, "train", "source")
    again, labels_again = generate(cfg, "train", "source")
    target, target_labels = generate(cfg, "train", "target")
    assert np.array_equal(source, again) and np.array_equal(labels["shape"], labels_again["shape"])
    assert source.shape == (30, 32, 32, 3) and set(labels["shape"]) <= set(range(6))
    assert target.mean() > source.mean() + 40  # bright striped colour vs dark grey
    assert not np.array_equal(labels["shape"], target_labels["shape"])  # drawn independently


def test_data_selects_the_training_and_evaluation_domains(tmp_path: Path) -> None:
    def images(domain: str, eval_domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = ShapesDomainsDataConfig(
            num_train=12,
            num_val=4,
            num_test=4,
            domain=domain,
            eval_domain=eval_domain,
            cache_dir=str(tmp_path),
        )
        dm = ShapesDomainsDataModule(cfg)
        dm.prepare_data()
        dm.setup()
        train = next(iter(dm.ordered_loader("train")))["image"]
        return train, next(iter(dm.test_dataloader()))["image"]

    src_train, tgt_test = images("source", "target")
    tgt_train, src_test = images("target", "source")
    assert tgt_train.mean() > src_train.mean() + 0.3 and tgt_test.mean() > src_test.mean() + 0.3
    with pytest.raises(ValueError, match="data.domain"):
        ShapesDomainsDataConfig(domain="other")


def test_image_list_reader_and_a_malformed_line(tmp_path: Path) -> None:
    (tmp_path / "images" / "amazon").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "images" / "amazon" / name)
    good = tmp_path / "amazon_list.txt"
    good.write_text("amazon/a.jpg 0\n\namazon/b.jpg 3\n")
    listed = read_image_list(good, tmp_path / "images")
    assert listed.labels == [0, 3] and listed.paths[1] == tmp_path / "images" / "amazon" / "b.jpg"
    bad = tmp_path / "webcam_list.txt"
    bad.write_text("amazon/a.jpg 0\namazon/b.jpg three\n")
    with pytest.raises(DataError, match=r"webcam_list.txt:2: label 'three'") as err:
        read_image_list(bad, tmp_path / "images")
    assert "\n" not in str(err.value)
    bad.write_text("amazon/a.jpg\n")
    with pytest.raises(DataError, match=r"webcam_list.txt:1: expected '<path> <label>'"):
        read_image_list(bad, tmp_path / "images")
    cfg = ShapesDomainsDataConfig(
        format="image_list",
        root=str(tmp_path),
        source_list="amazon_list.txt",
        target_list="amazon_list.txt",
        images="images",
        class_names=list("abcd"),
        image_size=24,
        num_workers=0,
        domain="target",
    )
    dm = ShapesDomainsDataModule(cfg)
    dm.setup()
    batch = next(iter(dm.ordered_loader("train")))
    assert batch["image"].shape == (2, 3, 24, 24) and batch["label/shape"].tolist() == [0, 3]


def test_rounds_replay_the_same_queries_and_never_requery(chain) -> None:
    first, _ = prepared(chain, 1)
    second, _ = prepared(chain, 2)
    n = round(0.1 * 60)
    assert int(first.labelled.sum()) == n and int(second.labelled.sum()) == 2 * n
    assert bool((second.labelled | first.labelled).eq(second.labelled).all())  # round 1 kept
    again, _ = prepared(chain, 2, seed=0)
    assert torch.equal(again.labelled, second.labelled)


def test_strategies_differ_and_random_follows_the_seed(chain) -> None:
    queried = {s: prepared(chain, 1, s)[0].labelled for s in ("lftl", "random", "entropy")}
    assert not torch.equal(queried["lftl"], queried["random"])
    assert not torch.equal(queried["entropy"], queried["random"])
    assert not torch.equal(prepared(chain, 1, "random", seed=1)[0].labelled, queried["random"])
    with pytest.raises(ValueError, match="strategy"):
        LFTLConfig(strategy="margin")


def _terms(module: LFTL, batch: dict) -> dict:
    """One step's loss terms, the labelled batch drawn afresh from the same seed."""
    module.generator.manual_seed(3)
    module.order = module.order[:0]
    return module.losses(batch, module.encode(batch))


def test_a_round_reads_only_the_queried_labels(chain) -> None:
    datamodule = chain[0]
    module, _ = prepared(chain, 1)
    module.train()
    batch = next(iter(datamodule.train_dataloader()))
    memory = module.anchors["memory"].clone()
    plain = _terms(module, batch)
    module.anchors["memory"] = memory.clone()
    shuffled = _terms(module, {**batch, "label/shape": (batch["label/shape"] + 1) % 6})
    for key in ("ce", "im", "vpa"):  # the pool batch's labels are never read
        assert torch.allclose(plain[key], shuffled[key])
    assert plain["vpa"] > 0 and torch.isfinite(plain["im"])
    module.anchors["memory"] = memory.clone()
    module.anchors["label"] = (module.anchors["label"] + 1) % 6  # the queried labels are
    assert not torch.allclose(_terms(module, batch)["ce"], plain["ce"])


def test_the_source_stage_trains_on_every_label_and_the_classifier_carries_over(chain) -> None:
    datamodule, fresh = chain
    module = fresh(1).train()
    batch = next(iter(datamodule.train_dataloader()))
    terms = module.losses(batch, module.encode(batch))
    assert terms["ce"] > 0 and terms["im"] == 0 and terms["vpa"] == 0
    round2, earlier = prepared(chain, 2)
    assert torch.equal(round2.classifier.weight, earlier[-1].classifier.weight)
    assert not torch.equal(round2.classifier.weight, earlier[0].classifier.weight)
