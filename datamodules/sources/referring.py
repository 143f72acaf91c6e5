"""Sources of the referring family: the built-in referring shapes and Ref-YouTube-VOS-style
annotations with A-VOS audio on disk; each split handed over as an
:class:`~datamodules.items.ItemSplit` with raw keys ``image`` (uint8 [S, S, 3]), ``mask``
(uint8 [S, S], the referred object), ``audio`` (log-mel [n_mels, audio_frames]), the text
expression as the item's one caption and the label ``expression`` (items with equal labels
say the same thing: the expression class of the built-in data, the exact text on disk)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from PIL import Image

from datamodules.embedded.referring import ReferringConfig, ensure_referring, expression_id
from datamodules.formats.ref_youtube_vos import Expression, read_ref_youtube_vos
from datamodules.items import ItemSplit, MappedItems
from datamodules.media import MediaError, decode_audio, log_mel
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.storage import Captions, MappedArray


@SOURCES.register("referring_shapes", "embedded")
class ReferringShapes(EmbeddedSource[ItemSplit]):
    """The built-in referring scenes (datamodules/embedded/referring.py)."""

    name = "referring"
    ensure = staticmethod(ensure_referring)

    @staticmethod
    def generator_of(cfg: Any) -> ReferringConfig:
        return cfg.generator()

    def _split(self, split: str) -> ItemSplit:
        directory = self.directory()
        record = json.loads((directory / f"{split}.json").read_text())
        arrays = {
            key: MappedArray(directory / f"{split}_{name}.npy")
            for key, name in (("image", "images"), ("mask", "masks"), ("audio", "audio"))
        }
        texts = record["text"]
        return ItemSplit(
            len(texts),
            MappedItems(arrays),
            captions=Captions.from_lists([[t] for t in texts]),
            labels={"expression": np.array([expression_id(t) for t in texts], np.int64)},
        )


class ExpressionFiles:
    """Item -> the raw arrays of one expression on disk: its frame squashed to ``S x S``, the
    referred object's mask (nearest), the audio's log-mel cut or zero-padded to
    ``audio_frames``. Pickles as the expression list and the config."""

    def __init__(self, expressions: list[Expression], cfg: Any) -> None:
        self.expressions, self.cfg = expressions, cfg

    def __call__(self, item: int) -> dict[str, np.ndarray]:
        e, cfg = self.expressions[item], self.cfg
        size = (cfg.image_size, cfg.image_size)
        try:
            with Image.open(e.image) as img:
                image = np.asarray(img.convert("RGB").resize(size, Image.BILINEAR))
            with Image.open(e.annotation) as ann:
                mask = (np.asarray(ann.resize(size, Image.NEAREST)) == e.obj_id).astype(np.uint8)
        except (OSError, SyntaxError, ValueError) as err:
            raise MediaError(f"{e.image} / {e.annotation} could not be read: {err}") from None
        wave = decode_audio(e.audio, cfg.sample_rate)
        need = cfg.win_length + (cfg.audio_frames - 1) * cfg.hop_length
        wave = np.pad(wave[:need], (0, max(0, need - len(wave))))
        mel = log_mel(
            torch.from_numpy(wave), cfg.sample_rate, cfg.n_mels, cfg.win_length, cfg.hop_length
        )
        return {"image": image, "mask": mask, "audio": mel.numpy()}


@SOURCES.register("referring_shapes", "ref_youtube_vos")
class RefYouTubeVOS(Source[ItemSplit]):
    """Ref-YouTube-VOS-style expressions under ``data.root`` with A-VOS audio
    (datamodules/formats/ref_youtube_vos.py); one frame per expression."""

    def _split(self, split: str) -> ItemSplit:
        expressions = read_ref_youtube_vos(self.root(), split)
        texts = [e.text for e in expressions]
        _, ids = np.unique(np.array(texts), return_inverse=True)
        return ItemSplit(
            len(expressions),
            ExpressionFiles(expressions, self.cfg),
            captions=Captions.from_lists([[t] for t in texts]),
            labels={"expression": ids.astype(np.int64)},
        )
