"""Sources of the medical-report family: the built-in chest studies, MIMIC-CXR and IU-Xray on
disk; each split handed over as a :class:`MedicalReportSplit` (reports not yet reduced to the
configured sections: the datamodule does that the same way for every source)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

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
from datamodules.formats.reports import ReportStudies
from datamodules.media import IMAGE_ERRORS, MediaError, to_8bit
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.storage import MappedArray


class FileViews:
    """Image files read as grayscale (16-bit and float scans scaled to 8 bits first,
    :func:`to_8bit`) and resized to ``size`` x ``size``."""

    def __init__(self, studies: ReportStudies, size: int) -> None:
        self.studies, self.size = studies, size

    def __getitem__(self, v: int) -> np.ndarray:
        path = self.studies.path(v)
        try:
            with Image.open(path) as image:
                gray = to_8bit(image).convert("L")
                gray = gray.resize((self.size, self.size), Image.Resampling.BILINEAR)
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


def chest_regions(data: ChestSplit | None) -> dict[str, Any]:
    """The ground-truth region arrays of a split (empty without data): ``item_id`` (study),
    ``view``, ``finding``, ``box`` float32 [R, 4] and the list ``phrase``."""
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


@dataclass(frozen=True)
class MedicalReportSplit:
    """A split as the datamodule reads it: per study its key (for errors) and full report,
    the images by view, the view table, finding labels (1, 0, -1 unknown) and the
    ground-truth regions."""

    keys: list[str]
    reports: list[str]
    images: MappedArray | FileViews
    views: ViewTable
    labels: Mapping[str, np.ndarray]
    regions: dict[str, Any]


class MedicalReportSource(Source[MedicalReportSplit]):
    """What every medical-report source says beyond its splits: whether it labels findings."""

    #: Whether studies carry finding labels (zero-shot yes/no tasks need them).
    labelled: ClassVar[bool] = True


@SOURCES.register("medical_report", "embedded")
class EmbeddedChest(EmbeddedSource[MedicalReportSplit], MedicalReportSource):
    """The built-in chest studies: labels, boxes and region phrases of every finding."""

    name = "chest"
    ensure = staticmethod(ensure_chest)

    @staticmethod
    def generator_of(cfg: Any) -> ChestConfig:
        return ChestConfig(
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            num_test=cfg.num_test,
            image_size=cfg.image_size,
            normal_fraction=cfg.normal_fraction,
            lateral_fraction=cfg.lateral_fraction,
            seed=cfg.seed,
        )

    def _split(self, split: str) -> MedicalReportSplit:
        directory = self.directory()
        data = load_split(directory, split)
        return MedicalReportSplit(
            keys=[str(i) for i in range(data.num_studies)],
            reports=[data.report(i) for i in range(data.num_studies)],
            images=MappedArray(directory / f"{split}_images.npy", add_channel=True),
            views=ViewTable.from_chest(data),
            labels={name: data.labels[:, k].astype(np.int64) for k, name in enumerate(FINDINGS)},
            regions=chest_regions(data),
        )


class ReportFiles(MedicalReportSource):
    """Studies on disk read by ``_read(split)``; findings a reader lacks are unknown (-1)."""

    def _read(self, split: str) -> ReportStudies:
        raise NotImplementedError

    def _split(self, split: str) -> MedicalReportSplit:
        studies = self._read(split)
        unknown = np.full(studies.num_studies, -1, np.int64)
        return MedicalReportSplit(
            keys=[k.decode("utf-8") for k in studies.keys],
            reports=[studies.report(i) for i in range(studies.num_studies)],
            images=FileViews(studies, self.cfg.image_size),
            views=ViewTable.empty(studies.offsets, studies.views),
            labels={name: studies.labels.get(name, unknown) for name in FINDINGS},
            regions=chest_regions(None),
        )


@SOURCES.register("medical_report", "mimic_cxr")
class MimicCxr(ReportFiles):
    """MIMIC-CXR: metadata, split and CheXpert label files and the ``files`` tree."""

    def _read(self, split: str) -> ReportStudies:
        cfg = self.cfg
        return read_mimic_cxr(
            self.root(),
            split,
            metadata=cfg.metadata_file,
            split_file=cfg.split_file,
            chexpert=cfg.chexpert_file,
            files=cfg.files_dir,
        )


@SOURCES.register("medical_report", "iu_xray")
class IuXray(ReportFiles):
    """IU-Xray in R2Gen's layout: one annotation file, reports without finding labels."""

    labelled = False

    def _read(self, split: str) -> ReportStudies:
        root = self.root()
        return read_iu_xray(root / self.cfg.annotation_file, root / self.cfg.images_dir, split)
