"""The shapes_salient family: the built-in background / target sets (deterministic; the
background images are the shapes scenes themselves, the targets the same scenes with a glyph
whose kind is the salient label), its batches, and the CelebA attribute-CSV source (official
SepCLR's accessories split) with its reader's one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.embedded.salient import SalientConfig, generate_split, glyph_mask
from datamodules.embedded.shapes import ShapesConfig
from datamodules.embedded.shapes import generate_split as shapes_split
from datamodules.errors import DataError
from datamodules.formats.celeba import read_attribute_table
from datamodules.shapes_salient import ShapesSalientDataConfig, ShapesSalientDataModule

SCENES = ShapesConfig(num_train=40, num_val=4, num_test=4, image_size=32)


def test_targets_are_the_scenes_with_a_glyph_and_backgrounds_the_plain_scenes():
    cfg = SalientConfig(SCENES, target_fraction=0.5, kinds=3)
    scenes, _ = shapes_split(SCENES, "train")
    images, group, salient = generate_split(cfg, scenes, "train")
    again = generate_split(cfg, scenes, "train")
    assert all(np.array_equal(a, b) for a, b in zip((images, group, salient), again, strict=True))
    assert group.sum() == 20 and set(salient[group == 0]) == {-1}
    assert set(salient[group == 1]) <= {0, 1, 2} and len(set(salient[group == 1])) == 3
    assert np.array_equal(images[group == 0], scenes[group == 0])
    changed = (images != scenes).any(axis=-1).sum(axis=(1, 2))[group == 1]
    strokes = [glyph_mask(k, 32).sum() for k in salient[group == 1]]
    # every stroke pixel brightened (a pixel already white may stay as it is)
    assert np.all(changed >= 0.9 * np.array(strokes)) and np.all(changed <= np.array(strokes))
    assert images[group == 1].mean() > scenes[group == 1].mean()
    other = generate_split(SalientConfig(SCENES, kinds=3, alpha=0.3), scenes, "train")
    assert np.array_equal(other[1], group) and not np.array_equal(other[0], images)


def test_batches_carry_views_and_the_salient_labels(tmp_path):
    cfg = ShapesSalientDataConfig(
        num_train=32, num_val=8, num_test=8, batch_size=8, image_size=32, cache_dir=str(tmp_path)
    )
    datamodule = ShapesSalientDataModule(cfg)
    datamodule.setup("fit")
    assert datamodule.labels == {"shape": 6, "color": 6, "count": 3, "group": 2, "salient": 4}
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image@0"].shape == batch["image@1"].shape == (8, 3, 32, 32)
    assert torch.equal(batch["label/salient"] >= 0, batch["label/group"] == 1)
    plain = next(iter(datamodule.probe_loader("train")))
    assert plain["image"].shape == (32, 3, 32, 32) and "image@0" not in plain
    with pytest.raises(ValueError, match="data.kinds must be in"):
        ShapesSalientDataConfig(salient_kinds=11)


def write_celeba(root: Path) -> None:
    (root / "img").mkdir(parents=True)
    rows = {  # file: (Eyeglasses, Wearing_Hat, Male), partition
        "000001.jpg": ((-1, -1, 1), 0),
        "000002.jpg": ((1, -1, -1), 0),
        "000003.jpg": ((-1, 1, 1), 0),
        "000004.jpg": ((1, 1, -1), 0),  # both accessories: left out
        "000005.jpg": ((1, -1, 1), 2),
    }
    for k, name in enumerate(rows):
        Image.new("RGB", (30, 40), (40 * k, 20, 200 - 40 * k)).save(root / "img" / name)
    attrs = ["File_name,Eyeglasses,Wearing_Hat,Male"]
    attrs += [f"{n},{','.join(map(str, v))}" for n, (v, _) in rows.items()]
    (root / "attrs.csv").write_text("\n".join(attrs) + "\n")
    parts = ["image_id,partition"] + [f"{n},{p}" for n, (_, p) in rows.items()]
    (root / "parts.csv").write_text("\n".join(parts) + "\n")


def celeba_config(root: Path) -> ShapesSalientDataConfig:
    return ShapesSalientDataConfig(
        format="celeba_attrs",
        root=str(root),
        attributes_file="attrs.csv",
        partition_file="parts.csv",
        images="img",
        image_size=24,
    )


def test_celeba_source_builds_the_official_accessories_split(tmp_path):
    write_celeba(tmp_path)
    datamodule = ShapesSalientDataModule(celeba_config(tmp_path))
    assert datamodule.labels == {"Male": 2, "group": 2, "salient": 2}
    train = datamodule.source.split("train")
    assert train.num_items == 3
    assert list(train.labels["group"]) == [0, 1, 1]
    assert list(train.labels["salient"]) == [-1, 0, 1]
    assert list(train.labels["Male"]) == [1, 0, 1]
    assert train.load(2)["image"].shape == (24, 24, 3)  # the centred 30 x 30 square, resized
    assert datamodule.source.split("test").num_items == 1


def test_reader_names_the_file_and_line_of_a_malformed_entry(tmp_path):
    table = tmp_path / "attrs.csv"
    table.write_text("File_name,Eyeglasses,Male\n\na.jpg,1,-1\nb.jpg,-1,1\n")
    read = read_attribute_table(table)
    assert read.files == ["a.jpg", "b.jpg"] and read.values.tolist() == [[1, -1], [-1, 1]]
    table.write_text("File_name,Eyeglasses,Male\na.jpg,1,-1\nb.jpg,yes,1\n")
    with pytest.raises(DataError, match=r"attrs.csv:3: values must be one of \[-1, 1\]") as err:
        read_attribute_table(table)
    assert "\n" not in str(err.value)
    table.write_text("File_name,Eyeglasses,Male\na.jpg,1\n")
    with pytest.raises(DataError, match=r"attrs.csv:2: expected a file name and 2 values"):
        read_attribute_table(table)
    write_celeba(tmp_path / "c")
    parts = tmp_path / "c" / "parts.csv"
    parts.write_text(parts.read_text().replace("000003.jpg,0", "000003.jpg,5"))
    with pytest.raises(DataError, match=r"parts.csv:4: values must be one of \[0, 1, 2\]"):
        ShapesSalientDataModule(celeba_config(tmp_path / "c")).source.split("train")
