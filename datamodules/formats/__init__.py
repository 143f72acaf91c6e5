"""Readers of real datasets: image-text (JSONL, COCO, webdataset shards), video-text (MSR-VTT,
CSV), audio-visual (LRS2/LRS3 lists) and chest radiograph reports (MIMIC-CXR, IU-Xray)."""

from datamodules.formats.coco import read_coco
from datamodules.formats.iu_xray import read_iu_xray
from datamodules.formats.jsonl import LabelColumn, LabelReader, read_jsonl
from datamodules.formats.lrs import read_lrs
from datamodules.formats.mimic_cxr import read_mimic_cxr
from datamodules.formats.msrvtt import read_msrvtt, read_video_csv
from datamodules.formats.webdataset import (
    ShardIndex,
    ShardStream,
    StreamLoader,
    expand_shards,
    scan_shards,
)

__all__ = [
    "LabelColumn",
    "LabelReader",
    "ShardIndex",
    "ShardStream",
    "StreamLoader",
    "expand_shards",
    "read_coco",
    "read_iu_xray",
    "read_jsonl",
    "read_lrs",
    "read_mimic_cxr",
    "read_msrvtt",
    "read_video_csv",
    "scan_shards",
]
