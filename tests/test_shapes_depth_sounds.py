"""The four-modality shapes family (image, depth map, sound, caption) and its VIDAL-10M reader:
what the depth map shows and hides, determinism, the shared sounds cache, batches, and the
reader on a fixture written here (one good entry read whole, malformed entries named by line)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from datamodules.embedded.shape_depth import GROUND, GROUND_NOISE, DepthConfig, generate_split
from datamodules.embedded.shapes import ShapesConfig, ensure_shapes, load_split
from datamodules.errors import DataError
from datamodules.formats.vidal import read_vidal
from datamodules.shapes_depth_sounds import (
    ShapesDepthSoundsDataConfig,
    ShapesDepthSoundsDataModule,
)
from datamodules.shapes_sounds import ShapesSoundsDataConfig, ShapesSoundsDataModule
from datamodules.storage import cache_root
from tests.media_files import write_tone_wav
from tests.tiny_modules import setup_with_words

TINY = dict(num_train=48, num_val=20, num_test=12, batch_size=12, eval_batch_size=8, image_size=32)


def _scenes(**kw) -> tuple[ShapesConfig, Path]:
    cfg = ShapesConfig(num_train=200, num_val=4, num_test=4, image_size=32, **kw)
    return cfg, ensure_shapes(cfg, cache_root())


def test_depth_shows_silhouettes_not_colours_and_is_deterministic():
    cfg, directory = _scenes()
    split = load_split(directory, "train")
    depth = generate_split(DepthConfig(cfg), split.objects, "train")[..., 0]
    assert np.array_equal(depth, generate_split(DepthConfig(cfg), split.objects, "train")[..., 0])
    other = generate_split(
        DepthConfig(ShapesConfig(**{**vars(cfg), "seed": 1})), split.objects, "train"
    )
    assert not np.array_equal(depth, other)
    # objects stand out of the ground plane: where the image is not background
    background = np.abs(split.images.astype(int) - split.images[:, :1, :1].astype(int)).max(-1)
    ground_max = GROUND[1] + GROUND_NOISE
    for i in range(20):
        objects = depth[i] > ground_max
        painted = background[i] > 40
        assert (objects == painted).mean() > 0.97
    # colour siblings (same shapes and places, colours swapped): the same silhouettes
    pairs = [i for i, kind in enumerate(split.sibling_kind) if kind == "color"][::2]
    assert pairs
    for i in pairs:
        j = int(split.sibling[i])
        assert np.array_equal(depth[i] > ground_max, depth[j] > ground_max)
        assert not np.array_equal(split.images[i], split.images[j])


def test_batches_carry_four_modalities_and_share_the_sounds_cache():
    dm = ShapesDepthSoundsDataModule(ShapesDepthSoundsDataConfig(**TINY))
    setup_with_words(dm, "fit")
    assert dm.modalities == ("image", "depth", "audio", "text") and len(dm.pairs) == 6
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (12, 3, 32, 32) and batch["depth"].shape == (12, 1, 32, 32)
    assert batch["audio"].shape == (12, 40, 100) and batch["text_ids"].shape[0] == 12
    assert {"label/shape", "label/color", "label/count"} <= set(batch)
    assert -1.0 <= float(batch["depth"].min()) and float(batch["depth"].max()) <= 1.0
    # the same scenes and sounds as shapes_sounds: one cache, read unchanged
    sounds = ShapesSoundsDataModule(ShapesSoundsDataConfig(**TINY))
    setup_with_words(sounds, "fit")
    for i in (0, 7):
        ours, theirs = dm.datasets["val"][i], sounds.datasets["val"][i]
        assert ours["text"] == theirs["text"]
        assert np.array_equal(ours["image"].numpy(), theirs["image"].numpy())
        assert np.array_equal(ours["audio"].numpy(), theirs["audio"].numpy())


# ------------------------------------------------------------------ VIDAL-10M reader


def _write_mp4(path: Path, level: int, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        stream.options = {"qscale": "1"}
        for _ in range(3):
            frame = np.full((size, size, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_entry(root: Path, key: str, folder: str, level: int) -> None:
    _write_mp4(root / folder / f"{key}.mp4", level)
    # a WAV stream under the official ``.mp3`` name: FFmpeg reads the content
    write_tone_wav(root / f"{folder}_ffmpeg_mp3" / f"{key}.mp3")
    depth = root / folder / f"{key}_depth_f8glpn_folder" / "0.png"
    depth.parent.mkdir(parents=True)
    ramp = np.tile(np.linspace(500, 8000, 32), (32, 1)).astype(np.uint16)  # millimetres
    Image.fromarray(ramp).save(depth)


def _manifest(root: Path, entries: dict) -> Path:
    path = root / "train.json"
    path.write_text(json.dumps(entries, indent=1))
    return path


GOOD = {
    "folder": "part0",
    "raw": "bad7",  # a mention before the entry: not its line
    "polish_mplug": "a  man plays a guitar",
    "ofa": ["a man", "a guitar"],
}


def test_vidal_reader_reads_an_entry_whole(tmp_path):
    _write_entry(tmp_path, "vid1", "part0", 200)
    _write_entry(tmp_path, "vid2", "part0", 40)
    _manifest(tmp_path, {"vid1": GOOD, "vid2": {**GOOD, "polish_mplug": "a dog"}})
    entries = read_vidal(tmp_path / "train.json", tmp_path, "polish_mplug")
    assert [e.captions for e in entries] == [["a man plays a guitar"], ["a dog"]]
    assert read_vidal(tmp_path / "train.json", tmp_path, "ofa")[0].captions == ["a man", "a guitar"]
    names = dict(train_manifest="train.json", val_manifest="train.json", test_manifest="train.json")
    cfg = ShapesDepthSoundsDataConfig(format="vidal", root=str(tmp_path), image_size=24, **names)
    dm = ShapesDepthSoundsDataModule(cfg)
    setup_with_words(dm, "fit")
    assert dm.labels == {} and dm.zero_shot_tasks == {}
    first, second = dm.datasets["val"][0], dm.datasets["val"][1]
    assert first["image"].shape == (3, 24, 24) and first["depth"].shape == (1, 24, 24)
    assert first["audio"].shape == (40, 100)
    assert float(first["image"].mean()) > float(second["image"].mean()) + 1.0  # bright vs dark
    depth = first["depth"][0]
    assert float(depth[:, -1].mean()) == pytest.approx(1.0, abs=0.02)  # the maximum: far right
    assert float(depth[:, 0].mean()) < float(depth[:, 12].mean()) < float(depth[:, -1].mean())
    mel = first["audio"]
    # the tone lasts 0.5 s of the 1.0 s window: loud frames first, then the padding's silence
    assert float(mel[:, :40].max()) > float(mel[:, -20:].max()) + 5.0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"raw": "no folder"}, "expected an object with a 'folder' string"),
        ({**GOOD, "polish_mplug": ""}, "'polish_mplug' must be non-empty text"),
        ({**GOOD, "folder": "missing"}, "video file .* not found"),
    ],
)
def test_vidal_reader_names_the_malformed_entry_and_its_line(tmp_path, entry, message):
    _write_entry(tmp_path, "vid1", "part0", 200)
    path = _manifest(tmp_path, {"vid1": GOOD, "bad7": entry})
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip().startswith('"bad7"'))
    with pytest.raises(DataError, match=message) as err:
        read_vidal(path, tmp_path, "polish_mplug")
    assert str(err.value).startswith(f"{path}:{line}: entry 'bad7': ")
    assert "\n" not in str(err.value)


def test_vidal_reader_rejects_bad_json_and_missing_manifests(tmp_path):
    (tmp_path / "train.json").write_text('{"vid1": {"folder": "a",}\n')
    with pytest.raises(DataError, match=r"train.json:1: invalid JSON"):
        read_vidal(tmp_path / "train.json", tmp_path, "raw")
    with pytest.raises(ValueError, match="data.format 'vidal' needs data.val_manifest"):
        ShapesDepthSoundsDataConfig(format="vidal", root=str(tmp_path), train_manifest="t.json")
    with pytest.raises(ValueError, match="data.text_type must be one of"):
        ShapesDepthSoundsDataConfig(text_type="title")
