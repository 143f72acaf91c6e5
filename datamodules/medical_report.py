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
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from datamodules.config import SourceDataConfig
from datamodules.embedded.chest import (
    FINDINGS,
    MAX_REGIONS,
    ChestConfig,
    ChestSplit,
    ensure_chest,
    load_split,
)
from datamodules.formats.iu_xray import read_iu_xray
from datamodules.formats.mimic_cxr import read_mimic_cxr
from datamodules.formats.reports import (
    PREAMBLE,
    SECTION_ALIASES,
    ReportStudies,
    parse_report,
    select_sections,
)
from datamodules.media import IMAGE_ERRORS, MediaError
from datamodules.pairs import PairDataModule, PairDataset
from datamodules.storage import Captions, MappedArray, cache_root
from datamodules.transforms import ImageTransform
from modules.registry import DATAMODULES

FORMATS = ("embedded", "mimic_cxr", "iu_xray")
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
    shape the built-in data; ``root`` and the file names locate a real one."""

    formats: ClassVar[tuple[str, ...]] = FORMATS

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


class FileViews:
    """Image files read as grayscale and resized to ``size`` x ``size``."""

    def __init__(self, studies: ReportStudies, size: int) -> None:
        self.studies, self.size = studies, size

    def __getitem__(self, v: int) -> np.ndarray:
        path = self.studies.path(v)
        try:
            with Image.open(path) as image:
                gray = image.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)
        except IMAGE_ERRORS as err:
            raise MediaError(f"image file {path} could not be read: {err}") from None
        return np.asarray(gray)[..., None]


@dataclass(frozen=True)
class ViewTable:
    """Per view of a split: its kind (0 frontal, 1 other) and its finding boxes, padded to
    ``K`` = :data:`MAX_REGIONS` with -1; study ``i`` has views ``offsets[i]:offsets[i + 1]``."""

    offsets: np.ndarray  # int64 [N + 1]
    kind: np.ndarray  # int8 [V]
    boxes: np.ndarray  # float32 [V, K, 4]
    finding: np.ndarray  # int64 [V, K]

    @classmethod
    def empty(cls, offsets: np.ndarray, kind: np.ndarray) -> ViewTable:
        n = len(kind)
        boxes = np.full((n, MAX_REGIONS, 4), -1, np.float32)
        return cls(offsets, kind, boxes, np.full((n, MAX_REGIONS), -1, np.int64))

    @classmethod
    def from_chest(cls, data: ChestSplit) -> ViewTable:
        table = cls.empty(data.view_offsets, data.view_kind)
        slot = np.zeros(len(data.view_kind), np.int64)
        for image, finding, box in zip(
            data.region_image, data.region_finding, data.region_box, strict=True
        ):
            table.boxes[image, slot[image]] = box
            table.finding[image, slot[image]] = finding
            slot[image] += 1
        return table


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

    def __init__(self, cfg: MedicalReportDataConfig | None = None, tokenizer: Any = None) -> None:
        cfg = cfg or MedicalReportDataConfig()
        super().__init__(cfg, tokenizer)
        self.chest: ChestConfig | None = None
        if cfg.format == "embedded":
            self.chest = ChestConfig(
                num_train=cfg.num_train,
                num_val=cfg.num_val,
                num_test=cfg.num_test,
                image_size=cfg.image_size,
                normal_fraction=cfg.normal_fraction,
                lateral_fraction=cfg.lateral_fraction,
                seed=cfg.seed,
            )
        self._regions: dict[str, dict[str, Any]] = {}
        self._labelled = cfg.format != "iu_xray"

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
        return dict(BINARY_PROMPTS) if self._labelled else {}

    def prepare_data(self) -> None:
        """Generate the built-in data once (Lightning calls this on one process per node)."""
        if self.chest is not None:
            ensure_chest(self.chest, cache_root(self.cfg.cache_dir))

    def regions(self, split: str) -> dict[str, Any]:
        """Ground-truth regions of a loaded split, for grounding: arrays ``item_id`` (study),
        ``view`` (0 frontal, 1 lateral), ``finding`` (index into ``FINDINGS``), ``box``
        float32 [R, 4] and the list ``phrase`` ("a 2 cm nodule in the right upper lobe").
        Empty for real data."""
        if split not in self.datasets:
            raise RuntimeError(f"split {split!r} is not set up; call setup() first")
        return self._regions[split]

    def describe(self) -> str:
        """One line for logs: source and loaded split sizes."""
        if self.chest is not None:
            source = f"embedded chest-{self.chest.key()}"
        else:
            source = f"{self.cfg.format} at {self.cfg.root}"
        sizes = ", ".join(
            f"{split} {ds.captions.num_items} studies / {len(ds.load.views.kind)} images"
            for split, ds in self.datasets.items()
        )
        return f"medical_report ({source}): {sizes or 'not set up'}"

    def _dataset(self, split: str) -> PairDataset:
        train = split == "train"
        transform = ImageTransform(self.cfg.augment.train if train else self.cfg.augment.eval)
        if self.chest is not None:
            directory = ensure_chest(self.chest, cache_root(self.cfg.cache_dir))
            data = load_split(directory, split)
            images: MappedArray | FileViews = MappedArray(
                directory / f"{split}_images.npy", add_channel=True
            )
            views = ViewTable.from_chest(data)
            reports = [data.report(i) for i in range(data.num_studies)]
            keys = [str(i) for i in range(data.num_studies)]
            labels = {name: data.labels[:, k].astype(np.int64) for k, name in enumerate(FINDINGS)}
            self._regions[split] = _chest_regions(data)
        else:
            studies = self._read(split)
            images = FileViews(studies, self.cfg.image_size)
            views = ViewTable.empty(studies.offsets, studies.views)
            reports = [studies.report(i) for i in range(studies.num_studies)]
            keys = [k.decode("utf-8") for k in studies.keys]
            unknown = np.full(studies.num_studies, -1, np.int64)
            labels = {name: studies.labels.get(name, unknown) for name in FINDINGS}
            self._regions[split] = _chest_regions(None)
        texts = [select_sections(parse_report(r), self.cfg.sections) for r in reports]
        for key, text in zip(keys, texts, strict=True):
            if not text:
                raise ValueError(
                    f"{self.cfg.format} {split} study {key}: the report has no text "
                    f"in sections {self.cfg.sections} (nor findings, impression or preamble)"
                )
        random_view = train and self.cfg.train_views == "random"
        load = LoadStudy(images, views, transform, random_view)
        return PairDataset(Captions.from_lists([[t] for t in texts]), load, labels, "caption")

    def _read(self, split: str) -> ReportStudies:
        root = Path(self.cfg.root or "")
        if not root.is_dir():
            raise FileNotFoundError(f"data root {root} not found")
        if self.cfg.format == "mimic_cxr":
            return read_mimic_cxr(
                root,
                split,
                metadata=self.cfg.metadata_file,
                split_file=self.cfg.split_file,
                chexpert=self.cfg.chexpert_file,
                files=self.cfg.files_dir,
            )
        return read_iu_xray(root / self.cfg.annotation_file, root / self.cfg.images_dir, split)


def _chest_regions(data: ChestSplit | None) -> dict[str, Any]:
    """The region arrays of :meth:`MedicalReportDataModule.regions` (empty without data)."""
    if data is None:
        return {
            "item_id": np.zeros(0, np.int64),
            "view": np.zeros(0, np.int64),
            "finding": np.zeros(0, np.int64),
            "box": np.zeros((0, 4), np.float32),
            "phrase": [],
        }
    study = np.searchsorted(data.view_offsets, data.region_image, side="right") - 1
    return {
        "item_id": study.astype(np.int64),
        "view": data.view_kind[data.region_image].astype(np.int64),
        "finding": data.region_finding.astype(np.int64),
        "box": data.region_box,
        "phrase": [p.decode("utf-8") for p in data.region_phrase],
    }
