"""Readers of real captioned datasets into :class:`datamodules.base.FileCaptions`."""

from datamodules.formats.coco import read_coco
from datamodules.formats.jsonl import read_jsonl

__all__ = ["read_coco", "read_jsonl"]
