"""Built-in shapes data (determinism, truthfulness from pixels, hard negatives, cache), the
image-text datamodule's batch contract, and the JSONL / COCO readers."""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import ImageTextDataConfig, ImageTextDataModule
from datamodules.embedded import shapes
from datamodules.embedded.shapes import COLORS, SHAPES, ShapesConfig, generate_split
from datamodules.errors import DataError, DataFileMissing
from datamodules.samplers import SiblingShuffle
from experiments.config import ConfigError, load_experiment
from modules.registry import DATAMODULES
from modules.towers.tokenizer import split_words
from tests.tiny_modules import setup_with_words

TINY = dict(num_train=40, num_val=10, num_test=10)
PALETTE = {name: np.array(rgb) for name, rgb in COLORS.items()}
RELATION = re.compile(
    r"\b(?:(?:to |on )?(?:the )?(left|right) of|(above|over|higher than)"
    r"|(below|under|lower than))\b"
)


@pytest.fixture(scope="module")
def scenes() -> tuple[np.ndarray, dict]:
    return generate_split(ShapesConfig(num_val=300, hard_negative_fraction=0.25), "val")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    return tmp_path


def _color_masks(image: np.ndarray) -> dict[str, np.ndarray]:
    """Pixels exactly equal to each palette colour (the grey background never is)."""
    return {name: (image == rgb).all(axis=-1) for name, rgb in PALETTE.items()}


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as arrays of (row, col); a plain flood fill."""
    seen, out = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, pixels = [start], []
        seen[start] = True
        while stack:
            r, c = stack.pop()
            pixels.append((r, c))
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                inside = 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1]
                if inside and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        out.append(np.array(pixels))
    return out


# ------------------------------------------------------------------ generator


def test_generation_is_deterministic_and_seeded():
    cfg = ShapesConfig(**TINY)
    images, record = generate_split(cfg, "train")
    images2, record2 = generate_split(cfg, "train")
    assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, images2) and record == record2
    other, other_record = generate_split(replace(cfg, seed=1), "train")
    assert not np.array_equal(images, other) and record["captions"] != other_record["captions"]
    val, _ = generate_split(cfg, "val")
    assert not np.array_equal(images[:10], val)  # splits are different draws
    assert cfg.key() != replace(cfg, seed=1).key() and cfg.key() == ShapesConfig(**TINY).key()


def test_five_distinct_captions_and_labels_match_objects(scenes):
    _, record = scenes
    for caps, objs, shape, color, count in zip(
        record["captions"], record["objects"], *record["labels"].values(), strict=True
    ):
        assert len(caps) == 5 == len(set(caps))
        main = objs[0]
        assert (SHAPES[shape], list(COLORS)[color], count + 1) == (
            main["shape"],
            main["color"],
            len(objs),
        )
        if len(objs) > 1:  # the main object is the one large object
            assert [o["size"] for o in objs] == ["large"] + ["small"] * (len(objs) - 1)


def test_captions_are_true_to_the_pixels(scenes):
    images, record = scenes
    checked_relations = checked_positions = 0
    for image, caps, objs in zip(images, record["captions"], record["objects"], strict=True):
        masks = _color_masks(image)
        colors = {name for name, m in masks.items() if m.sum() >= 4}
        # object count from the pixels: connected components of non-grey pixels
        coloured = ~((image[..., 0] == image[..., 1]) & (image[..., 1] == image[..., 2]))
        parts = _components(coloured)
        assert len(parts) == len(objs)
        for o in objs:  # metadata centre has the object's colour
            assert tuple(image[o["y"], o["x"]]) == COLORS[o["color"]]
        for part in parts:  # squares fill their box, circles about pi/4 of it, others less
            (r0, c0), (r1, c1) = part.min(0), part.max(0)
            fill = len(part) / ((r1 - r0 + 1) * (c1 - c0 + 1))
            shape = next(o["shape"] for o in objs if r0 <= o["y"] <= r1 and c0 <= o["x"] <= c1)
            low, high = {"square": (0.99, 1.0), "circle": (0.65, 0.9)}.get(shape, (0.2, 0.7))
            assert low <= fill <= high, (shape, fill)
        for cap in caps:
            words = split_words(cap)
            assert {w for w in words if w in COLORS} == colors, cap
            assert {w for w in words if w in SHAPES} == {o["shape"] for o in objs}, cap
            count_words = {"one": 1, "single": 1, "two": 2, "three": 3}
            assert all(count_words[w] == len(objs) for w in words if w in count_words), cap
            if len(objs) == 1:
                ys, xs = np.nonzero(masks[objs[0]["color"]])
                y, x, third = ys.mean(), xs.mean(), image.shape[0] / 3
                truth = {
                    "left": x < third,
                    "right": x > 2 * third,
                    "top": y < third,
                    "bottom": y > 2 * third,
                    "centre": third < x < 2 * third and third < y < 2 * third,
                }
                truth["middle"] = truth["centre"]
                assert all(truth[w] for w in words if w in truth), cap
                checked_positions += 1
            elif len(colors) == len(objs):  # colours name objects: check every relation
                for clause in re.split(r", and |; |, while ", cap):
                    match = RELATION.search(clause)
                    before = [w for w in split_words(clause[: match.start()]) if w in COLORS]
                    after = [w for w in split_words(clause[match.end() :]) if w in COLORS]
                    (ys, xs), (yo, xo) = np.nonzero(masks[before[-1]]), np.nonzero(masks[after[0]])
                    dx, dy = xs.mean() - xo.mean(), ys.mean() - yo.mean()  # subject - object
                    horizontal, above, _ = match.groups()
                    if horizontal:
                        assert (dx < -5) if horizontal == "left" else (dx > 5), cap
                    else:
                        assert (dy < -5) if above else (dy > 5), cap
                    checked_relations += 1
    assert checked_positions > 100 and checked_relations > 500


def test_hard_negative_siblings(scenes):
    images, record = scenes
    sibling, kinds = np.array(record["sibling"]), record["sibling_kind"]
    paired = np.flatnonzero(sibling >= 0)
    assert 0.15 < len(paired) / len(sibling) < 0.35  # hard_negative_fraction 0.25
    assert {kinds[i] for i in paired} == {"color", "relation"}
    for i in paired:
        j = sibling[i]
        assert sibling[j] == i and kinds[i] == kinds[j] and abs(i - j) == 1
        a, b = record["objects"][i], record["objects"][j]
        assert len(a) == len(b) == 2
        same_shapes = [o["shape"] for o in a] == [o["shape"] for o in b]
        where = [[(o["x"], o["y"]) for o in objs] for objs in (a, b)]
        colours = [[o["color"] for o in objs] for objs in (a, b)]
        assert same_shapes
        if kinds[i] == "color":
            assert where[0] == where[1] and colours[0] == colours[1][::-1]
            assert colours[0][0] != colours[0][1]
        else:
            assert colours[0] == colours[1] and where[0] == where[1][::-1]
        # same background: the images differ only on object pixels
        grey = lambda im: (im[..., 0] == im[..., 1]) & (im[..., 1] == im[..., 2])  # noqa: E731
        both = grey(images[i]) & grey(images[j])
        assert (images[i][both] == images[j][both]).all() and not both.all()
        for cap_a, cap_b in zip(record["captions"][i], record["captions"][j], strict=True):
            assert cap_a != cap_b and Counter(split_words(cap_a)) == Counter(split_words(cap_b))
    counts = Counter(record["labels"]["count"])
    assert all(abs(counts[c] / len(sibling) - 1 / 3) < 0.08 for c in range(3)), counts


def test_cache_is_written_once_and_reused(cache, monkeypatch):
    cfg = ShapesConfig(**TINY)
    path = shapes.ensure_shapes(cfg, cache)
    assert path == cache / "data" / f"shapes-{cfg.key()}"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    mtimes = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(shapes, "generate_split", fail)
    assert shapes.ensure_shapes(cfg, cache) == path
    dm = ImageTextDataModule(ImageTextDataConfig(**TINY))  # cache root from ALIGNLAB_CACHE
    dm.prepare_data()
    setup_with_words(dm)
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == mtimes
    assert isinstance(shapes.load_split(path, "train").images, np.memmap)
    with pytest.raises(AssertionError, match="regenerated"):
        shapes.ensure_shapes(replace(cfg, seed=3), cache)  # other parameters, other directory
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# ------------------------------------------------------------------ datamodule


@pytest.fixture
def dm(cache) -> ImageTextDataModule:
    module = ImageTextDataModule(ImageTextDataConfig(**TINY, batch_size=8, eval_batch_size=16))
    module.prepare_data()
    setup_with_words(module)
    return module


def test_registered_and_config_validated():
    entry = DATAMODULES.get("image_text")
    assert entry.cls is ImageTextDataModule and entry.config is ImageTextDataConfig
    with pytest.raises(ValueError, match="format"):
        ImageTextDataConfig(format="parquet")
    with pytest.raises(ValueError, match="train_pairs"):
        ImageTextDataConfig(train_pairs="both")
    with pytest.raises(ValueError, match="root"):
        ImageTextDataConfig(format="jsonl")


def test_train_batches_follow_the_contract(dm, cache):
    batches = list(dm.train_dataloader())
    assert len(batches) == 40 // 8  # one sample per image, last partial batch dropped
    b = batches[0]
    assert set(b) == {
        "image",
        "text_ids",
        "text_mask",
        "index",
        "item_id",
        "label/shape",
        "label/color",
        "label/count",
        "skipped",
    }
    assert b["skipped"] == []  # no unreadable file
    assert b["image"].dtype == torch.float32 and b["image"].shape == (8, 3, 64, 64)
    assert -1.0 <= b["image"].min() and b["image"].max() <= 1.0
    assert b["text_ids"].dtype == torch.long and b["text_ids"].shape[0] == 8
    assert b["text_ids"].shape[1] <= 40  # padded to the batch's longest caption
    assert b["text_mask"].dtype == torch.bool and b["text_mask"][:, 0].all()
    for key in ("index", "item_id", "label/shape", "label/color", "label/count"):
        assert b[key].dtype == torch.long and b[key].shape == (8,)
    train = dm.datasets["train"]
    seen = torch.cat([x["item_id"] for x in batches])
    assert len(set(seen.tolist())) == 40  # every image once per epoch
    # index names the caption that was tokenized, and it belongs to item_id
    for k, (index, item_id) in enumerate(zip(b["index"], b["item_id"], strict=True)):
        assert train.captions.item[index] == item_id
        ids, _ = dm.tokenizer.encode([train.captions.text(int(index))])
        assert torch.equal(ids[0], b["text_ids"][k, : ids.shape[1]])
        assert not b["text_ids"][k, ids.shape[1] :].any()
    raw = shapes.load_split(shapes.shapes_dir(dm.source.generator, cache), "train")
    i = int(b["item_id"][0])
    assert torch.allclose(b["image"][0], torch.tensor(raw.images[i]).permute(2, 0, 1) / 127.5 - 1)
    assert int(b["label/count"][0]) == len(raw.objects[i]) - 1


def test_train_captions_vary_across_epochs_and_caption_mode_uses_all(cache):
    torch.manual_seed(0)
    cfg = ImageTextDataConfig(**TINY, batch_size=8)
    dm = ImageTextDataModule(cfg)
    setup_with_words(dm, "fit")
    epochs = [torch.cat([b["index"] for b in dm.train_dataloader()]) for _ in range(2)]
    assert not torch.equal(epochs[0].sort().values, epochs[1].sort().values)
    every = ImageTextDataModule(replace(cfg, train_pairs="caption"), tokenizer=dm.tokenizer)
    setup_with_words(every, "fit")
    index = torch.cat([b["index"] for b in every.train_dataloader()])
    assert len(every.datasets["train"]) == 200 and sorted(index.tolist()) == list(range(200))


def test_val_and_test_iterate_every_pair_in_order(dm):
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        batches = list(loader)
        index = torch.cat([b["index"] for b in batches])
        item_id = torch.cat([b["item_id"] for b in batches])
        assert torch.equal(index, torch.arange(50))
        assert torch.equal(item_id, torch.arange(10).repeat_interleave(5))  # 5 per image
        counts = torch.cat([b["label/count"] for b in batches]).view(10, 5)
        assert (counts == counts[:, :1]).all()  # labels belong to the image
        again = [b["text_ids"] for b in loader]
        assert all(torch.equal(b["text_ids"], a) for b, a in zip(batches, again, strict=True))


def test_zero_shot_tasks_use_caption_vocabulary(dm):
    tasks = dm.zero_shot_tasks
    assert {t: len(p) for t, p in tasks.items()} == {"shape": 6, "color": 6, "count": 3}
    vocab = set(dm.tokenizer.vocab)
    for prompts in tasks.values():
        assert len(set(prompts)) == len(prompts)
        assert all(w in vocab for p in prompts for w in split_words(p))
    assert tasks["color"][list(COLORS).index("red")] == "a picture of a red shape"
    pairs = dm.hard_negatives("val")
    assert pairs.shape[1] == 2 and (dm.datasets["val"].captions.num_items > pairs).all()
    assert "train 40 images / 200 captions" in dm.describe()


def test_dataset_pickles_small(dm):
    dataset = dm.datasets["train"]
    blob = pickle.dumps(dataset)
    assert len(blob) < 40 * 64 * 64 * 3 / 4  # the image array travels as its path
    clone = pickle.loads(blob)
    torch.manual_seed(1)
    a = dataset[3]
    torch.manual_seed(1)
    b = clone[3]
    assert a["text"] == b["text"] and torch.equal(a["image"], b["image"])


# ------------------------------------------------------------------ real formats

#: Every split's COCO image folder (data.format coco needs them all).
COCO_IMAGES = {f"{split}_images": "img" for split in ("train", "val", "test")}
COLOR_FILES = {"a.png": (255, 0, 0), "b.png": (0, 255, 0), "sub/c.png": (0, 0, 255)}


def _write_images(root):
    for name, rgb in COLOR_FILES.items():
        (root / "img" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 12), rgb).save(root / "img" / name)


def _jsonl(path, lines):
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    )


def test_jsonl_reader_and_loader(tmp_path):
    _write_images(tmp_path)
    _jsonl(
        tmp_path / "val.jsonl",
        [
            {"image": "a.png", "captions": ["red one", "all red"], "id": 7},
            "",
            {"image": "sub/c.png", "caption": "blue"},
            {"image": "a.png", "captions": ["still red"], "id": 7},  # pooled with the first
            {"image": "b.png", "captions": ["green"]},
        ],
    )
    cfg = ImageTextDataConfig(
        format="jsonl", root=str(tmp_path), val_images="img", image_size=16, eval_batch_size=4
    )
    dm = ImageTextDataModule(cfg, tokenizer=_tokenizer())
    setup_with_words(dm, "validate")
    assert dm.zero_shot_tasks == {} and len(dm.hard_negatives("val")) == 0
    batches = list(dm.val_dataloader())
    item_id = torch.cat([b["item_id"] for b in batches])
    assert item_id.tolist() == [0, 0, 0, 1, 2] and not any("label/" in k for k in batches[0])
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (5, 3, 16, 16)
    for img, rgb in zip(images[[0, 3, 4]], [(255, 0, 0), (0, 0, 255), (0, 255, 0)], strict=True):
        assert torch.allclose(img.mean((1, 2)), torch.tensor(rgb) / 127.5 - 1, atol=1e-5)
    assert dm.datasets["val"].captions.all_texts()[:3] == ["red one", "all red", "still red"]


def test_jsonl_errors_name_the_place(tmp_path):
    from datamodules.formats import read_jsonl

    _write_images(tmp_path)
    bad = tmp_path / "bad.jsonl"
    _jsonl(bad, [{"image": "a.png", "captions": ["ok"]}, "", '{"image": "b.png", "captions": [}'])
    with pytest.raises(DataError, match=r"bad\.jsonl:3: invalid JSON"):
        read_jsonl(bad, tmp_path)
    _jsonl(bad, [{"image": "a.png", "captions": []}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: 'captions'"):
        read_jsonl(bad, tmp_path)
    _jsonl(bad, [{"captions": ["x"]}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: expected"):
        read_jsonl(bad, tmp_path)
    with pytest.raises(DataFileMissing, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl", tmp_path)
    cfg = ImageTextDataConfig(format="jsonl", root=str(tmp_path / "missing"))
    with pytest.raises(DataFileMissing, match="missing"):
        ImageTextDataModule(cfg, tokenizer=_tokenizer()).setup("validate")
    _jsonl(tmp_path / "val.jsonl", [{"image": "gone.png", "captions": ["x"]}])
    dm = ImageTextDataModule(replace(cfg, root=str(tmp_path)), tokenizer=_tokenizer())
    setup_with_words(dm, "validate")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        dm.datasets["val"][0]


def test_coco_reader(tmp_path):
    from datamodules.formats import read_coco

    _write_images(tmp_path)
    ann = {
        "images": [
            {"id": 42, "file_name": "b.png"},
            {"id": 5, "file_name": "a.png"},
            {"id": 9, "file_name": "sub/c.png"},  # no caption: left out
        ],
        "annotations": [
            {"image_id": 5, "caption": "red square"},
            {"image_id": 42, "caption": "green"},
            {"image_id": 5, "caption": "a red image"},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_test.json").write_text(json.dumps(ann))
    cfg = ImageTextDataConfig(format="coco", root=str(tmp_path), **COCO_IMAGES, image_size=8)
    dm = ImageTextDataModule(cfg, tokenizer=_tokenizer())
    setup_with_words(dm, "test")
    ds = dm.datasets["test"]
    assert ds.captions.all_texts() == ["green", "red square", "a red image"]
    batch = next(iter(dm.test_dataloader()))
    assert batch["item_id"].tolist() == [0, 1, 1] and batch["index"].tolist() == [0, 1, 2]
    assert torch.allclose(batch["image"][1, 0], torch.ones(8, 8))  # red channel of a.png
    assert "coco at" in dm.describe()
    ann["annotations"].append({"image_id": 77, "caption": "orphan"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(ann))
    with pytest.raises(DataError, match=r"bad\.json: annotations\[3\] refers to unknown"):
        read_coco(bad, tmp_path)
    bad.write_text('{"images": [')
    with pytest.raises(DataError, match=r"bad\.json:1: invalid JSON"):
        read_coco(bad, tmp_path)
    with pytest.raises(DataFileMissing, match="captions_val.json"):
        setup_with_words(dm, "validate")


def test_coco_needs_every_split_image_folder(tmp_path):
    """COCO's file names hold no folder: an unset one is a one-line config error, not a run
    whose every image is missing."""
    message = (
        "data.val_images, data.test_images: data.format coco needs each split's image folder, "
        "relative to data.root ('.' for data.root itself)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ImageTextDataConfig(format="coco", root=str(tmp_path), train_images="train2017")
    overrides = ["data.format=coco", f"data.root={tmp_path}", "data.train_images=train2017"]
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_experiment(Path(__file__).parents[1] / "experiments" / "clip.yaml", overrides)
    everywhere = {f"{split}_images": "." for split in ("train", "val", "test")}
    assert ImageTextDataConfig(format="coco", root=str(tmp_path), **everywhere).val_images == "."


def test_manifests_may_start_with_a_utf8_bom(tmp_path):
    """A byte order mark (Windows editors, spreadsheet exports) before the first JSONL line or
    the COCO JSON is not part of the data."""
    from datamodules.formats import read_coco, read_jsonl

    bom = b"\xef\xbb\xbf"
    jsonl = tmp_path / "val.jsonl"
    jsonl.write_bytes(bom + b'{"image": "a.png", "caption": "red"}\n')
    assert read_jsonl(jsonl, tmp_path / "img").captions.all_texts() == ["red"]
    coco = tmp_path / "captions.json"
    ann = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": []}
    ann["annotations"].append({"image_id": 1, "caption": "red"})
    coco.write_bytes(bom + json.dumps(ann).encode())
    assert read_coco(coco, tmp_path / "img").captions.all_texts() == ["red"]


def _tokenizer():
    from modules.towers.tokenizer import WordTokenizer

    return WordTokenizer.build(["red green blue"], max_len=8)


def test_sibling_shuffle_keeps_pairs_adjacent_and_reshuffles():
    sibling = np.array([3, -1, 5, 0, -1, 2, -1, 8, 7])  # pairs (0, 3), (2, 5), (7, 8)
    sampler = SiblingShuffle(sibling, seed=1)
    epochs = [list(sampler) for _ in range(4)]
    for order in epochs:
        assert sorted(order) == list(range(9))  # every item once
        position = {item: k for k, item in enumerate(order)}
        for a, b in ((0, 3), (2, 5), (7, 8)):
            assert abs(position[a] - position[b]) == 1
    assert len({tuple(o) for o in epochs}) > 1  # a new order every epoch
    assert [list(SiblingShuffle(sibling, seed=1)) for _ in range(2)][0] == epochs[0]


def test_sibling_batches_put_hard_negatives_in_one_batch(cache):
    cfg = ImageTextDataConfig(num_train=64, num_val=8, num_test=8, batch_size=16)
    dm = ImageTextDataModule(replace(cfg, sibling_batches=True))
    setup_with_words(dm, "fit")
    pairs = dm.hard_negatives("train")
    assert len(pairs) >= 4
    batches = [set(b["item_id"].tolist()) for b in dm.train_dataloader()]
    together = sum(any({a, b} <= batch for batch in batches) for a, b in pairs.tolist())
    assert together >= len(pairs) - len(batches)  # only a pair cut by a batch boundary splits
    with pytest.raises(ValueError, match="sibling_batches needs data.train_pairs: image"):
        ImageTextDataConfig(sibling_batches=True, train_pairs="caption")


def test_a_train_split_smaller_than_a_batch_is_a_data_error(cache):
    """40 training items in batches of 64 would drop every batch: a DataError (run.py: one
    line, exit 2) that says what to change, not a training run without steps."""
    module = ImageTextDataModule(ImageTextDataConfig(**TINY, batch_size=64, eval_batch_size=16))
    module.prepare_data()
    setup_with_words(module)
    with pytest.raises(DataError, match="40 samples, fewer than data.batch_size 64.*lower data"):
        module.train_dataloader()
