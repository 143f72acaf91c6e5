"""Dictionary definitions for sentence embeddings (DefSent, DefSent+), scored on STS pairs.

One modality, ``text``. A training sample is one definition (``text``) with its entry
(``label/entry``; ``item_id``: the entry id, shared by the entry's definitions) and, on the
built-in data, ``label/domain``. Validation and test samples are the ``sentences`` family's STS
pairs (``text``, ``text@1``, ``target/score``, ``label/paraphrase``): the ``sts`` evaluator logs
``sts/spearman``, comparable with a run on ``sentences`` of the same seed and sizes.

Sources (``data.format``): ``embedded`` (datamodules/embedded/definitions.py: ``data.num_train``
entries of the sentences family's generated language, ``definitions_per_entry`` definitions
each) and ``files`` (datamodules/sources/definitions.py: a GCIDE JSON or ``entry<TAB>definition``
dictionary as ``train_file``, STS-B / SICK TSVs as ``val_file`` / ``test_file``).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

from torch.utils.data import Dataset

import datamodules.sources.definitions  # noqa: F401  (registers the family's sources)
from datamodules.config import SourceDataConfig
from datamodules.sentences import SentenceDataset, SentencesDataModule
from datamodules.sources.sentences import SentenceSplit
from modules.registry import DATAMODULES


@dataclass
class DefinitionsDataConfig(SourceDataConfig):
    """``num_train``: entries of the built-in dictionary; ``definitions_per_entry`` and
    ``drop_probability``: its definitions (datamodules/embedded/definitions.py); ``train_file``,
    ``val_file``, ``test_file``: the files of ``format: files``; ``paraphrase_score``: the gold
    score from which an evaluation pair is a paraphrase (``label/paraphrase``)."""

    family: ClassVar[str] = "definitions"

    name: str = "definitions"
    batch_size: int = 64
    num_train: int = 2500
    max_text_len: int = 32
    definitions_per_entry: int = 4
    drop_probability: float = 0.25
    train_file: str | None = None
    val_file: str | None = None
    test_file: str | None = None
    paraphrase_score: float = 5.0

    def __post_init__(self) -> None:
        if self.max_text_len < 3:
            raise ValueError(f"data.max_text_len must be at least 3, got {self.max_text_len}")
        super().__post_init__()


class DefinitionDataset(Dataset):
    """Definitions with their entry (and domain, where known)."""

    def __init__(self, split: SentenceSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample: dict[str, Any] = {
            "text": self.split.texts["definition"][i],
            "index": i,
            "item_id": int(self.split.item_id[i]),
        }
        for task, ids in self.split.labels.items():
            sample[f"label/{task}"] = int(ids[i])
        return sample


@DATAMODULES.register("definitions", DefinitionsDataConfig)
class DefinitionsDataModule(SentencesDataModule):
    """Definitions to train on, the sentences family's STS pairs to evaluate."""

    name = "definitions"

    def __init__(self, cfg: DefinitionsDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or DefinitionsDataConfig(), tokenizer)

    @property
    def views(self) -> dict[str, int]:
        """No training views; the evaluation pair's second sentence is view 1 (``text@1``),
        which the base encodes like a view."""
        return {"text": 2}

    @property
    def label_descriptions(self) -> dict[str, list[str]]:
        return {}

    def training_texts(self) -> list[str]:
        """Every distinct definition (the vocabulary of a word-level tokenizer)."""
        return list(dict.fromkeys(self.source.split("train").texts["definition"]))

    def _dataset(self, split: str) -> Dataset:
        data = self.source.split(split)
        if split == "train":
            return DefinitionDataset(data)
        return SentenceDataset(data, None, self.cfg.paraphrase_score)
