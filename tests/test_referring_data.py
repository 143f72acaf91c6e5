"""The referring family (datamodules/referring_shapes.py): built-in scenes where every word of
the expression is needed, their spoken expressions, the batch contract, and the
Ref-YouTube-VOS-style reader with A-VOS audio on a fixture (including a malformed entry)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.embedded.referring import (
    COLORS,
    SHAPES,
    ReferringConfig,
    expression_id,
    generate_split,
    sample_scene,
    speak,
)
from datamodules.embedded.shapes import COLORS as PALETTE
from datamodules.embedded.talking import TalkingConfig, speakers
from datamodules.errors import DataError
from datamodules.referring_shapes import ReferringShapesDataConfig, ReferringShapesDataModule
from datamodules.transforms import AugmentConfig
from tests.media_files import write_tone_wav
from tests.tiny_modules import setup_with_words

TINY = dict(num_train=24, num_val=8, num_test=8, batch_size=8, eval_batch_size=8)


def test_every_word_of_the_expression_is_needed() -> None:
    """Colour alone leaves three candidates, colour + shape two, the side word one."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        objects, expression = sample_scene(rng)
        _, color, shape, _, _, side = expression.split()
        target, twin = objects[0], objects[1]
        assert (target.color, target.shape) == (color, shape)
        assert sum(o.color == color for o in objects) == 3
        assert [o for o in objects if (o.color, o.shape) == (color, shape)] == [target, twin]
        axis = 1 if side in ("left", "right") else 0
        assert target.cell[1 - axis] == twin.cell[1 - axis]
        before = target.cell[axis] < twin.cell[axis]
        assert before == (side in ("left", "top"))
        assert len({o.cell for o in objects}) == 4


def test_scenes_are_deterministic_and_the_mask_covers_the_referred_object() -> None:
    cfg = ReferringConfig(num_train=12, num_val=2, num_test=2, seed=3)
    images, masks, mels, record = generate_split(cfg, "train")
    again = generate_split(cfg, "train")
    assert np.array_equal(images, again[0]) and np.array_equal(mels, again[2])
    assert mels.shape == (12, cfg.n_mels, cfg.audio_frames) and np.isfinite(mels).all()
    for i, text in enumerate(record["text"]):
        color = text.split()[1]
        inside = images[i][masks[i] > 0].astype(float)
        assert 20 < masks[i].sum() < 100
        assert np.abs(inside.mean(0) - PALETTE[color]).max() < 25
    assert len(set(record["speaker"])) > 1


def test_expression_ids_name_the_64_meanings() -> None:
    ids = {
        expression_id(f"the {c} {s} on the {side}")
        for c in COLORS
        for s in SHAPES
        for side in ("left", "right", "top", "bottom")
    }
    assert ids == set(range(64))


def test_the_spoken_expression_depends_on_the_words_not_only_the_speaker() -> None:
    """Same speaker and noise draws, two expressions: the log-mels differ where words do."""
    cfg = ReferringConfig(noise=0.0)
    voice = speakers(TalkingConfig(num_speakers=2))[0]
    red = speak("the red circle on the left", voice, np.random.default_rng(1), cfg)
    blue = speak("the blue circle on the left", voice, np.random.default_rng(1), cfg)
    assert np.abs(red - blue).max() > 0.05
    assert np.allclose(red[:200], blue[:200])  # before the colour word: the same "the"


def test_batches_carry_image_mask_both_expressions_and_the_expression_label() -> None:
    dm = setup_with_words(ReferringShapesDataModule(ReferringShapesDataConfig(**TINY)), "fit")
    batch = next(iter(dm.train_dataloader()))
    cfg = dm.cfg
    assert batch["image"].shape == (8, 3, cfg.image_size, cfg.image_size)
    assert batch["mask"].shape == (8, cfg.image_size, cfg.image_size)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    assert batch["audio"].shape == (8, cfg.n_mels, cfg.audio_frames)
    assert batch["text_ids"].shape[0] == 8 and batch["label/expression"].dtype == torch.long
    assert dm.modalities == ("image", "audio", "text")


def test_augmentation_is_refused() -> None:
    with pytest.raises(ValueError, match="augment"):
        ReferringShapesDataConfig(augment=AugmentConfig(train=[{"name": "HorizontalFlip"}]))


# ---------------------------------------------------------------- Ref-YouTube-VOS + A-VOS


def _fixture(root: Path, meta: dict | str) -> None:
    """One video ``v1`` of frames 00000..00002: object 1 in the left half, object 2 on the
    right of the middle frame; audio per expression."""
    base = root / "train"
    for frame in ("00000", "00001", "00002"):
        (base / "JPEGImages" / "v1").mkdir(parents=True, exist_ok=True)
        (base / "Annotations" / "v1").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 40, 3), 128, np.uint8)).save(
            base / "JPEGImages" / "v1" / f"{frame}.jpg"
        )
        ann = np.zeros((20, 40), np.uint8)
        ann[5:15, 2:18], ann[5:15, 22:38] = 1, 2
        png = Image.fromarray(ann, mode="P")
        png.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
        png.save(base / "Annotations" / "v1" / f"{frame}.png")
    for exp_id in ("0", "1"):
        write_tone_wav(base / "audio" / "v1" / f"{exp_id}.wav", 0.6)
    meta_dir = root / "meta_expressions" / "train"
    meta_dir.mkdir(parents=True, exist_ok=True)
    text = meta if isinstance(meta, str) else json.dumps(meta, indent=1)
    (meta_dir / "meta_expressions.json").write_text(text)


META = {
    "videos": {
        "v1": {
            "expressions": {
                "0": {"exp": "a cat on the left", "obj_id": "1"},
                "1": {"exp": "a dog on the right", "obj_id": "2"},
            },
            "frames": ["00000", "00001", "00002"],
        }
    }
}


def _disk_module(root: Path) -> ReferringShapesDataModule:
    cfg = ReferringShapesDataConfig(format="ref_youtube_vos", root=str(root), image_size=16, **TINY)
    return ReferringShapesDataModule(cfg)


def test_the_reader_loads_frame_mask_audio_and_text_of_each_expression(tmp_path: Path) -> None:
    _fixture(tmp_path, META)
    split = _disk_module(tmp_path).source.split("train")
    assert split.num_items == 2 and split.captions.text(1) == "a dog on the right"
    left, right = split.load(0), split.load(1)
    assert left["image"].shape == (16, 16, 3) and left["audio"].shape == (40, 120)
    assert left["mask"][8, 2] == 1 and left["mask"][8, 13] == 0
    assert right["mask"][8, 13] == 1 and right["mask"][8, 2] == 0
    assert list(split.labels["expression"]) == [0, 1]


def test_a_malformed_expression_is_one_data_error_naming_file_and_line(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(META))
    del bad["videos"]["v1"]["expressions"]["1"]["obj_id"]
    _fixture(tmp_path, bad)
    path = tmp_path / "meta_expressions" / "train" / "meta_expressions.json"
    line = next(
        n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip() == '"1": {'
    )
    with pytest.raises(DataError) as err:
        _disk_module(tmp_path).source.split("train")
    message = str(err.value)
    assert message.startswith(f"{path}:{line}:") and "'1'" in message and "\n" not in message


def test_invalid_json_is_a_data_error_with_its_line(tmp_path: Path) -> None:
    _fixture(tmp_path, '{"videos": {\n  "v1": [,]\n}}')
    with pytest.raises(DataError, match=r"meta_expressions.json:2: invalid JSON"):
        _disk_module(tmp_path).source.split("train")
