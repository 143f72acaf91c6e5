"""Chest radiograph studies paired with their reports: the built-in synthetic chest data, or
MIMIC-CXR / IU-Xray on disk.

An item is a study (one or more views); its one caption is the report reduced to the
configured sections (``"findings : ... impression : ..."``, see
:func:`datamodules.formats.reports.select_sections`). Training shows a random view of the study
per draw (``train_views: random``) or the first; evaluation always shows the first view, the
frontal one where the study has one.

Batches: ``image`` float32 [B, 1, S, S] in [-1, 1], ``text_ids`` / ``text_mask``, ``index``,
``item_id`` (study id in the split), ``label/<finding>`` (1 present, 0 absent, -1 unknown or
uncertain), ``boxes`` float32 [B, K, 4] (normalised x0, y0, x1, y1 of the findings in the view
shown, -1 padded) with ``box_finding`` long [B, K] (finding id, -1 padding), and ``view`` long
(0 frontal, 1 lateral or other). Boxes are not transformed by augmentation: use photometric
steps only.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from datamodules.config import SourceDataConfig
from datamodules.errors import DataError
from datamodules.formats.reports import (
    PREAMBLE,
    SECTION_ALIASES,
    parse_report,
    select_sections,
)
from datamodules.pairs import PairDataModule, PairDataset
from datamodules.sources.medical_report import FileViews, MedicalReportSource, ViewTable
from datamodules.storage import Captions, MappedArray
from datamodules.transforms import ImageTransform
from modules.registry import DATAMODULES

TRAIN_VIEWS = ("random", "first")
SECTIONS = (*sorted(set(SECTION_ALIASES.values())), PREAMBLE)
#: Finding -> (negative prompt, positive prompt), in the reports' words.
BINARY_PROMPTS = {
    "nodule": ("no suspicious pulmonary nodule", "there is a pulmonary nodule"),
    "opacity": ("no focal opacity", "there is focal airspace opacity"),
    "effusion": ("no pleural effusion", "there is a pleural effusion"),
    "cardiomegaly": ("heart size is normal", "the heart is enlarged"),
    "pneumothorax": ("no pneumothorax", "there is a pneumothorax"),
}


@dataclass
class MedicalReportDataConfig(SourceDataConfig):
    """Data block of an experiment. ``num_*``, ``normal_fraction`` and ``lateral_fraction``
    shape the built-in data; ``root`` and the file names locate a real one (the formats:
    datamodules/sources/medical_report.py)."""

    family: ClassVar[str] = "medical_report"

    name: str = "medical_report"
    # MIMIC-CXR, relative to root (split and chexpert files are optional; .csv.gz accepted)
    metadata_file: str = "mimic-cxr-2.0.0-metadata.csv"
    split_file: str = "mimic-cxr-2.0.0-split.csv"
    chexpert_file: str = "mimic-cxr-2.0.0-chexpert.csv"
    files_dir: str = "files"
    # IU-Xray (R2Gen layout), relative to root
    annotation_file: str = "annotation.json"
    images_dir: str = "images"
    sections: list[str] = field(default_factory=lambda: ["findings", "impression"])
    train_views: str = "random"  # random: a random view of the study per draw | first
    image_size: int = 64
    max_text_len: int = 64
    num_train: int = 6000
    normal_fraction: float = 0.6
    lateral_fraction: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_views not in TRAIN_VIEWS:
            raise ValueError(f"data.train_views must be one of {TRAIN_VIEWS}")
        unknown = [s for s in self.sections if s not in SECTIONS]
        if not self.sections or unknown:
            raise ValueError(f"data.sections must be a non-empty list from {SECTIONS}")


class LoadStudy:
    """Study id -> ``image``, ``boxes``, ``box_finding``, ``view`` of one of its views: a
    random one (torch's RNG, seeded per worker and epoch by the DataLoader) or the first."""

    def __init__(
        self,
        images: MappedArray | FileViews,
        views: ViewTable,
        transform: ImageTransform,
        random_view: bool,
    ) -> None:
        self.images, self.views, self.transform = images, views, transform
        self.random_view = random_view

    def __call__(self, item: int) -> dict[str, Any]:
        lo, hi = int(self.views.offsets[item]), int(self.views.offsets[item + 1])
        v = lo + int(torch.randint(hi - lo, ()).item()) if self.random_view else lo
        return {
            "image": self.transform(self.images[v]),
            "boxes": torch.from_numpy(self.views.boxes[v].copy()),
            "box_finding": torch.from_numpy(self.views.finding[v].copy()),
            "view": int(self.views.kind[v]),
        }


@DATAMODULES.register("medical_report", MedicalReportDataConfig)
class MedicalReportDataModule(PairDataModule):
    """Chest radiograph studies and their reports; with no arguments, the built-in chest data
    (generated on first use into the cache)."""

    source: MedicalReportSource

    def __init__(self, cfg: MedicalReportDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or MedicalReportDataConfig(), tokenizer)

    modalities = ("image", "text")

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.image_size,
            "in_channels": 1,
            "max_text_len": self.cfg.max_text_len,
        }

    @property
    def zero_shot_binary_tasks(self) -> dict[str, tuple[str, str]]:
        """One yes/no task per finding where the source has labels (not IU-Xray)."""
        return dict(BINARY_PROMPTS) if self.source.labelled else {}

    def regions(self, split: str) -> dict[str, Any]:
        """Ground-truth regions of a loaded split, for grounding: arrays ``item_id`` (study),
        ``view`` (0 frontal, 1 lateral), ``finding`` (index into ``FINDINGS``), ``box``
        float32 [R, 4] and the list ``phrase`` ("a 2 cm nodule in the right upper lobe").
        Empty for real data."""
        if split not in self.datasets:
            raise RuntimeError(f"split {split!r} is not set up; call setup() first")
        return self.source.split(split).regions

    def describe(self) -> str:
        """One line for logs: source and loaded split sizes."""
        sizes = ", ".join(
            f"{split} {ds.captions.num_items} studies / {len(ds.load.views.kind)} images"
            for split, ds in self.datasets.items()
        )
        return f"medical_report ({self.source.describe()}): {sizes or 'not set up'}"

    def _dataset(self, split: str) -> PairDataset:
        train = split == "train"
        transform = ImageTransform(self.cfg.augment.train if train else self.cfg.augment.eval)
        data = self.source.split(split)
        texts = [select_sections(parse_report(r), self.cfg.sections) for r in data.reports]
        for key, text in zip(data.keys, texts, strict=True):
            if not text:
                raise DataError(
                    f"{self.cfg.format} {split} study {key}: the report has no text "
                    f"in sections {self.cfg.sections} (nor findings, impression or preamble)"
                )
        random_view = train and self.cfg.train_views == "random"
        load = LoadStudy(data.images, data.views, transform, random_view)
        captions = Captions.from_lists([[t] for t in texts])
        return PairDataset(captions, load, dict(data.labels), "caption")
