"""16-bit and float images are scaled to 8 bits rather than clipped (a 16-bit scan all white, a
float one all black) wherever a user image is read: the image-text and medical-report readers
and frame folders, all through ``datamodules.media.to_8bit``; 8-bit images are untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import ImageTextDataConfig
from datamodules.media import read_frame_folder, to_8bit
from datamodules.medical_report import MedicalReportDataConfig
from datamodules.sources import SOURCES

SIZE = 32
#: A left-to-right ramp over the full 16-bit range, and its 8-bit equivalent.
RAMP16 = np.round(np.linspace(0, 65535, SIZE)).astype(np.uint16)
RAMP8 = RAMP16 / 65535 * 255
#: A float ramp over [-3, 5]: its own min..max becomes 0..255.
RAMPF = np.linspace(-3.0, 5.0, SIZE).astype(np.float32)


def _save(path: Path, row: np.ndarray) -> Path:
    """``row`` repeated over 8 rows, saved with PIL (16-bit PNG, float TIFF, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.tile(row, (8, 1))).save(path)
    return path


FILES = {  # file name -> (pixel row written, 8-bit row expected)
    "ramp16.png": (RAMP16, RAMP8),
    "rampf.tif": (RAMPF, (RAMPF + 3.0) / 8.0 * 255),
}


def _image_text(root: Path, names: list[str]) -> np.ndarray:
    """The images ``names`` (under ``root/img``) as the JSONL image-text source reads them."""
    lines = [json.dumps({"image": name, "caption": "a ramp"}) for name in names]
    (root / "val.jsonl").write_text("\n".join(lines) + "\n")
    cfg = ImageTextDataConfig(format="jsonl", root=str(root), val_images="img", image_size=SIZE)
    images = SOURCES.build(cfg).split("val").images
    return np.stack([images[i] for i in range(len(names))])


def _medical(root: Path, names: list[str]) -> np.ndarray:
    """The images ``names`` (under ``root/images``) as the IU-Xray source reads them."""
    entry = {"id": "CXR1", "report": "The lungs are clear.", "image_path": names}
    (root / "annotation.json").write_text(json.dumps({"val": [entry]}))
    cfg = MedicalReportDataConfig(format="iu_xray", root=str(root), image_size=SIZE)
    images = SOURCES.build(cfg).split("val").images
    return np.stack([images[v] for v in range(len(names))])


def _assert_ramp(pixels: np.ndarray, expected: np.ndarray) -> None:
    """Every row of every channel is ``expected`` within rounding and the resize's ringing:
    full range, mid-grey in the middle, order kept."""
    rows = pixels.reshape(-1, SIZE, SIZE, pixels.shape[-1]).transpose(0, 3, 1, 2)
    assert np.abs(rows.astype(np.float64) - expected).max() <= 1.5
    assert (np.diff(rows.astype(np.int64), axis=-1) >= 0).all()  # order kept
    assert rows[..., 0].max() <= 1 and rows[..., -1].min() >= 254
    assert 120 <= rows[..., SIZE // 2].mean() <= 136  # mid-grey stays mid-grey


@pytest.mark.parametrize("name", list(FILES))
def test_image_text_reader_scales_16_bit_and_float_files(tmp_path, name):
    row, expected = FILES[name]
    _save(tmp_path / "img" / name, row)
    assert Image.open(tmp_path / "img" / name).mode in ("I;16", "F")  # the real thing
    pixels = _image_text(tmp_path, [name])
    assert pixels.shape == (1, SIZE, SIZE, 3) and pixels.dtype == np.uint8
    _assert_ramp(pixels, expected)


@pytest.mark.parametrize("name", list(FILES))
def test_medical_report_reader_scales_16_bit_and_float_files(tmp_path, name):
    row, expected = FILES[name]
    _save(tmp_path / "images" / name, row)
    pixels = _medical(tmp_path, [name])
    assert pixels.shape == (1, SIZE, SIZE, 1) and pixels.dtype == np.uint8
    _assert_ramp(pixels, expected)


def test_frame_folder_scales_16_bit_frames(tmp_path):
    for k in range(2):
        _save(tmp_path / "clip" / f"{k}.png", RAMP16)
    _assert_ramp(read_frame_folder(tmp_path / "clip", 2, SIZE), RAMP8)
    _assert_ramp(read_frame_folder(tmp_path / "clip", 2, SIZE, grayscale=True), RAMP8)


def test_8_bit_files_read_as_before(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    for folder in ("img", "images"):
        (tmp_path / folder).mkdir()
        Image.fromarray(rgb).save(tmp_path / folder / "rgb.png")
        Image.fromarray(gray).save(tmp_path / folder / "gray.png")
    assert np.array_equal(_image_text(tmp_path, ["rgb.png"])[0], rgb)
    assert np.array_equal(_medical(tmp_path, ["gray.png"])[0, ..., 0], gray)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "1"])
def test_8_bit_modes_are_returned_unchanged(mode):
    image = Image.new(mode, (4, 3))
    assert to_8bit(image) is image


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_16_bit_modes_scale_by_bit_depth(dtype):
    image = Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=dtype))
    assert image.mode in ("I;16", "I;16B")
    out = to_8bit(image)
    assert out.mode == "L" and np.asarray(out).tolist() == [[0, 1, 128, 255]]
    assert np.asarray(to_8bit(image.convert("I"))).tolist() == [[0, 1, 128, 255]]


def test_32_bit_integers_beyond_16_bits_scale_by_their_maximum():
    image = Image.fromarray(np.array([[-5, 0, 500_000, 1_000_000]], dtype=np.int32))
    assert image.mode == "I"
    assert np.asarray(to_8bit(image)).tolist() == [[0, 0, 128, 255]]


def test_float_images_scale_by_their_own_range():
    ramp = Image.fromarray(np.array([[-3.0, 1.0, 5.0, np.nan]], dtype=np.float32))
    assert np.asarray(to_8bit(ramp)).tolist() == [[0, 128, 255, 0]]  # NaN: the minimum
    constant = Image.fromarray(np.full((2, 2), 7.5, dtype=np.float32))
    assert np.asarray(to_8bit(constant)).tolist() == [[0, 0], [0, 0]]
