"""The platform's training loader on JPEG files against a plain PyTorch DataLoader, side by side.

    python benchmarks/data_path.py [--images 1024] [--size 224] [--batch 64]
                                   [--workers 0 1 2] [--formats jsonl coco] [--repeats 5]

It writes ``--images`` JPEG files (224-320 px a side, 1 to 5 captions each) into a temp dir
with a JSONL manifest and a COCO annotation file over them. Both sides then load the same
files the same way: PIL decode, RGB, bicubic resize to ``--size``, the same albumentations
step (``RandomResizedCrop``), conversion to float in [-1, 1], one random caption per image
tokenised by the same word-level tokenizer in the collate, random batches with the last
partial one dropped.

- platform: ``ImageTextDataModule(cfg, tokenizer)``, ``setup("fit")``, ``train_dataloader()``,
  the loader a training run gets (its sampler, resumable loader, skip-bad-file dataset,
  collate), with ``data.num_workers`` as given;
- plain: ``DataLoader(dataset, shuffle=True, drop_last=True, num_workers=...)`` over a
  ten-line dataset and collate doing the same decode, augmentation and tokenisation.

One measurement is one epoch from a freshly built loader: the clock runs from building the
loader (for the platform: ``train_dataloader()``) through worker start-up and every batch of
the epoch to its workers' shut-down, so both sides pay start-up and shut-down once per
measurement (in a run of several epochs the platform's persistent workers pay them once).
The sides alternate
(which one goes first alternates too) and the printed ratio is the median of the per-repeat
ratios of samples per second (platform / plain; above 1: the platform is faster).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import modules.env  # noqa: E402, F401  (before albumentations and lightning)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset, default_collate  # noqa: E402

from datamodules.image_text import ImageTextDataConfig, ImageTextDataModule  # noqa: E402
from datamodules.transforms import AugmentConfig, build_transforms  # noqa: E402
from modules.towers.tokenizer import WordTokenizer  # noqa: E402

# A crop as big as the picture comes back as PIL's read-only array; .float() copies it.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

WORDS = (
    "a an the dog cat bird car bus tree house man woman child ball red blue green small big "
    "on in under near beside with sitting running standing parked grass street table sofa "
    "field beach snow water two three several old young brown white black"
).split()


def write_images(root: Path, count: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``count`` JPEGs (smooth random colour fields, 224-320 px a side, quality 90) under
    ``root/images`` and 1-5 random captions each; returns ``(file name, captions)`` per image."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    items = []
    for i in range(count):
        width, height = (int(v) for v in rng.integers(224, 321, size=2))
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        name = f"{i:06d}.jpg"
        picture.save(root / "images" / name, quality=90)
        captions = [
            " ".join(rng.choice(WORDS, size=int(rng.integers(5, 16))))
            for _ in range(int(rng.integers(1, 6)))
        ]
        items.append((name, captions))
    return items


def write_manifests(root: Path, items: list[tuple[str, list[str]]]) -> None:
    """The items as ``train.jsonl`` and ``annotations/captions_train.json`` (COCO), and the
    first 64 as the val split of each (``setup("fit")`` reads it)."""
    for split, part in (("train", items), ("val", items[:64])):
        lines = [json.dumps({"image": f"images/{name}", "captions": c}) for name, c in part]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        images = [{"id": i, "file_name": name} for i, (name, _) in enumerate(part)]
        annotations = [
            {"id": len(images) * 10 + k, "image_id": i, "caption": text}
            for i, (_, captions) in enumerate(part)
            for k, text in enumerate(captions)
        ]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations})
        )


class PlainImageText(Dataset):
    """Image ``i``: decoded, resized, augmented, as float CHW in [-1, 1], with a random one of
    its captions."""

    def __init__(self, files: list[Path], captions: list[list[str]], size: int, augment) -> None:
        self.files, self.captions, self.size, self.augment = files, captions, size, augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]:
        texts = self.captions[i]
        text = texts[int(torch.randint(len(texts), ()))]
        with Image.open(self.files[i]) as image:
            rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        pixels = self.augment(image=np.asarray(rgb))["image"]
        return torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1.0, text, i


class PlainCollate:
    """PyTorch's ``default_collate`` of the images and item ids (in a worker it stacks straight
    into shared memory), and the captions tokenised."""

    def __init__(self, tokenizer: WordTokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, samples: list[tuple[torch.Tensor, str, int]]) -> dict[str, torch.Tensor]:
        images, texts, ids = zip(*samples, strict=True)
        text_ids, text_mask = self.tokenizer.encode(texts)
        return {
            "image": default_collate(images),
            "text_ids": text_ids,
            "text_mask": text_mask,
            "item_id": default_collate(ids),
        }


def epoch_seconds(build: Callable[[], Iterable]) -> tuple[float, int]:
    """Seconds from building a loader to the end of one epoch with its workers shut down
    (persistent workers at the loader's release, others after the last batch), and the
    samples seen."""
    start = time.perf_counter()
    loader = build()
    samples = sum(len(batch["image"]) for batch in loader)
    del loader
    gc.collect()
    return time.perf_counter() - start, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--formats", nargs="+", default=["jsonl", "coco"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    steps = [{"name": "RandomResizedCrop", "size": [args.size] * 2, "scale": [0.6, 1.0]}]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        items = write_images(root, args.images)
        write_manifests(root, items)
        tokenizer = WordTokenizer.build([c for _, captions in items for c in captions], 40)
        plain_data = PlainImageText(
            [root / "images" / name for name, _ in items],
            [captions for _, captions in items],
            args.size,
            build_transforms(steps),
        )
        print(
            f"{args.images} JPEGs ~{args.size + 48} px -> {args.size} px, RandomResizedCrop, "
            f"batch {args.batch}, one epoch per measurement from a fresh loader"
        )
        print("format  workers  plain samples/s  platform samples/s  platform/plain")
        for fmt in args.formats:
            for workers in args.workers:
                folder = "images" if fmt == "coco" else ""  # COCO file names hold no folder
                cfg = ImageTextDataConfig(
                    format=fmt,
                    root=tmp,
                    train_images=folder,
                    val_images=folder,
                    test_images=folder,
                    image_size=args.size,
                    batch_size=args.batch,
                    num_workers=workers,
                    augment=AugmentConfig(train=steps),
                )
                module = ImageTextDataModule(cfg, tokenizer)
                module.setup("fit")

                def plain(workers: int = workers) -> DataLoader:
                    return DataLoader(
                        plain_data,
                        batch_size=args.batch,
                        shuffle=True,
                        drop_last=True,
                        num_workers=workers,
                        collate_fn=PlainCollate(tokenizer),
                        generator=torch.Generator().manual_seed(0),
                    )

                sides = {"plain": plain, "platform": module.train_dataloader}
                rates: dict[str, list[float]] = {"plain": [], "platform": []}
                ratios = []
                for repeat in range(args.repeats):
                    order = ["plain", "platform"][:: 1 if repeat % 2 == 0 else -1]
                    for side in order:
                        seconds, samples = epoch_seconds(sides[side])
                        rates[side].append(samples / seconds)
                    ratios.append(rates["platform"][-1] / rates["plain"][-1])
                print(
                    f"{fmt:6s}  {workers:7d}  {statistics.median(rates['plain']):15.0f}  "
                    f"{statistics.median(rates['platform']):18.0f}  "
                    f"{statistics.median(ratios):14.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
