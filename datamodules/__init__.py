"""Datamodules: importing the package registers them in ``modules.registry.DATAMODULES``."""

import modules.env  # noqa: F401  (first: environment for lightning and albumentations)

from datamodules.image_text import ImageTextDataConfig, ImageTextDataModule

__all__ = ["ImageTextDataConfig", "ImageTextDataModule"]
