"""Embedding plots: an item-caption similarity matrix and a 2-D PCA of both modalities.

They show the data's first two encoders (item side, caption side); data with one modality
gets no plot.

Written as files at the end of fit (from the last validation epoch, sanity check excluded), at
the end of a stand-alone ``trainer.validate`` and at the end of test (files prefixed ``test_``).
With an MLflow logger every validation epoch's plots are also logged as images (keys
``plots/val/similarity_matrix`` and ``plots/val/embedding_pca``, step = epoch), so the UI steps
through training; the test plots are logged once under ``plots/test/...`` at the number of
epochs trained. Each rank keeps the first ``max_points`` rows it sees; only global rank 0 draws,
from its own rows (its share of the split under DDP). Nothing here is collective, so no rank
waits on another.
"""

from __future__ import annotations

import modules.env  # noqa: F401

from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.trainer.states import TrainerFn
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from callbacks.metrics import first_occurrence

_KEYS = ("item", "caption", "item_id", "index")


class EmbeddingPlots(pl.Callback):
    """Writes ``{prefix}similarity_matrix.png`` and ``{prefix}embedding_pca.png`` to
    ``output_dir`` and, with an ``MLFlowLogger``, logs them as artifacts under ``plots/``."""

    def __init__(
        self,
        output_dir: str | Path = "plots",
        max_points: int = 1024,
        matrix_size: int = 64,
        pair_lines: int = 8,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.max_points = max_points
        self.matrix_size = matrix_size
        self.pair_lines = pair_lines
        self._rows: dict[str, list[dict[str, Tensor]]] = {"val": [], "test": []}
        # the epoch the kept rows come from (a test runs after the last epoch: epochs trained)
        self._epoch: dict[str, int] = {"val": 0, "test": 0}
        self._modalities: tuple[str, str] = ("image", "text")

    # -- hooks ---------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._rows["val"], self._epoch["val"] = [], trainer.current_epoch

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows["test"], self._epoch["test"] = [], trainer.current_epoch

    def on_validation_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking:
            self._keep("val", pl_module, outputs)

    def on_test_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._keep("test", pl_module, outputs)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self._mlflow(trainer):
            self._log_images(trainer, self._draw(trainer, "val"), "val")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, self._draw(trainer, "val"), "")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._write(trainer, self._draw(trainer, "val"), "")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        figures = self._draw(trainer, "test")  # drawn once: a file and an MLflow image
        self._write(trainer, figures, "test_")
        self._log_images(trainer, figures, "test")

    # -- work ----------------------------------------------------------------------------------
    def _keep(self, stage: str, pl_module: pl.LightningModule, outputs: Any) -> None:
        kept = sum(len(r["index"]) for r in self._rows[stage])
        room = self.max_points - kept
        if not outputs or room <= 0:
            return
        embeddings = outputs["embeddings"]
        if len(embeddings) < 2:  # one modality: nothing to pair
            return
        self._modalities = tuple(list(embeddings)[:2])
        a, b = self._modalities
        pairs = {"item": embeddings[a], "caption": embeddings[b], **outputs}
        kept_rows = {k: pairs[k][:room].detach().cpu() for k in _KEYS}
        for k in ("item", "caption"):
            kept_rows[k] = kept_rows[k].float()
        self._rows[stage].append(kept_rows)

    def _draw(self, trainer: pl.Trainer, stage: str) -> dict[str, Figure]:
        """The plots of ``stage``'s kept rows, titled with the split and epoch (none off global
        rank 0 or without rows)."""
        if not trainer.is_global_zero or not self._rows[stage]:
            return {}
        rows = {k: torch.cat([r[k] for r in self._rows[stage]]) for k in _KEYS}
        where = f"{stage}, epoch {self._epoch[stage]}"
        return {
            "similarity_matrix": self._similarity_matrix(rows, where),
            "embedding_pca": self._projection(rows, where),
        }

    def _write(self, trainer: pl.Trainer, figures: dict[str, Figure], prefix: str) -> None:
        """The figures as PNG files in ``output_dir``, logged as MLflow artifacts."""
        if not figures:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, fig in figures.items():
            paths.append(self.output_dir / f"{prefix}{name}.png")
            fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
        for logger in self._mlflow(trainer):
            for path in paths:
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="plots")

    def _log_images(self, trainer: pl.Trainer, figures: dict[str, Figure], stage: str) -> None:
        """The figures as MLflow images (one key per plot, step = epoch)."""
        for name, fig in figures.items():
            buffer = BytesIO()
            fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            image = Image.open(buffer)
            for logger in self._mlflow(trainer):
                # a logger that buffers when the tracker is down has its own log_image
                log_image = getattr(logger, "log_image", None) or partial(
                    logger.experiment.log_image, logger.run_id
                )
                log_image(image, key=f"plots/{stage}/{name}", step=self._epoch[stage])

    @staticmethod
    def _mlflow(trainer: pl.Trainer) -> list[MLFlowLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)]

    def _similarity_matrix(self, rows: dict[str, Tensor], where: str) -> Figure:
        """Cosine similarity of the first images against the first caption of each of them."""
        first = first_occurrence(rows["item_id"]).sort().values[: self.matrix_size]
        item = F.normalize(rows["item"][first], dim=1)
        caption = F.normalize(rows["caption"][first], dim=1)
        a, b = self._modalities
        fig = Figure(figsize=(6, 5))
        ax = fig.add_subplot()
        shown = ax.imshow((item @ caption.T).numpy(), cmap="viridis", vmin=-1, vmax=1)
        fig.colorbar(shown, ax=ax, label="cosine similarity")
        ax.set(xlabel=f"{b} (first of {a} j)", ylabel=f"{a} i")
        ax.set_title(f"{a}-{b} similarity, {len(first)} items ({where})")
        return fig

    def _projection(self, rows: dict[str, Tensor], where: str) -> Figure:
        """Joint 2-D PCA (exact SVD) of distinct items and distinct captions."""
        images = first_occurrence(rows["item_id"])
        texts = first_occurrence(rows["index"])
        image = F.normalize(rows["item"][images], dim=1)
        text = F.normalize(rows["caption"][texts], dim=1)
        both = torch.cat([image, text])
        centred = both - both.mean(dim=0)
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        xy = (centred @ vh[:2].T).numpy()
        explained = (s[:2].pow(2).sum() / s.pow(2).sum().clamp_min(1e-12)).item()
        img_xy, txt_xy = xy[: len(image)], xy[len(image) :]
        fig = Figure(figsize=(6, 5))
        ax = fig.add_subplot()
        for i, row in enumerate(images[: self.pair_lines].tolist()):  # image -> a caption of it
            t = int(torch.searchsorted(rows["index"][texts], rows["index"][row]))
            ax.plot(*zip(img_xy[i], txt_xy[t], strict=True), color="grey", lw=0.8, zorder=1)
        ax.scatter(img_xy[:, 0], img_xy[:, 1], s=10, label=self._modalities[0], zorder=2)
        ax.scatter(txt_xy[:, 0], txt_xy[:, 1], s=10, label=self._modalities[1], zorder=2)
        ax.legend()
        ax.set_title(f"PCA of normalised embeddings, {100 * explained:.0f}% variance ({where})")
        return fig
