"""Items datamodules (datamodules/items.py) and the three built-in families: shapes_views
(SimCLR / SwAV views), shapes_sounds (image, sound, caption) and shapes_sizes (imbalanced
regression). Determinism, truthful labels and targets, views, batch contract, global batches
under 2 ranks, resumed epochs, generation time."""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datamodules.embedded import shape_sizes, shape_sounds
from datamodules.embedded.shape_sizes import (
    AREA,
    MARGIN,
    SizesConfig,
    balanced_sizes,
    coverage,
    long_tail_sizes,
)
from datamodules.embedded.shape_sounds import PITCHES, SoundsConfig, load_beeps, scene_sound
from datamodules.embedded.shapes import COLORS, SHAPES, ShapesConfig, ensure_shapes, load_split
from datamodules.items import ItemCollate, ItemDataset, ItemSplit, SeededImageTransform
from datamodules.media import MediaError, mel_filterbank
from datamodules.shapes_sizes import ShapesSizesDataConfig, ShapesSizesDataModule
from datamodules.shapes_sounds import ShapesSoundsDataConfig, ShapesSoundsDataModule
from datamodules.shapes_views import ShapesViewsDataConfig, ShapesViewsDataModule
from datamodules.storage import Captions, cache_root
from modules.registry import DATAMODULES, as_dataclass
from tests.tiny_modules import setup_with_words

TINY = dict(num_train=48, num_val=20, num_test=12, batch_size=12, eval_batch_size=8)
PALETTE = np.array(list(COLORS.values()), dtype=np.float32)


def views_module(**kw) -> ShapesViewsDataModule:
    return ShapesViewsDataModule(ShapesViewsDataConfig(**{**TINY, **kw}))


def sounds_module(**kw) -> ShapesSoundsDataModule:
    return ShapesSoundsDataModule(ShapesSoundsDataConfig(**{**TINY, **kw}))


def sizes_module(**kw) -> ShapesSizesDataModule:
    return ShapesSizesDataModule(ShapesSizesDataConfig(**{**TINY, **kw}))


FAMILIES = {"views": views_module, "sounds": sounds_module, "sizes": sizes_module}


def pixels(image: torch.Tensor) -> np.ndarray:
    """A batch image [3, H, W] in [-1, 1] back to HWC float pixels in [0, 255]."""
    return ((image.permute(1, 2, 0).numpy() + 1.0) * 127.5).round()


def measured_size(image: np.ndarray, shape: str) -> tuple[float, np.ndarray]:
    """The object's size and colour read from the pixels: background = mean of the 2-pixel
    border ring, object colour = mean of its most distinct pixels, coverage of each pixel =
    its projection on (colour - background), size = sqrt(covered area / AREA[shape])."""
    ring = np.concatenate([image[:2], image[-2:], image[:, :2].swapaxes(0, 1)])
    ring = np.concatenate([ring.reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
    background = ring.mean(0)
    distance = np.linalg.norm(image - background, axis=-1)
    mask = distance > 40
    colour = image[mask & (distance >= np.quantile(distance[mask], 0.5))].mean(0)
    direction = colour - background
    alpha = (image - background) @ direction / (direction @ direction)
    ys, xs = np.nonzero(mask)
    r = int(math.ceil(math.sqrt(mask.sum()))) + 3
    cy, cx = int(ys.mean()), int(xs.mean())
    window = alpha[max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + r]
    return float(math.sqrt(window.sum() / AREA[shape])), colour


def loaders(make, world: int, split: str = "train", epochs: int = 2) -> list[list[dict]]:
    """``epochs`` passes over ``split`` for every rank of ``world`` (one module per rank)."""
    out = []
    for rank in range(world):
        torch.manual_seed(rank)  # the ranks' global RNGs differ, as in real DDP
        module = make()
        module.trainer = SimpleNamespace(global_rank=rank, world_size=world)
        setup_with_words(module, "fit")
        loader = module.train_dataloader() if split == "train" else module.val_dataloader()
        out.append([batch for _ in range(epochs) for batch in loader])
    return out


def tokens(batch: dict) -> list[list[int]]:
    rows = zip(batch["text_ids"], batch["text_mask"], strict=True)
    return [ids[mask].tolist() for ids, mask in rows]


# ------------------------------------------------------------------ generators


def test_generators_are_deterministic_and_seeded():
    cfg = SizesConfig(num_train=30, num_val=10, num_test=10)
    images, record = shape_sizes.generate_split(cfg, "train")
    again, record2 = shape_sizes.generate_split(cfg, "train")
    assert images.shape == (30, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and record == record2
    other, _ = shape_sizes.generate_split(replace(cfg, seed=1), "train")
    assert not np.array_equal(images, other)
    assert cfg.key() == SizesConfig(num_train=30, num_val=10, num_test=10).key()
    assert cfg.key() != replace(cfg, seed=1).key()

    scenes = load_split(ensure_shapes(ShapesConfig(**_scene_sizes()), cache_root()), "val")
    sounds = SoundsConfig(ShapesConfig(**_scene_sizes()))
    audio, beeps = shape_sounds.generate_split(sounds, scenes.objects, "val")
    audio2, beeps2 = shape_sounds.generate_split(sounds, scenes.objects, "val")
    assert audio.shape == (20, 40, 100) and audio.dtype == np.float16
    assert np.array_equal(audio, audio2) and beeps == beeps2
    assert sounds.key() != SoundsConfig(ShapesConfig(**_scene_sizes(seed=1))).key()
    assert sounds.key() != replace(sounds, n_mels=32).key()


def _scene_sizes(seed: int = 0) -> dict:
    return dict(num_train=48, num_val=20, num_test=12, seed=seed)


def test_modules_with_the_same_seed_serve_the_same_data():
    for make in FAMILIES.values():
        a, b, c = make(), make(), make(seed=1)
        for dm in (a, b, c):
            setup_with_words(dm, "fit")
        batch_a, batch_b = next(iter(a.train_dataloader())), next(iter(b.train_dataloader()))
        assert batch_a.keys() == batch_b.keys()
        for key, value in batch_a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, batch_b[key]), key
        val_a, val_c = a.datasets["val"][0]["image"], c.datasets["val"][0]["image"]
        assert torch.equal(val_a, b.datasets["val"][0]["image"])
        assert not torch.equal(val_a, val_c)


def test_cache_is_written_once_and_reused(monkeypatch):
    cfg = SizesConfig(num_train=5, num_val=3, num_test=3, seed=5)
    path = shape_sizes.ensure_sizes(cfg, cache_root())
    assert path.name == f"shape-sizes-{cfg.key()}" and (path / "train_images.npy").is_file()
    sounds = sounds_module()
    sounds.prepare_data()
    directory = shape_sounds.sounds_dir(sounds.source.generator, cache_root())
    assert (directory / "val_audio.npy").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(shape_sizes, "generate_split", fail)
    monkeypatch.setattr(shape_sounds, "generate_split", fail)
    assert shape_sizes.ensure_sizes(cfg, cache_root()) == path
    sounds_module().prepare_data()
    assert sounds_module().source.split("val").num_items == 20


def test_generation_time_fits_the_default_sizes():
    """Extrapolated to the defaults (10k + 1k + 1k items) each generator stays well under a
    minute: timed on the slowest split kind (balanced sizes: the largest objects)."""
    n, default = 150, 12000
    start = time.perf_counter()
    shape_sizes.generate_split(SizesConfig(num_val=n), "val")
    sizes_per_item = (time.perf_counter() - start) / n
    scenes = load_split(ensure_shapes(ShapesConfig(**_scene_sizes()), cache_root()), "train")
    objects = (scenes.objects * 4)[:n]
    start = time.perf_counter()
    shape_sounds.generate_split(SoundsConfig(ShapesConfig(**_scene_sizes())), objects, "train")
    sounds_per_item = (time.perf_counter() - start) / n
    print(f"sizes {sizes_per_item * 1e3:.2f} ms/item, sounds {sounds_per_item * 1e3:.2f} ms/item")
    assert sizes_per_item * default < 45 and sounds_per_item * default < 45


# ------------------------------------------------------------------ shapes_sizes


def test_coverage_is_the_shape_area_at_any_fractional_size_and_position():
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        for _ in range(20):
            size = rng.uniform(6, 54)
            x, y = rng.uniform(MARGIN + size / 2, 64 - MARGIN - size / 2, 2)
            cover = coverage(shape, x, y, size, 64)
            assert 0 <= cover.min() and cover.max() <= 1
            assert math.sqrt(cover.sum() / AREA[shape]) == pytest.approx(size, abs=0.06)
            yy, xx = np.mgrid[0:64, 0:64] + 0.5
            centre = ((cover * xx).sum() / cover.sum(), (cover * yy).sum() / cover.sum())
            if shape not in ("triangle", "star"):  # (their centroids are off the centre)
                assert centre == pytest.approx((x, y), abs=0.03)
            # inside the margin: translations by up to MARGIN - 1 pixels never cut the object
            assert cover[:MARGIN].sum() + cover[-MARGIN:].sum() == 0
            assert cover[:, :MARGIN].sum() + cover[:, -MARGIN:].sum() == 0


def test_training_sizes_are_long_tailed_and_evaluation_sizes_balanced():
    rng = np.random.default_rng(0)
    train = long_tail_sizes(rng, 10000, 6.0, 54.0)
    counts = np.bincount(np.floor(train - 6).astype(int), minlength=48)
    assert train.min() >= 6 and train.max() < 54 and len(counts) == 48
    many, few = (counts > 100).sum(), (counts < 20).sum()
    assert many >= 12 and few >= 8 and 48 - many - few >= 6  # all three regions exist
    assert counts.max() > 10 * np.median(counts[counts < 100])
    test = balanced_sizes(rng, 1000, 6.0, 54.0)
    per_bin = np.bincount(np.floor(test - 6).astype(int), minlength=48)
    assert per_bin.max() - per_bin.min() <= 1 and per_bin.sum() == 1000
    assert test.min() >= 6 and test.max() < 54


def test_size_targets_are_truthful_in_the_pixels_and_views_keep_them():
    dm = sizes_module()
    setup_with_words(dm, "fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["target/size"].dtype == torch.float32
    for i in range(len(batch["index"])):
        shape, size = SHAPES[batch["label/shape"][i]], float(batch["target/size"][i])
        measured, colour = measured_size(pixels(batch["image"][i]), shape)
        assert measured == pytest.approx(size, abs=0.5)
        nearest = np.argmin(((PALETTE - colour) ** 2).sum(1))
        assert nearest == batch["label/color"][i]
        for v in range(2):
            view = pixels(batch[f"image@{v}"][i])
            assert measured_size(view, shape)[0] == pytest.approx(size, rel=0.05, abs=0.5)
    # each view is its own draw (one in ~400 draws happens to be the identity)
    for other in ("image@1", "image"):
        same = [torch.equal(a, b) for a, b in zip(batch["image@0"], batch[other], strict=True)]
        assert sum(same) <= 1
    assert dm.train_targets("size").dtype == np.float32
    assert np.array_equal(dm.train_targets("size"), dm.source.split("train").targets["size"])
    with pytest.raises(KeyError, match="no target 'age'"):
        dm.train_targets("age")


# ------------------------------------------------------------------ shapes_sounds


def test_sound_carries_count_shape_and_timbre():
    dm = sounds_module()
    dm.prepare_data()
    scenes_dir = ensure_shapes(dm.source.generator.scenes, cache_root())
    sounds_dir = shape_sounds.sounds_dir(dm.source.generator, cache_root())
    scenes, beeps = load_split(scenes_dir, "val"), load_beeps(sounds_dir, "val")
    audio = np.load(sounds_dir / "val_audio.npy").astype(np.float32)
    fbank = mel_filterbank(40, 200, 8000)
    centres = fbank.argmax(1).numpy() * 8000 / 200  # Hz of each mel band's peak
    hop = 80
    for i, objects in enumerate(scenes.objects):
        assert len(beeps[i]) == len(objects) == scenes.labels["count"][i] + 1
        loud = audio[i].max(0)  # per frame: the loudest band
        for (start, end, f0), obj in zip(beeps[i], objects, strict=True):
            assert f0 == pytest.approx(PITCHES[obj.shape], rel=0.031)
            frames = slice(start // hop + 2, max(start // hop + 3, end // hop - 4))
            if obj.color in ("red", "pink"):  # fundamental strongest: loudest band at f0
                band = audio[i][:, frames].mean(1).argmax()
                assert abs(centres[band] - f0) < 0.2 * f0
            assert loud[frames].max() > loud.min() + 1  # beeps stand out of the noise
        for (_, end, _), (start, later, _) in zip(beeps[i], beeps[i][1:], strict=False):
            middle = (end + start) // 2 // hop  # frame middle - 1 lies within the gap
            assert loud[middle - 1] < loud[start // hop : later // hop - 2].max() - 2
    # siblings (colour or position swapped) sound different; so do different scenes
    first = int(np.flatnonzero(scenes.sibling >= 0)[0])
    assert not np.allclose(audio[first], audio[scenes.sibling[first]], atol=1.0)


def test_scene_sound_is_a_function_of_the_scene_and_the_draws():
    scenes = load_split(ensure_shapes(ShapesConfig(**_scene_sizes()), cache_root()), "train")
    cfg = SoundsConfig(ShapesConfig(**_scene_sizes()))
    a, spans = scene_sound(scenes.objects[0], np.random.default_rng(3), cfg)
    b, _ = scene_sound(scenes.objects[0], np.random.default_rng(3), cfg)
    assert np.array_equal(a, b) and a.shape == (cfg.num_samples,)
    assert spans[-1][1] <= cfg.num_samples and np.abs(a).max() < 1.0


# ------------------------------------------------------------------ batches


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batches_follow_the_contract(family):
    dm = FAMILIES[family]()
    setup_with_words(dm, "fit")
    train = next(iter(dm.train_dataloader()))
    val = next(iter(dm.val_dataloader()))
    b, e = 12, 8
    modal = {"image": (3, 64, 64), "audio": (40, 100)}
    view_keys = {f"{m}@{v}" for m, n in dm.views.items() for v in range(n)}
    expected = {f"label/{t}" for t in dm.labels} | {f"target/{t}" for t in dm.targets}
    expected |= {"index", "item_id", "skipped"}
    for m in dm.modalities:
        expected |= {"text_ids", "text_mask"} if m == "text" else {m}
    plain_in_training = {"views": set(), "sounds": {"image", "audio"}, "sizes": {"image"}}
    assert set(val) == expected
    train_expected = (expected - {"image"}) | plain_in_training[family] | view_keys
    assert set(train) == train_expected
    for batch, size in ((train, b), (val, e)):
        for key, value in batch.items():
            if key in modal or key in view_keys:
                assert value.shape == (size, *modal[key.split("@")[0]]) and value.dtype == (
                    torch.float32
                ), key
            elif key.startswith(("label/", "index", "item_id")):
                assert value.shape == (size,) and value.dtype == torch.long, key
            elif key.startswith("target/"):
                assert value.shape == (size,) and value.dtype == torch.float32, key
        assert batch["skipped"] == []
        assert torch.equal(batch["index"], batch["item_id"])
        for task, classes in dm.labels.items():
            assert 0 <= batch[f"label/{task}"].min() and batch[f"label/{task}"].max() < classes
    assert val["index"].tolist() == list(range(e))  # evaluation in order
    if "image" in dm.modalities:
        assert val["image"].min() >= -1 and val["image"].max() <= 1


def test_declared_interface():
    views, sounds, sizes = views_module(small_views=4), sounds_module(), sizes_module()
    assert views.modalities == ("image",) and views.pairs == () and views.targets == ()
    assert views.views == {"image": 6} and views.labels == {"shape": 6, "color": 6, "count": 3}
    assert views.class_retrieval_labels == ("shape", "color") and views.zero_shot_tasks == {}
    assert views.view_sizes == {f"image@{v}": 64 if v < 2 else 32 for v in range(6)}
    assert views.tower_context() == {"image_size": 64, "in_channels": 3}
    assert sounds.modalities == ("image", "audio", "text") and sounds.views == {}
    assert set(sounds.pairs) == {("image", "audio"), ("image", "text"), ("audio", "text")}
    assert sounds.zero_shot_tasks["shape"][0] == "a picture of a circle"
    assert [len(p) for p in sounds.zero_shot_tasks.values()] == [6, 6, 3]
    assert sounds.tower_context()["n_mels"] == 40 and sounds.tower_context()["audio_frames"] == 100
    assert sizes.targets == ("size",) and sizes.labels == {"shape": 6, "color": 6}
    assert sizes.views == {"image": 2} and sizes.class_retrieval_labels == ()
    assert views.tokenizer is None and sizes.tokenizer is None
    setup_with_words(sounds, "validate")  # builds the tokenizer from the training captions
    assert sounds.tokenizer is not None and "circle" in sounds.tokenizer.vocab
    for dm in (views, sounds, sizes):
        assert dm.zero_shot_binary_tasks == {} and dm.choice_tasks == {}
        setup_with_words(dm, "fit")
        assert dm.num_items("train") == 48 and dm.num_items("test") == 12
        assert "train 48 items" in dm.describe()


def test_views_are_independent_draws_of_the_same_item():
    flip = [{"name": "HorizontalFlip", "p": 1.0}]
    dm = views_module(view_augment=[flip, []])
    setup_with_words(dm, "fit")
    plain = dm.probe_loader("train")
    batch, probe = next(iter(dm.train_dataloader())), next(iter(plain))
    items = batch["item_id"]
    plain_images = torch.stack([plain.dataset[int(i)]["image"] for i in items])
    assert torch.equal(batch["image@0"], plain_images.flip(-1))
    assert torch.equal(batch["image@1"], plain_images)
    assert probe["index"].tolist() == list(range(8)) and "image@0" not in probe
    # the default recipe: every view its own draw, none equal to the plain image
    dm = views_module(small_views=2)
    setup_with_words(dm, "fit")
    sample = dm.datasets["train"][(3, 12345)]
    plain = dm.probe_loader("train").dataset[3]["image"]
    views = [sample[f"image@{v}"] for v in range(4)]
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[2], views[3])
    assert all(not torch.equal(v, plain) for v in views[:2])
    assert views[2].shape == (3, 32, 32)
    assert torch.equal(dm.datasets["train"][(3, 12345)]["image@1"], views[1])  # seeded
    assert not torch.equal(dm.datasets["train"][(3, 54321)]["image@1"], views[1])


def test_view_labels_are_the_scene_labels_and_colour_is_in_the_pixels():
    dm = views_module()
    setup_with_words(dm, "fit")
    scenes = load_split(ensure_shapes(dm.source.generator, cache_root()), "val")
    for batch in dm.val_dataloader():
        for i, item in enumerate(batch["item_id"].tolist()):
            main = scenes.objects[item][0]
            assert batch["label/shape"][i] == SHAPES.index(main.shape)
            assert batch["label/count"][i] == len(scenes.objects[item]) - 1
            centre = pixels(batch["image"][i])[main.y, main.x]
            assert np.argmin(((PALETTE - centre) ** 2).sum(1)) == batch["label/color"][i]


def test_training_captions_are_drawn_per_sample_evaluation_uses_the_first():
    dm = sounds_module()
    setup_with_words(dm, "fit")
    captions = dm.source.split("train").captions
    texts = {dm.datasets["train"][(0, seed)]["text"] for seed in range(40)}
    assert len(texts) > 2 and texts <= set(captions.all_texts()[:5])
    assert dm.datasets["val"][0]["text"] == dm.source.split("val").captions.text(0)
    assert dm.probe_loader("train").dataset[0]["text"] == captions.text(0)


# ------------------------------------------------------------------ loaders


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_ranks_load_slices_of_the_single_process_batches(family):
    make = FAMILIES[family]
    (single,) = loaders(make, 1)
    ranks = loaders(make, 2)
    assert all(len(r) == len(single) == 8 for r in ranks)  # 48 items / 12, two epochs
    for step, whole in enumerate(single):
        parts = [r[step] for r in ranks]
        assert all(len(p["index"]) == 6 for p in parts)
        for key, value in whole.items():
            if key in ("text_ids", "text_mask"):
                assert tokens(parts[0]) + tokens(parts[1]) == tokens(whole)
            elif isinstance(value, torch.Tensor):
                assert torch.equal(torch.cat([p[key] for p in parts]), value), key
    epochs = [torch.cat([b["item_id"] for b in single[i : i + 4]]) for i in (0, 4)]
    assert not torch.equal(epochs[0], epochs[1])  # a new order every epoch
    view = "image@0" if family != "sounds" else None
    if view:  # new augmentation draws every epoch
        first = {int(i): v for b in single[:4] for i, v in zip(b["item_id"], b[view], strict=True)}
        second = {int(i): v for b in single[4:] for i, v in zip(b["item_id"], b[view], strict=True)}
        assert any(not torch.equal(first[i], second[i]) for i in first.keys() & second.keys())


def test_evaluation_shards_cover_every_item_once():
    (single,) = loaders(sizes_module, 1, "val", epochs=1)
    ranks = loaders(sizes_module, 2, "val", epochs=1)
    seen = sorted({int(i) for r in ranks for b in r for i in b["index"]})
    assert seen == torch.cat([b["index"] for b in single]).tolist() == list(range(20))
    assert max(len(b["index"]) for b in ranks[0]) == 4  # eval_batch_size 8 over 2 ranks
    dm = sizes_module()
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)
    setup_with_words(dm, "fit")
    shard = [int(i) for b in dm.probe_loader("train", shard=True) for i in b["index"]]
    assert shard == list(range(1, 48, 2))


def test_a_resumed_epoch_continues_with_the_same_batches_and_views():
    dm = views_module()
    setup_with_words(dm, "fit")
    loader = dm.train_dataloader()
    whole = list(loader)
    state = {"generators": loader.state_dict()["generators"], "consumed": 2}
    again = views_module()
    setup_with_words(again, "fit")
    resumed_loader = again.train_dataloader()
    resumed_loader.load_state_dict(state)
    resumed = list(resumed_loader)
    assert len(resumed) == len(whole) - 2
    for a, b in zip(resumed, whole[2:], strict=True):
        assert torch.equal(a["item_id"], b["item_id"]) and torch.equal(a["image@1"], b["image@1"])


def test_bad_items_are_replaced_and_reported():
    def load(item: int) -> dict:
        if item == 1:
            raise MediaError("file 1.png could not be read")
        return {"image": np.full((8, 8, 3), item, np.uint8)}

    captions = Captions.from_lists([["a"], ["b"], ["c"]])
    source = ItemSplit(3, load, captions, {"kind": np.array([0, 1, 2])})
    dataset = ItemDataset(source, {"image": SeededImageTransform()})
    sample = dataset[1]
    assert sample["item_id"] == 2 and sample["text"] == "c" and sample["label/kind"] == 2
    assert sample["skipped"] == ["file 1.png could not be read"]
    with pytest.raises(RuntimeError, match="no tokenizer"):
        ItemCollate(None)([sample])
    with pytest.raises(ValueError, match="'kind' has 2 values for 3 items"):
        ItemSplit(3, load, labels={"kind": np.array([0, 1])})


def test_datasets_pickle_small_for_workers():
    for make in FAMILIES.values():
        dm = make()
        setup_with_words(dm, "fit")
        assert len(pickle.dumps(dm.datasets["train"])) < 50_000


# ------------------------------------------------------------------ config


def test_registered_and_configs_validated():
    for name, module in (
        ("shapes_views", ShapesViewsDataModule),
        ("shapes_sounds", ShapesSoundsDataModule),
        ("shapes_sizes", ShapesSizesDataModule),
    ):
        entry = DATAMODULES.get(name)
        assert entry.cls is module and entry.config().name == name
    crop = {"name": "RandomResizedCrop", "size": [32, 32], "scale": [0.2, 0.5]}
    cfg = as_dataclass(
        ShapesViewsDataConfig,
        {"views": 2, "view_augment": [[crop], [crop, {"name": "HorizontalFlip"}]], **TINY},
    )
    assert ShapesViewsDataModule(cfg).view_sizes == {"image@0": 32, "image@1": 32}
    with pytest.raises(ValueError, match="data.views >= 1"):
        ShapesViewsDataConfig(views=0)
    with pytest.raises(ValueError, match="augment.train is unused"):
        as_dataclass(ShapesViewsDataConfig, {"augment": {"train": [{"name": "HorizontalFlip"}]}})
    with pytest.raises(ValueError, match="3 step lists for 2 views"):
        ShapesSizesDataConfig(view_augment=[[], [], []])
    with pytest.raises(ValueError, match="size_min < size_max"):
        ShapesSizesDataConfig(size_max=60.0)
    with pytest.raises(ValueError, match="must cover"):
        ShapesSoundsDataConfig(audio_frames=50)
    with pytest.raises(ValueError, match="train_distribution"):
        ShapesSizesDataConfig(train_distribution="uniform")
