"""Long documents with gold topic boundaries, for topic segmentation (TSSP + CSSL).

One sample per document. Batches (S: the batch's most sentences, L: its longest sentence):

- ``text_ids`` long / ``text_mask`` bool [B, S, L]: each sentence tokenized on its own (a
  padding sentence has an all-False mask row);
- ``boundary`` long [B, S]: 1 where a topic segment ends after the sentence (the document's
  last sentence included, as Wiki-727K's labels), 0 inside a segment, -1 on padding;
- ``index`` / ``item_id`` long [B]: the document.

Training batches also carry the *disarrayed* copy that TSSP classifies
(modules/topic_segmentation.py; made as the official data script does, :func:`disarray`):
``disarrayed_ids`` / ``disarrayed_mask`` [B, S', L], ``disarrayed_boundary`` [B, S'] and
``disarrayed_order`` [B, S'] (the TSSP class of each sentence given its predecessor, -1 on
padding), and ``seed`` long [B] (for the loss's random fallbacks: they then depend on the
global batch only, not on the rank). Documents longer than ``max_sentences_doc`` are cut (the
official code slides 2048-token windows instead).

Sources (datamodules/sources/segmented_documents.py): the built-in topic chains
(``format: embedded``) and Wiki-727K-style folders (``format: wiki727k``).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset

import datamodules.sources.segmented_documents  # noqa: F401  (registers the family's sources)
from datamodules.base import SplitsDataModule
from datamodules.config import SourceDataConfig
from datamodules.embedded.segmented_documents import Document
from datamodules.samplers import SeededBatches
from modules.registry import DATAMODULES

#: TSSP classes of a sentence b after its predecessor a in the disarrayed document (official
#: ``tssp_ablation: none``): b follows a in the original document and in the same topic; same
#: topic but not the next sentence; b opens a topic block.
NEXT_IN_TOPIC, SAME_TOPIC, NEW_TOPIC = 0, 1, 2


@dataclass
class SegmentedDocumentsDataConfig(SourceDataConfig):
    """``num_*``, ``min/max_segments``, ``min/max_sentences`` (per segment), ``share_prob``:
    the built-in documents (datamodules/embedded/segmented_documents.py); ``max_sentences_doc``:
    documents are cut to this many sentences; ``max_text_len``: tokens per sentence;
    ``replace_prob``: the chance that a disarrayed copy borrows topics of other documents
    (official: 0.5, then each topic with 0.5); ``split_dirs``: the split folders under
    ``root`` (``format: wiki727k``)."""

    family: ClassVar[str] = "segmented_documents"

    name: str = "segmented_documents"
    num_train: int = 800
    num_val: int = 100
    num_test: int = 200
    batch_size: int = 8
    eval_batch_size: int = 50
    min_segments: int = 3
    max_segments: int = 6
    min_sentences: int = 2
    max_sentences: int = 7
    share_prob: float = 0.8
    max_sentences_doc: int = 64
    max_text_len: int = 16
    replace_prob: float = 0.5
    split_dirs: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "val": "dev", "test": "test"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_sentences_doc < 2:
            raise ValueError(f"data.max_sentences_doc must be >= 2, got {self.max_sentences_doc}")
        if self.max_text_len < 2:
            raise ValueError(f"data.max_text_len must be >= 2, got {self.max_text_len}")
        if not 0.0 <= self.replace_prob <= 1.0:
            raise ValueError(f"data.replace_prob must be in [0, 1], got {self.replace_prob}")
        if set(self.split_dirs) != {"train", "val", "test"}:
            raise ValueError("data.split_dirs must name the folders of train, val and test")


def flatten(segments: Document, limit: int) -> tuple[list[str], list[int]]:
    """The first ``limit`` sentences of a document and their boundary labels (1: the last
    sentence of a segment, and the last sentence kept)."""
    sentences = [s for segment in segments for s in segment][:limit]
    boundary = [int(i == len(seg) - 1) for seg in segments for i in range(len(seg))][:limit]
    boundary[-1] = 1
    return sentences, boundary


def disarray(
    segments: Document,
    rng: np.random.Generator,
    borrow: Callable[[], list[str]] | None,
    replace_prob: float = 0.5,
) -> tuple[list[str], list[int], list[int]]:
    """The TSSP copy of a document (official ``shuffle_and_replace_doc_topics`` then
    ``shuffle_topic_sents``): its topics in a random order; with ``replace_prob`` (and a
    ``borrow`` that draws a topic of another document) each topic is swapped with probability
    0.5 for a borrowed one; then the sentences inside each topic are shuffled, the topic's last
    sentence kept last. Returns the sentences, their boundary labels (the last sentence of each
    topic block) and their TSSP classes (:data:`NEXT_IN_TOPIC`, :data:`SAME_TOPIC`,
    :data:`NEW_TOPIC`)."""
    topics = [list(segments[i]) for i in rng.permutation(len(segments))]
    if borrow is not None and rng.random() < replace_prob:
        topics = [borrow() if rng.random() < 0.5 else topic for topic in topics]
    sentences, boundary, order = [], [], []
    for topic in topics:
        positions = [*rng.permutation(len(topic) - 1).tolist(), len(topic) - 1]
        for j, position in enumerate(positions):
            sentences.append(topic[position])
            boundary.append(int(j == len(positions) - 1))
            if j == 0:
                order.append(NEW_TOPIC)
            else:
                order.append(NEXT_IN_TOPIC if positions[j - 1] == position - 1 else SAME_TOPIC)
    return sentences, boundary, order


class DocumentDataset(Dataset):
    """One sample per document (see the module docstring); in ``train`` mode with the
    disarrayed copy, drawn from the per-sample seed (:class:`SeededBatches`)."""

    def __init__(
        self, documents: list[Document], limit: int, train: bool, replace_prob: float
    ) -> None:
        self.documents, self.limit, self.train = documents, limit, train
        self.replace_prob = replace_prob

    def __len__(self) -> int:
        return len(self.documents)

    def _kept(self, item: int) -> Document:
        """The document's segments cut to ``limit`` sentences."""
        kept, left = [], self.limit
        for segment in self.documents[item]:
            if left <= 0:
                break
            kept.append(segment[:left])
            left -= len(kept[-1])
        return kept

    def __getitem__(self, k: int | tuple[int, int]) -> dict[str, Any]:
        item, seed = (int(k[0]), int(k[1])) if isinstance(k, tuple | list) else (int(k), None)
        segments = self._kept(item)
        sentences, boundary = flatten(segments, self.limit)
        sample: dict[str, Any] = {"sentences": sentences, "boundary": boundary}
        if self.train:
            if seed is None:
                seed = int(torch.randint(2**62, ()).item())
            rng = np.random.default_rng(seed)

            def borrow() -> list[str]:
                other = int(rng.integers(len(self.documents) - 1))
                other += other >= item
                topics = self._kept(other)
                return list(topics[int(rng.integers(len(topics)))])

            many = len(self.documents) > 1
            shuffled, shuffled_boundary, order = disarray(
                segments, rng, borrow if many else None, self.replace_prob
            )
            sample |= {
                "disarrayed": shuffled,
                "disarrayed_boundary": shuffled_boundary,
                "disarrayed_order": order,
                "seed": seed,
            }
        sample["index"] = sample["item_id"] = item
        return sample


def _padded(rows: list[list[int]], fill: int) -> torch.Tensor:
    """Lists of ints as one long tensor padded with ``fill`` to the longest."""
    out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class DocumentCollate:
    """Tokenizes every sentence of the batch (documents and disarrayed copies) in one call,
    so they share L, and lays them out as [B, S, L] (see the module docstring)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        groups = [("text", "sentences", "boundary")]
        if "disarrayed" in samples[0]:
            groups.append(("disarrayed", "disarrayed", "disarrayed_boundary"))
        texts = [t for _, key, _ in groups for s in samples for t in s[key]]
        ids, mask = self.tokenizer.encode(texts)
        batch: dict[str, Any] = {}
        start = 0
        for prefix, key, labels in groups:
            counts = [len(s[key]) for s in samples]
            shape = (len(samples), max(counts), ids.shape[1])
            batch[f"{prefix}_ids"] = torch.zeros(shape, dtype=torch.long)
            batch[f"{prefix}_mask"] = torch.zeros(shape, dtype=torch.bool)
            for i, count in enumerate(counts):
                batch[f"{prefix}_ids"][i, :count] = ids[start : start + count]
                batch[f"{prefix}_mask"][i, :count] = mask[start : start + count]
                start += count
            batch[labels] = _padded([s[labels] for s in samples], -1)
        if "disarrayed_order" in samples[0]:
            batch["disarrayed_order"] = _padded([s["disarrayed_order"] for s in samples], -1)
            batch["seed"] = torch.tensor([s["seed"] for s in samples], dtype=torch.long)
        for key in ("index", "item_id"):
            batch[key] = torch.tensor([s[key] for s in samples], dtype=torch.long)
        batch["skipped"] = []
        return batch


@DATAMODULES.register("segmented_documents", SegmentedDocumentsDataConfig)
class SegmentedDocumentsDataModule(SplitsDataModule):
    """Documents with gold topic boundaries (generated on first use for the built-in data)."""

    name = "segmented_documents"
    modalities = ("text",)

    def __init__(
        self, cfg: SegmentedDocumentsDataConfig | None = None, tokenizer: Any = None
    ) -> None:
        super().__init__(cfg or SegmentedDocumentsDataConfig(), tokenizer)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return ()  # one modality: segmentation metrics, no retrieval

    def tower_context(self) -> dict[str, Any]:
        return {"max_text_len": self.cfg.max_text_len}

    def num_items(self, split: str) -> int:
        return len(self.source.split(split))

    def training_texts(self) -> list[str]:
        """Every training sentence (the word-level tokenizer's vocabulary)."""
        return [s for doc in self.source.split("train") for seg in doc for s in seg]

    def _dataset(self, split: str) -> DocumentDataset:
        cfg = self.cfg
        return DocumentDataset(
            self.source.split(split), cfg.max_sentences_doc, split == "train", cfg.replace_prob
        )

    def _collate_with(self, tokenizer: Any, train: bool) -> DocumentCollate:
        return DocumentCollate(tokenizer)

    def _train_batches(
        self, split: str, dataset: Dataset, generator: torch.Generator
    ) -> BatchSampler | SeededBatches:
        """Random global batches with one seed per document for its disarrayed copy."""
        return SeededBatches(super()._train_batches(split, dataset, generator), generator)

    def describe(self) -> str:
        sizes = ", ".join(f"{split} {len(ds)} documents" for split, ds in self.datasets.items())
        return f"{self.name} ({self.source.describe()}): {sizes or 'not set up'}"
