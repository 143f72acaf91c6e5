"""Name -> class registries for methods, towers and datamodules.

Every YAML names things by string (``method.name: clip``); the registry turns the string into
the class and the dataclass that validates its config. Duplicate names are rejected at import
time and unknown names fail with the list of known ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf


@dataclass(frozen=True)
class Entry:
    """A registered class and the dataclass schema of its config block."""

    name: str
    cls: type
    config: type


def as_dataclass(schema: type, data: dict[str, Any]) -> Any:
    """``data`` validated against and converted to dataclass ``schema``."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))


class UnknownNameError(KeyError):
    """Raised for a name that no registered class carries."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry:
    """A name -> (class, config dataclass) map for one kind of component."""

    def __init__(self, kind: str, providers: Sequence[str] = ()) -> None:
        self.kind = kind
        self.providers = tuple(providers)
        self._entries: dict[str, Entry] = {}

    def _load(self) -> None:
        """Import the modules that register this kind (once; later imports are no-ops)."""
        for module in self.providers:
            importlib.import_module(module)

    def register(self, name: str, config: type) -> Callable[[type], type]:
        """Class decorator: register ``cls`` under ``name`` with its config dataclass."""

        def decorate(cls: type) -> type:
            if name in self._entries:
                raise ValueError(f"{self.kind} name {name!r} is registered twice")
            self._entries[name] = Entry(name, cls, config)
            return cls

        return decorate

    def get(self, name: Any) -> Entry:
        """The entry for ``name``; an unknown name lists the known ones."""
        self._load()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)


# Where each kind is defined: a new method, tower or datamodule adds its module here.
METHODS = Registry(
    "method",
    [
        "modules.align",
        "modules.alpro",
        "modules.clip",
        "modules.clip_mea",
        "modules.clip_refine",
        "modules.clip_rocket",
        "modules.close",
        "modules.cogenav",
        "modules.coconut",
        "modules.comix",
        "modules.conr",
        "modules.core_tuning",
        "modules.cra",
        "modules.cuaxu",
        "modules.cwcl",
        "modules.fdt",
        "modules.feature_transformation",
        "modules.g2l",
        "modules.gram",
        "modules.hard_negative",
        "modules.languagebind",
        "modules.lftl",
        "modules.mcl",
        "modules.modality_pairwise",
        "modules.one_to_k",
        "modules.simclr",
        "modules.multi_view",
        "modules.simlap",
        "modules.structure",
        "modules.supremix",
        "modules.swav",
        "modules.epcformer",
        "modules.sepclr",
        "modules.cpl",
        "modules.simcse",
        "modules.prokd",
        "modules.topic_segmentation",
        "modules.word2vec",
        "modules.word_alignment",
        "modules.cade",
        "modules.whitened_cse",
        "modules.debcse",
        "modules.moe_embeddings",
        "modules.input_label_contrast",
        "modules.causal_lm",
        "modules.dse",
        "modules.defsent",
    ],
)
TOWERS = Registry(
    "tower",
    [
        "modules.towers.image",
        "modules.towers.text",
        "modules.towers.causal_text",
        "modules.towers.minilm",
        "modules.towers.video",
        "modules.towers.audio",
        "modules.towers.depth",
        "modules.towers.audio_frames",
        "modules.towers.words",
    ],
)
DATAMODULES = Registry(
    "data",
    [
        "datamodules.image_text",
        "datamodules.video_text",
        "datamodules.audio_visual",
        "datamodules.medical_report",
        "datamodules.shapes_views",
        "datamodules.shapes_sounds",
        "datamodules.shapes_depth_sounds",
        "datamodules.shapes_sizes",
        "datamodules.timed_events",
        "datamodules.referring_shapes",
        "datamodules.spoken_commands",
        "datamodules.video_domains",
        "datamodules.shapes_salient",
        "datamodules.shapes_domains",
        "datamodules.shapes_generators",
        "datamodules.sentences",
        "datamodules.tagged_captions",
        "datamodules.segmented_documents",
        "datamodules.word_corpora",
        "datamodules.text_corpus",
        "datamodules.definitions",
    ],
)
