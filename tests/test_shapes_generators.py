"""The open-world attribution family (datamodules/shapes_generators.py): the synthetic
generators' fingerprints, the known / novel / labelled split, batches with the ``labelled``
flag, and the OW-DFA meta CSV reader (a malformed row is a one-line DataError naming file and
line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.embedded.shape_generators import (
    FINGERPRINTS,
    GENERATORS,
    GeneratorsConfig,
    fingerprinted,
)
from datamodules.embedded.shapes import ShapesConfig
from datamodules.errors import DataError
from datamodules.formats.owdfa import read_meta
from datamodules.shapes_generators import ShapesGeneratorsDataConfig, ShapesGeneratorsDataModule

A = 4.0


def noisy(seed: int = 0, n: int = 2, size: int = 24) -> np.ndarray:
    """Grey images with the scenes' background noise (uniform +-8 around 60)."""
    grey = np.random.default_rng(seed).integers(52, 69, (n, size, size, 1)).astype(np.float32)
    return np.repeat(grey, 3, axis=3)


def test_each_fingerprint_leaves_its_own_faint_trace() -> None:
    x, rng = noisy(), np.random.default_rng(0)
    out = {name: fp(x, A, rng) for name, fp in FINGERPRINTS.items()}
    i, j = np.indices(x.shape[1:3])
    sign = np.where((i + j) % 2 == 0, 1.0, -1.0)[None, :, :, None]
    assert np.allclose((out["checkerboard"] - x) * sign, A)
    noise = out["channel_noise"] - x
    assert np.all(noise[..., :2] == 0) and 0.8 * A < noise[..., 2].std() < 1.2 * A
    assert out["blur"].std() < 0.5 * x.std()
    assert np.allclose(out["stripes"] - x, A * np.cos(np.pi * i / 2)[None, :, :, None])
    assert np.allclose(out["quantise"] % (2 * A), 0)
    up = out["upsample"]
    assert np.allclose(up[:, ::2, ::2], up[:, 1::2, 1::2]) and not np.allclose(up, x)
    for name in ("checkerboard", "channel_noise", "stripes", "quantise"):  # faint: below the noise
        assert np.abs(out[name] - x).mean() <= A, name


def test_sources_known_first_labelled_only_among_known_in_training() -> None:
    cfg = GeneratorsConfig(scenes=ShapesConfig(num_train=120, image_size=24), num_known=3)
    scenes = np.zeros((120, 24, 24, 3), np.uint8) + 60
    images, record = fingerprinted(cfg, scenes, "train")
    again, record_again = fingerprinted(cfg, scenes, "train")
    assert np.array_equal(images, again) and record == record_again  # deterministic
    source, labelled = np.array(record["source"]), np.array(record["labelled"], bool)
    assert np.bincount(source).tolist() == [20] * len(GENERATORS)  # balanced
    assert (source[labelled] < 3).all() and labelled.sum() == 30  # half of the 60 known
    _, val = fingerprinted(cfg, scenes[:12], "val")
    assert not any(val["labelled"])


@pytest.fixture(scope="module")
def datamodule() -> ShapesGeneratorsDataModule:
    cfg = ShapesGeneratorsDataConfig(
        num_train=48, num_val=12, num_test=12, image_size=24, batch_size=16, eval_batch_size=12
    )
    dm = ShapesGeneratorsDataModule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_batches_carry_the_source_and_the_labelled_flag(datamodule) -> None:
    assert datamodule.labels == {"source": 6} and datamodule.known_classes == {"source": 3}
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (16, 3, 24, 24)
    assert batch["labelled"].dtype == torch.bool and batch["labelled"].any()
    assert (batch["label/source"][batch["labelled"]] < 3).all()
    val = next(iter(datamodule.val_dataloader()))
    assert not val["labelled"].any() and set(val["label/source"].tolist()) <= set(range(6))


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="num_known"):
        ShapesGeneratorsDataConfig(num_known=6)
    with pytest.raises(ValueError, match="generators"):
        ShapesGeneratorsDataConfig(generators=["checkerboard", "nope"])


HEADER = "img_path,label,face_type,tag,image_source,method\n"


def write_owdfa(root: Path, rows: list[str]) -> Path:
    """A protocol CSV and the images it names (8 x 8 PNGs)."""
    (root / "faces").mkdir(parents=True, exist_ok=True)
    for k in range(len(rows)):
        Image.new("RGB", (8, 8), (10 * k, 0, 0)).save(root / "faces" / f"{k}.png")
    meta = root / "Protocol1_meta.csv"
    meta.write_text(HEADER + "".join(rows))
    return meta


def good_rows() -> list[str]:
    rows = []
    for k in range(20):
        label, tag = k % 4, (1 if k % 4 < 2 and k % 8 < 4 else 2)
        rows.append(f"faces/{k}.png,{label},fake,{tag},FF++,m{label}\n")
    rows.append("faces/0.png,0,real,0,FF++,real\n")  # tag 0: left out
    return rows


def test_owdfa_reader_and_split(tmp_path: Path) -> None:
    write_owdfa(tmp_path, good_rows())
    rows = read_meta(tmp_path / "Protocol1_meta.csv")
    assert len(rows.paths) == 20 and set(rows.tags.tolist()) == {1, 2}
    cfg = ShapesGeneratorsDataConfig(
        format="owdfa",
        root=str(tmp_path),
        meta_paths=["Protocol1_meta.csv"],
        image_size=16,
        batch_size=4,
        eval_batch_size=4,
    )
    dm = ShapesGeneratorsDataModule(cfg)
    assert dm.labels == {"source": 4} and dm.known_classes == {"source": 2}
    train, test = dm.source.split("train"), dm.source.split("test")
    assert train.num_items == 16 and test.num_items == 4  # 0.8 of each (source, label) group
    item = train.load(0)
    assert item["image"].shape == (16, 16, 3)
    flags = np.array([train.load(i)["labelled"] for i in range(train.num_items)])
    assert (train.labels["source"][flags == 1] < 2).all() and flags.any()
    assert not any(test.load(i)["labelled"] for i in range(test.num_items))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("faces/1.png,two,fake,1,FF++,m\n", "label 'two'"),
        ("faces/1.png,1,fake,3,FF++,m\n", "tag '3'"),
        ("faces/1.png,1,fake\n", "3 fields"),
    ],
)
def test_owdfa_malformed_row_is_one_line_naming_file_and_line(
    tmp_path: Path, bad: str, message: str
) -> None:
    rows = good_rows()
    rows.insert(3, bad)
    meta = write_owdfa(tmp_path, rows)
    with pytest.raises(DataError) as err:
        read_meta(meta)
    text = str(err.value)
    assert f"{meta}:5:" in text and message in text and "\n" not in text
