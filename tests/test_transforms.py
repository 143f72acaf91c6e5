"""Albumentations pipelines from YAML lists, the uint8 -> tensor conversion, and augmentation
inside the image-text datamodule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from datamodules import ImageTextDataConfig, ImageTextDataModule
from datamodules.transforms import AugmentConfig, ImageTransform, build_transforms, to_tensor
from tests.tiny_modules import setup_with_words

YAML = """
augment:
  - {name: HorizontalFlip, p: 1.0}
  - name: OneOf
    p: 1.0
    transforms:
      - {name: VerticalFlip, p: 1.0}
  - {name: GaussNoise, std_range: [0.1, 0.2], p: 0.0}
"""


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)


def test_pipeline_from_yaml_list(image):
    steps = OmegaConf.create(YAML).augment  # a ListConfig of DictConfigs, as from a config
    pipeline = build_transforms(steps)
    out = pipeline(image=image)["image"]
    assert np.array_equal(out, image[::-1, ::-1])  # both flips ran, noise had p=0
    assert build_transforms([]) is None and build_transforms(None) is None


def test_unknown_or_malformed_step(image):
    with pytest.raises(
        ValueError,
        match="unknown albumentations transform 'HorizontalFlp'.*did you mean HorizontalFlip",
    ):
        build_transforms([{"name": "HorizontalFlp"}])
    with pytest.raises(ValueError, match="unknown albumentations transform 'np'"):
        build_transforms([{"name": "np"}])  # an attribute of albumentations, not a transform
    with pytest.raises(ValueError, match="'name'"):
        build_transforms([{"p": 0.5}])


def test_to_tensor_matches_a_reference(image):
    tensor = to_tensor(image)
    reference = torch.empty(3, 12, 10)
    for c in range(3):
        for y in range(12):
            for x in range(10):
                reference[c, y, x] = (float(image[y, x, c]) - 127.5) / 127.5
    assert tensor.dtype == torch.float32 and torch.allclose(tensor, reference, atol=1e-6)
    assert to_tensor(np.full((1, 1, 3), 255, np.uint8)).eq(1).all()
    assert to_tensor(np.zeros((1, 1, 3), np.uint8)).eq(-1).all()
    frozen = image.copy()
    frozen.flags.writeable = False
    assert torch.equal(to_tensor(frozen), tensor)


def test_shape_changing_augmentation_is_rejected(image):
    with pytest.raises(ValueError, match="changed the image shape"):
        ImageTransform([{"name": "Resize", "height": 8, "width": 8}])(image)
    same = ImageTransform([{"name": "Resize", "height": 12, "width": 10}])(image)
    assert same.shape == (3, 12, 10)


def test_datamodule_augments_training_only(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    augment = AugmentConfig(train=[{"name": "HorizontalFlip", "p": 1.0}])
    cfg = ImageTextDataConfig(num_train=8, num_val=4, num_test=4, augment=augment, batch_size=4)
    dm = ImageTextDataModule(cfg)
    setup_with_words(dm, "fit")
    plain = ImageTextDataModule(ImageTextDataConfig(num_train=8, num_val=4, num_test=4))
    setup_with_words(plain, "fit")
    for i in range(3):
        flipped, raw = dm.datasets["train"][i]["image"], plain.datasets["train"][i]["image"]
        assert torch.equal(flipped, raw.flip(-1)) and not torch.equal(flipped, raw)
        assert torch.equal(dm.datasets["val"][i]["image"], plain.datasets["val"][i]["image"])


def _train_batches(seed: int, workers: int, augment: AugmentConfig) -> list[dict]:
    """The training batches of one epoch of a fresh datamodule (torch seeded with ``seed``, as
    a run seeds it, for the draws made in the main process)."""
    torch.manual_seed(seed)
    cfg = ImageTextDataConfig(
        num_train=16,
        num_val=4,
        num_test=4,
        batch_size=4,
        num_workers=workers,
        seed=seed,
        augment=augment,
    )
    dm = ImageTextDataModule(cfg)
    setup_with_words(dm, "fit")
    return list(dm.train_dataloader())


@pytest.mark.parametrize("workers", [0, 2])
def test_augmentation_draws_repeat_for_a_seed(tmp_path, monkeypatch, workers):
    """Random augmentation is seeded from torch's seed, not left to albumentations' own
    OS-seeded generator: the same seed gives the same crops, another seed others; the caption
    draws are those of the data without augmentation."""
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    crop = {"name": "RandomResizedCrop", "size": [64, 64], "scale": [0.2, 1.0]}
    augment = AugmentConfig(train=[crop])
    first, again = _train_batches(0, workers, augment), _train_batches(0, workers, augment)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again, strict=True))
    other = _train_batches(1, workers, augment)
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, other, strict=True))
    plain = _train_batches(0, workers, AugmentConfig())
    assert all(torch.equal(a["index"], b["index"]) for a, b in zip(first, plain, strict=True))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, plain, strict=True))


def test_evaluation_augmentation_is_fixed_per_item(tmp_path, monkeypatch):
    """An evaluation augmentation is drawn from the item id: the same every time."""
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    crop = {"name": "RandomResizedCrop", "size": [64, 64], "scale": [0.2, 1.0]}
    cfg = ImageTextDataConfig(
        num_train=8, num_val=4, num_test=4, augment=AugmentConfig(eval=[crop])
    )
    dm, again = ImageTextDataModule(cfg), ImageTextDataModule(cfg)
    setup_with_words(dm, "validate")
    setup_with_words(again, "validate")
    val = dm.datasets["val"]
    assert torch.equal(val[0]["image"], again.datasets["val"][0]["image"])
    assert torch.equal(val[0]["image"], val[0]["image"])
