"""Webdataset tar shards (``data.format: webdataset``): the shard scan (captions from .txt or
.json, labels, structural errors), training streamed across simulated DDP ranks and loader
workers (every sample at most once, all of them when the shards divide evenly, the same number
of batches on every rank, a per-epoch shard order), evaluation over every sample, a corrupt
image skipped and reported, a resumed epoch, and shard patterns that match nothing."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from callbacks.data_health import SkippedSamples
from datamodules import ImageTextDataConfig, ImageTextDataModule
from datamodules.formats import LabelReader, ShardStream, expand_shards, scan_shards
from datamodules.formats.webdataset import round_robin_skips, shuffle_buffer
from tests.tiny_modules import setup_with_words, tiny_module

PER_SHARD = 4


def _png(rgb: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (6, 5), rgb).save(out, format="PNG")
    return out.getvalue()


def _color(item: int) -> tuple[int, int, int]:
    return (10 * item, 255 - 10 * item, 100)


def _write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _samples(shard: int, corrupt: int | None = None) -> list[tuple[str, bytes]]:
    """``PER_SHARD`` samples; shard 0 has .txt captions, the others .json with two captions and
    a ``label`` (the last sample of each has none); ``corrupt``: that sample's PNG is garbage."""
    members = []
    for k in range(PER_SHARD):
        item, key = shard * PER_SHARD + k, f"s{shard}/k{k:02d}"
        image = b"garbage, not a PNG" * 4 if k == corrupt else _png(_color(item))
        members.append((f"{key}.png", image))
        if shard == 0:
            members.append((f"{key}.txt", f"picture {item}\n".encode()))
        else:
            record = {"captions": [f"picture {item}", f"image {item}"]}
            if k < PER_SHARD - 1:
                record["label"] = ["cat", "dog"][item % 2]
            members.append((f"{key}.json", json.dumps(record).encode()))
    return members


def _write_shards(root, split: str = "train", shards: int = 3, corrupt=None) -> None:
    """``<split>-00000{s}.tar``; ``corrupt``: (shard, sample) whose image is garbage."""
    for s in range(shards):
        bad = corrupt[1] if corrupt is not None and corrupt[0] == s else None
        _write_tar(root / f"{split}-{s:06d}.tar", _samples(s, bad))


def _config(root, shards: int = 3, val: str = "val", **overrides) -> ImageTextDataConfig:
    """Shards ``train-*`` and ``<val>-*``: a test that only trains validates on ``train``."""
    last = shards - 1
    return ImageTextDataConfig(
        **{
            "format": "webdataset",
            "root": str(root),
            "train_shards": f"train-{{000000..{last:06d}}}.tar",
            "val_shards": f"{val}-{{000000..{last:06d}}}.tar",
            "image_size": 4,
            "batch_size": 4,
            "eval_batch_size": 4,
            "shuffle_buffer": 3,
            **overrides,
        }
    )


def _on_rank(dm: ImageTextDataModule, rank: int, world: int, epoch: int = 0) -> None:
    """What the datamodule reads of a trainer: rank, world size and epoch."""
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world, current_epoch=epoch)


def _epoch(root, rank: int, world: int, epoch: int, shards: int = 3, **overrides) -> list[dict]:
    dm = ImageTextDataModule(_config(root, shards, val="train", **overrides))
    setup_with_words(dm, "fit")
    _on_rank(dm, rank, world, epoch)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(loader) == len(batches)
    return batches


def test_scan_reads_captions_labels_and_image_offsets(tmp_path):
    _write_shards(tmp_path)
    reader = LabelReader(["label"])
    paths = expand_shards("train-{000000..000002}.tar", tmp_path, "data.train_shards")
    index = scan_shards(paths, reader)
    assert index.shard_items.tolist() == [0, 4, 8, 12]
    assert index.captions.all_texts()[:6] == [
        "picture 0",
        "picture 1",
        "picture 2",
        "picture 3",
        "picture 4",
        "image 4",
    ]
    assert index.captions.num_items == 12 and len(index.captions) == 4 + 8 * 2
    assert index.member(5).endswith("train-000001.tar:s1/k01.png")
    assert Image.open(io.BytesIO(index.read(5))).getpixel((0, 0)) == _color(5)
    column = reader.columns(range(12))["label"]
    values = [column.values[c] if c >= 0 else None for c in column.codes[4:8]]
    assert values == ["cat", "dog", "cat", None]
    assert column.places[0].endswith("train-000001.tar:s1/k00.json")


def test_batches_decode_images_captions_and_labels(tmp_path):
    _write_shards(tmp_path)
    _write_shards(tmp_path, "val")
    dm = ImageTextDataModule(_config(tmp_path))
    setup_with_words(dm, "fit")
    assert dm.label_classes() == {"label": ["cat", "dog"]}
    assert len(dm.zero_shot_tasks["label"]) == 2 and dm.class_retrieval_labels == ("label",)
    batches = list(dm.val_dataloader())
    item_id = torch.cat([b["item_id"] for b in batches])
    index = torch.cat([b["index"] for b in batches])
    assert index.tolist() == list(range(20)) and item_id.tolist()[:6] == [0, 1, 2, 3, 4, 4]
    labels = torch.cat([b["label/label"] for b in batches])
    assert labels.tolist()[:12] == [-1, -1, -1, -1, 0, 0, 1, 1, 0, 0, -1, -1]
    images = torch.cat([b["image"] for b in batches])
    for row, item in zip(images, item_id.tolist(), strict=True):
        expected = torch.tensor(_color(item), dtype=torch.float32) / 127.5 - 1
        assert torch.allclose(row.mean((1, 2)), expected, atol=1e-5)
    words = dm.tokenizer.decode(batches[1]["text_ids"])
    assert words == ["picture 4", "image 4", "picture 5", "image 5"]
    train = list(dm.train_dataloader())
    assert all(b["image"].shape == (4, 3, 4, 4) and "label/label" in b for b in train)


@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_two_workers_see_every_sample_once(tmp_path, workers):
    _write_shards(tmp_path, shards=4)
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            batches = _epoch(tmp_path, rank, 2, epoch, shards=4, num_workers=workers)
            assert [len(b["item_id"]) for b in batches] == [2] * 4  # batch_size / world
            seen += torch.cat([b["item_id"] for b in batches]).tolist()
        assert sorted(seen) == list(range(16))


def test_uneven_shards_give_every_rank_the_same_batches_and_no_repeat(tmp_path):
    _write_shards(tmp_path, shards=3)
    orders = []
    for epoch in range(4):
        per_rank = [_epoch(tmp_path, rank, 2, epoch, num_workers=2) for rank in (0, 1)]
        # rank 0 holds two shards, rank 1 one: both stop after rank 1's batches
        assert [len(batches) for batches in per_rank] == [2, 2]
        items = [torch.cat([b["item_id"] for b in batches]).tolist() for batches in per_rank]
        assert len(set(items[0] + items[1])) == 8
        assert len({item // PER_SHARD for item in items[1]}) == 1
        orders.append(items[1][0] // PER_SHARD)
    assert len(set(orders)) > 1  # the shard order changes with the epoch
    again = _epoch(tmp_path, 1, 2, 3, num_workers=2)
    assert torch.cat([b["item_id"] for b in again]).tolist() == items[1]  # seeded


def test_caption_pairs_stream_every_caption(tmp_path):
    _write_shards(tmp_path, shards=3)
    batches = _epoch(tmp_path, 0, 1, 0, train_pairs="caption")
    index = torch.cat([b["index"] for b in batches]).tolist()
    assert len(index) == 20 and sorted(index) == list(range(20))


def test_evaluation_shards_every_sample_over_ranks_and_workers(tmp_path):
    _write_shards(tmp_path, "val")
    _write_shards(tmp_path)
    seen = Counter()
    for rank in (0, 1):
        dm = ImageTextDataModule(_config(tmp_path, num_workers=2, eval_batch_size=6))
        setup_with_words(dm, "validate")
        _on_rank(dm, rank, 2)
        for batch in dm.val_dataloader():
            seen.update(batch["index"].tolist())
    assert sorted(seen) == list(range(20)) and set(seen.values()) == {1}


def test_corrupt_image_member_is_skipped_and_reported(tmp_path):
    _write_shards(tmp_path, corrupt=(2, 1))
    _write_shards(tmp_path, "val", corrupt=(2, 1))
    batches = _epoch(tmp_path, 0, 1, 0, shuffle_buffer=0)
    reasons = [reason for b in batches for reason in b["skipped"]]
    assert (
        len(reasons) == 1 and "train-000002.tar:s2/k01.png (item 9) could not be read" in reasons[0]
    )
    assert sum(len(b["item_id"]) for b in batches) == 12  # batches keep their size
    dm = ImageTextDataModule(_config(tmp_path))
    setup_with_words(dm, "validate")
    reasons = [reason for b in dm.val_dataloader() for reason in b["skipped"]]
    assert len(reasons) == 2 and all("val-000002.tar:s2/k01.png" in r for r in reasons)


def test_resumed_epoch_yields_the_batches_it_had_left(tmp_path):
    _write_shards(tmp_path, shards=3)
    dm = ImageTextDataModule(_config(tmp_path, val="train", batch_size=2, num_workers=2))
    setup_with_words(dm, "fit")
    _on_rank(dm, 0, 1, epoch=1)
    full = [b["item_id"].tolist() for b in dm.train_dataloader()]
    assert len(full) == 6
    loader = dm.train_dataloader()
    loader.load_state_dict({"epoch": 1, "consumed": 3})
    rest = [b["item_id"].tolist() for b in loader]
    assert len(rest) == 3
    assert sorted(map(tuple, full[:3] + rest)) == sorted(map(tuple, full))
    assert round_robin_skips([3, 1, 2], 4) == [2, 1, 1]
    assert round_robin_skips([3, 1, 2], 6) == [3, 1, 2]


def test_stream_plan_splits_shards_and_equalises_batches():
    shard_samples = np.array([0, 10, 13, 25, 40, 41])  # 10, 3, 12, 15 and 1 samples
    counts = np.diff(shard_samples)
    for epoch in range(6):
        plans = [ShardStream([], shard_samples, 4, r, 2, 2, seed=5).plan(epoch) for r in (0, 1)]
        shards = [[s for worker in plan[0] for s in worker] for plan in plans]
        assert sorted(shards[0] + shards[1]) == list(range(5))
        assert sum(plans[0][1]) == sum(plans[1][1])  # the same number of steps per rank
        for worker_shards, quotas in plans:
            for own, quota in zip(worker_shards, quotas, strict=True):
                assert quota * 2 <= counts[own].sum()  # only whole local batches of 2
    stream = ShardStream([], shard_samples, 4, 1, 2, 2, seed=5)
    stream.epoch = 3
    assert len(stream) == sum(stream.plan(3)[1])
    with pytest.raises(ValueError, match="must divide evenly over 2"):
        ShardStream([], np.array([0, 4, 8]), 3, 0, 2)
    with pytest.raises(ValueError, match="2 training shards for 3 processes"):
        ShardStream([], np.array([0, 4, 8]), 3, 0, 3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        ShardStream([], np.array([0, 1, 2]), 4, 0, 2).plan(0)


def test_shuffle_buffer_mixes_nearby_samples_only():
    rng = np.random.default_rng(0)
    out = list(shuffle_buffer(iter(range(50)), 8, rng))
    assert sorted(out) == list(range(50)) and out != list(range(50))
    assert all(sample <= position + 8 for position, sample in enumerate(out))
    assert list(shuffle_buffer(iter(range(5)), 0, rng)) == list(range(5))


def test_shard_patterns_and_structure_errors(tmp_path):
    _write_shards(tmp_path, shards=2)
    with pytest.raises(FileNotFoundError, match=r"data.train_shards 'x-\{0..3\}.tar' matches no"):
        expand_shards("x-{0..3}.tar", tmp_path, "data.train_shards")
    with pytest.raises(FileNotFoundError, match=r"1 of 3 shards are missing .*: train-000002"):
        expand_shards("train-{000000..000002}.tar", tmp_path, "data.train_shards")
    dm = ImageTextDataModule(_config(tmp_path, train_shards="nothing-{00..09}.tar"))
    with pytest.raises(FileNotFoundError, match="matches no file under"):
        setup_with_words(dm, "fit")
    with pytest.raises(ValueError, match="needs data.val_shards"):
        ImageTextDataModule(_config(tmp_path, shards=2, val_shards=None)).setup("fit")
    bad = tmp_path / "bad.tar"
    cases = {
        "no caption": ([("a.png", _png((1, 2, 3)))], r"bad\.tar: sample 'a' has no caption"),
        "no image": ([("a.txt", b"x")], r"bad\.tar: sample 'a' has no image member"),
        "json": ([("a.png", b"x"), ("a.json", b"{")], r"bad\.tar:a\.json: invalid JSON"),
        "label": (
            [("a.png", b"x"), ("a.json", b'{"caption": "x", "label": 1.5}')],
            r"bad\.tar:a\.json: label 'label' must be",
        ),
    }
    for members, message in cases.values():
        _write_tar(bad, members)
        with pytest.raises(ValueError, match=message):
            scan_shards([bad], LabelReader(["label"]))
    _write_tar(bad, _samples(0))
    data = bytearray(bad.read_bytes())
    data[1024:1040] = b"\xff" * 16  # the second member's header
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad\.tar: corrupt tar header at byte 1024"):
        scan_shards([bad])
    bad.write_bytes(b"\x1f\x8b" + bytes(600))
    with pytest.raises(ValueError, match="not a readable uncompressed tar archive"):
        scan_shards([bad])


def test_unknown_label_names_the_shard_member(tmp_path):
    _write_shards(tmp_path, shards=2)
    _write_shards(tmp_path, "val", shards=2)
    dm = ImageTextDataModule(_config(tmp_path, shards=2, class_names={"label": ["cat"]}))
    with pytest.raises(ValueError, match=r"train-000001\.tar:s1/k01\.json: label 'label' is 'dog'"):
        setup_with_words(dm, "fit")


class _Items(L.Callback):
    """The training items of every batch, per epoch."""

    def __init__(self) -> None:
        self.epochs: list[list[int]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append([])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.epochs[-1] += batch["item_id"].tolist()


def test_lightning_trains_on_shards_and_validates(tmp_path):
    _write_shards(tmp_path, shards=4, corrupt=(3, 0))
    _write_shards(tmp_path, "val", shards=2)
    cfg = _config(
        tmp_path, shards=4, image_size=16, max_text_len=8, label_fields=[], max_skipped_fraction=0.5
    )
    cfg.val_shards = "val-{000000..000001}.tar"
    dm = ImageTextDataModule(cfg)
    setup_with_words(dm, "fit")
    items, skipped = _Items(), SkippedSamples()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        logger=False,
        callbacks=[items, skipped],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    trainer.fit(tiny_module(dm.tokenizer.vocab), datamodule=dm)
    # item 12 (corrupt) is replaced by the next one, 13
    every = sorted([*range(12), 13, 13, 14, 15])
    assert [sorted(epoch) for epoch in items.epochs] == [every] * 3
    assert len({tuple(epoch) for epoch in items.epochs}) == 3  # a new order every epoch
    assert skipped.seen == {"train": 48, "val": 3 * 12, "test": 0}
    assert skipped.skipped["train"] == 3  # the corrupt image, once per epoch


def test_webdataset_without_training_shards_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="data.train_shards: data.format webdataset needs"):
        _config(tmp_path, train_shards=None)
