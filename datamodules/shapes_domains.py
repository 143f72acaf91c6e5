"""Image classification across a domain shift: a labelled source domain and a shifted target
domain (source-free active domain adaptation, LFTL).

The built-in data (datamodules/embedded/shape_domains.py): one of 6 shapes per image on a dark
grey background (source) or a bright striped colour background (target); or the Office-31 /
Office-Home / VisDA-C image lists on disk (``data.format: image_list``,
datamodules/formats/da_lists.py).

``data.domain`` picks the training items' domain (``source``: the source stage; ``target``:
the unlabelled target pool of the query rounds, whose ``label/shape`` is the oracle a method
reads only for the items it queried); ``data.eval_domain`` the validation and test items'
(``target`` by default; ``source`` gives the in-domain accuracy).

Batches: ``image`` float32 [B, 3, S, S] in [-1, 1], ``label/shape`` (the class; for the real
lists, the list's label), ``label/color`` (built-in data only), ``index`` and ``item_id``. One
modality, one encoder (``image``).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass, field
from typing import Any, ClassVar

from datamodules.embedded.shape_domains import DOMAINS
from datamodules.embedded.shapes import COLORS, SHAPES
from datamodules.items import ItemsDataConfig, ItemsDataModule, SeededImageTransform, Transform
from datamodules.sources import shape_domains as _sources  # noqa: F401  (registers the sources)
from modules.registry import DATAMODULES


@dataclass
class ShapesDomainsDataConfig(ItemsDataConfig):
    """``domain`` / ``eval_domain``: ``source`` or ``target`` (see the module docstring);
    ``num_*`` and ``image_size``: the built-in data's size per domain (``image_size`` also the
    size listed images are resized to); ``source_list``, ``target_list``, ``eval_list``,
    ``images`` and ``class_names``: the ``image_list`` format (paths relative to ``data.root``)."""

    family: ClassVar[str] = "shapes_domains"

    name: str = "shapes_domains"
    num_train: int = 2000
    num_val: int = 500
    num_test: int = 1000
    image_size: int = 32
    domain: str = "source"
    eval_domain: str = "target"
    source_list: str = ""
    target_list: str = ""
    eval_list: str = ""
    images: str = ""
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("domain", "eval_domain"):
            if getattr(self, key) not in DOMAINS:
                raise ValueError(f"data.{key} must be one of {DOMAINS}, got {getattr(self, key)!r}")
        super().__post_init__()


@DATAMODULES.register("shapes_domains", ShapesDomainsDataConfig)
class ShapesDomainsDataModule(ItemsDataModule):
    """Images of the configured domain with their classes (generated on first use for the
    built-in data)."""

    name = "shapes_domains"
    modalities = ("image",)
    pairs = ()

    def __init__(self, cfg: ShapesDomainsDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or ShapesDomainsDataConfig(), tokenizer)

    @property
    def class_names(self) -> dict[str, list[str]]:
        if self.cfg.format != "embedded":
            return {"shape": list(self.cfg.class_names)}
        return {"shape": list(SHAPES), "color": list(COLORS)}

    def tower_context(self) -> dict[str, Any]:
        return {"image_size": self.cfg.image_size, "in_channels": 3}

    def _transforms(self, train: bool) -> dict[str, Transform]:
        steps = self.cfg.augment.train if train else self.cfg.augment.eval
        return {"image": SeededImageTransform(steps)}
