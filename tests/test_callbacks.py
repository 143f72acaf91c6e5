"""EmbeddingMetrics and EmbeddingPlots inside a tiny real Lightning Trainer (CPU)."""

from __future__ import annotations

import modules.env  # noqa: F401

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from callbacks import (
    AlignmentUniformity,
    EmbeddingMetrics,
    EmbeddingPlots,
    ModalityGap,
    RetrievalMetrics,
)
from callbacks.metrics import binary_auroc

CAPTIONS, IMAGES, VOCAB, DIM = 4, 4, 50, 8
PROMPTS = {"parity": ["an even picture", "an odd picture"]}
BINARY = {"odd": ("an even picture", "an odd picture")}
CHOICES = {"swapped": ("image_other", "image")}  # another image as the wrong candidate


class PairSet(Dataset):
    """IMAGES images x CAPTIONS captions, one item per (image, caption) pair."""

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(IMAGES, 3, 4, 4, generator=g)
        self.words = torch.randint(0, VOCAB, (IMAGES * CAPTIONS, 5), generator=g)

    def __len__(self) -> int:
        return IMAGES * CAPTIONS

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item_id = index // CAPTIONS
        return {
            "image": self.pixels[item_id],
            "image_other": self.pixels[(item_id + 1) % IMAGES],
            "label/odd": torch.tensor(item_id % 2),
            "text_ids": self.words[index],
            "text_mask": torch.ones(5, dtype=torch.bool),
            "index": torch.tensor(index),
            "item_id": torch.tensor(item_id),
            "label/parity": torch.tensor(-1 if item_id == 0 else item_id % 2),
        }


class PairData(pl.LightningDataModule):
    zero_shot_tasks = PROMPTS
    zero_shot_binary_tasks = BINARY
    choice_tasks = CHOICES

    def train_dataloader(self) -> DataLoader:
        return DataLoader(PairSet(0), batch_size=8, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(PairSet(1), batch_size=8)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(PairSet(2), batch_size=8)


class TinyDualTower(pl.LightningModule):
    """Linear image tower, bag-of-words text tower, CLIP loss; returns the eval contract."""

    modalities = ("image", "text")

    def __init__(self) -> None:
        super().__init__()
        self.towers = nn.ModuleDict(
            {"image": nn.Linear(48, DIM), "text": nn.EmbeddingBag(VOCAB, DIM)}
        )

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.towers["image"](pixels.flatten(1)), dim=1)

    def embed(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.embed_images(batch["image"])
        return image, F.normalize(self.towers["text"](batch["text_ids"]), dim=1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        ids = torch.tensor([[ord(c) % VOCAB for c in t[:12].ljust(12)] for t in texts])
        return F.normalize(self.towers["text"](ids.to(self.device)), dim=1)

    def encode_input(self, batch, modality: str, key: str) -> torch.Tensor:
        assert modality == "image"
        return self.embed_images(batch[key])

    def training_step(self, batch, batch_idx):
        image, text = self.embed(batch)
        logits = 10 * image @ text.T
        return F.cross_entropy(logits, torch.arange(len(logits)))

    def validation_step(self, batch, batch_idx):
        image, text = self.embed(batch)
        return {
            "embeddings": {"image": image, "text": text},
            "raw": {"image": image, "text": text},
            "item_id": batch["item_id"],
            "index": batch["index"],
            "labels": {"parity": batch["label/parity"], "odd": batch["label/odd"]},
            "targets": {},
            "outputs": {},
        }

    def evaluators(self) -> dict:
        return {}

    test_step = validation_step

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def expected(module: TinyDualTower, seed: int, stage: str) -> dict[str, float]:
    """The metrics on the whole split at once; zero-shot and choice scores counted by hand."""
    loader = DataLoader(PairSet(seed), batch_size=len(PairSet(seed)))
    batch = next(iter(loader))
    module.eval()
    with torch.no_grad():
        image, text = module.embed(batch)
        classes = module.encode_texts(PROMPTS["parity"])
        other = module.embed_images(batch["image_other"])
    rows = (image, text, batch["item_id"], batch["index"])
    out = {}
    for metric in (RetrievalMetrics(), AlignmentUniformity(), ModalityGap()):
        metric.update(*rows)
        for key, value in metric.compute().items():
            prefix = "retrieval/" if isinstance(metric, RetrievalMetrics) else ""
            out[f"{stage}/{prefix}{key}"] = float(value)
    i2t, t2i = (out[f"{stage}/retrieval/{d}/R1"] for d in ("image_to_text", "text_to_image"))
    out[f"{stage}/retrieval/mean_R1"] = (i2t + t2i) / 2
    preds = (image @ classes.T).argmax(dim=1).tolist()
    labels = batch["label/parity"].tolist()
    scored = [p == y for p, y in zip(preds, labels, strict=True) if y >= 0]
    out[f"{stage}/zero_shot/parity/accuracy"] = 100.0 * sum(scored) / len(scored)
    # one row per image for the yes/no task (its captions repeat the image)
    first = torch.arange(IMAGES) * CAPTIONS
    score = (image @ classes[1] - image @ classes[0])[first]
    auroc = binary_auroc(score, batch["label/odd"][first])
    out[f"{stage}/zero_shot/odd/auroc"] = out[f"{stage}/zero_shot/mean_auroc"] = float(auroc)
    # choice: each caption against its own image and against the next image
    own, wrong = (image * text).sum(1), (other * text).sum(1)
    out[f"{stage}/swapped/accuracy"] = 100.0 * float((own > wrong).float().mean())
    labels = torch.cat([torch.ones(len(own)), torch.zeros(len(own))])
    out[f"{stage}/swapped/auroc"] = float(binary_auroc(torch.cat([own, wrong]), labels))
    return out


def assert_logged(metrics: dict, want: dict[str, float]) -> None:
    for key, value in want.items():
        assert key in metrics, key
        assert float(metrics[key]) == pytest.approx(value, abs=1e-4), key


def test_callbacks_in_trainer(tmp_path, monkeypatch):
    # MLflow's file store: the sqlite store's table migrations alone cost ~7 s
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    torch.manual_seed(0)
    logger = MLFlowLogger(experiment_name="callbacks", tracking_uri=f"file:{tmp_path}/mlruns")
    module, data = TinyDualTower(), PairData()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        limit_train_batches=2,
        num_sanity_val_steps=1,
        logger=logger,
        callbacks=[
            EmbeddingMetrics({"options": {"retrieval": {"block_size": 3}}}),
            EmbeddingPlots(tmp_path / "plots"),
        ],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    assert_logged(trainer.callback_metrics, expected(module, 1, "val"))
    assert {"val/retrieval/image_to_text/median_rank", "val/uniformity/text"} <= set(
        trainer.callback_metrics
    )

    trainer.test(module, datamodule=data)
    assert_logged(trainer.callback_metrics, expected(module, 2, "test"))

    names = ["similarity_matrix.png", "embedding_pca.png"]
    written = {p.name for p in (tmp_path / "plots").iterdir()}
    assert written == set(names) | {f"test_{n}" for n in names}
    for name in written:
        assert (tmp_path / "plots" / name).stat().st_size > 5000
    artifacts = logger.experiment.list_artifacts(logger.run_id, "plots")
    assert {a.path.split("/")[-1] for a in artifacts} == written


def test_validate_without_datamodule_skips_zero_shot(tmp_path):
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[EmbeddingMetrics(), EmbeddingPlots(tmp_path)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = TinyDualTower()
    trainer.validate(module, dataloaders=PairData().val_dataloader())
    tasks = ("zero_shot", "swapped")
    want = {k: v for k, v in expected(module, 1, "val").items() if k.split("/")[1] not in tasks}
    assert_logged(trainer.callback_metrics, want)
    assert not any(k.split("/")[1] in tasks for k in trainer.callback_metrics)
    assert (tmp_path / "similarity_matrix.png").exists()
