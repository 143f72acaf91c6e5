"""A small causal language model, decoded side by side with greedy search, beam search, nucleus
sampling and contrastive search (Su & Collier, "Contrastive Search Is What You Need For Neural
Text Generation", TMLR 2023; methods/part2.md section 60).

The paper's method is a decoding rule (modules/decoding.py, Eq. 1): at each step, among the
top-k tokens, take the one maximising ``(1 - alpha) p(v | x_<t) - alpha max_j cos(h_v,
h_{x_j})``, the second term being the degeneration penalty. Its claims: contrastive search
repeats itself less than greedy and beam search (rep-n, diversity) and stays more coherent with
the prefix than nucleus sampling; it works off the shelf on isotropic language models (isotropy
= 1 - the mean cosine of a text's token states, Sec. 3).

Here the model is trained, then decoded:

- the model is the ``causal_transformer`` text tower (modules/towers/causal_text.py: token and
  position embeddings, a causally masked transformer, final LayerNorm, projection) with a linear
  next-token head ``lm_head`` (not tied to the input embedding, as GPT-2's is). The states
  ``h`` of the degeneration penalty, of isotropy and of SimCTG are the tower's ``tokens``, the
  representation the head reads (the paper: GPT-2's last hidden states, after ``ln_f``);
- loss ``mle``: next-token cross-entropy (modules/losses/simctg.py ``next_token_loss``); loss
  ``simctg``: SimCTG's token-level margin loss (Su et al. 2022, Eq. 2, margin rho = 0.5),
  computed and logged always, trained on only when ``method.loss_weights.simctg`` > 0 (default
  0: the paper decodes models trained by MLE alone; SimCTG is the paper family's remedy for
  anisotropic models, to compare with one override);
- evaluation (``eval_outputs``, read by the ``generation`` evaluator, callbacks/generation.py):
  the first ``prefix_tokens`` words of each document after ``<cls>`` are the prefix, and each
  strategy of ``strategies`` decodes ``new_tokens`` tokens from it; the document's own next
  ``new_tokens`` tokens are the human reference; the document's token states feed isotropy.

Hyper-parameters: the paper's English open-ended generation (k = 5, alpha = 0.6; baselines beam
width 4, nucleus p = 0.95). Scoped down: a 2-layer word-level LM trained here on the built-in
captions (datamodules/text_corpus.py) instead of GPT-2 on WikiText-103; prefixes of 8 words and
continuations of 24 tokens instead of 32 and 256 BPE tokens; no end token (the paper decodes a
fixed length too); nucleus samples are drawn from a generator seeded by the run's seed
(``torch.initial_seed()``, which ``seed_everything`` sets) plus the batch's first sample index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig
from modules.decoding import STRATEGIES
from modules.losses.simctg import next_token_loss, simctg_loss
from modules.registry import METHODS
from modules.towers.causal_text import CausalTextTower
from modules.towers.output import TowerOutput


@dataclass
class CausalLMConfig(MethodConfig):
    name: str = "causal_lm"
    #: Decoding strategies compared at evaluation (modules/decoding.py STRATEGIES).
    strategies: list[str] = field(
        default_factory=lambda: ["greedy", "beam", "nucleus", "contrastive"]
    )
    prefix_tokens: int = 8  # words of a document given as the prefix (after <cls>)
    new_tokens: int = 24  # tokens each strategy decodes
    k: int = 5  # contrastive search: candidates (paper: 5)
    alpha: float = 0.6  # contrastive search: weight of the degeneration penalty (paper: 0.6)
    beam_width: int = 4  # beam search baseline (paper: 4)
    top_p: float = 0.95  # nucleus sampling baseline (paper: 0.95)
    margin: float = 0.5  # SimCTG's rho (Su et al. 2022: 0.5)
    loss_weights: dict[str, float] = field(default_factory=lambda: {"mle": 1.0, "simctg": 0.0})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.strategies) - set(STRATEGIES))
        if not self.strategies or unknown or len(set(self.strategies)) < len(self.strategies):
            raise ValueError(
                f"strategies: need distinct names among {sorted(STRATEGIES)}, got "
                f"{list(self.strategies)}"
            )
        for key in ("prefix_tokens", "new_tokens", "k", "beam_width"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha: must be in [0, 1], got {self.alpha}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.margin < 0:
            raise ValueError(f"margin: must be >= 0, got {self.margin}")


@METHODS.register("causal_lm", CausalLMConfig)
class CausalLM(AlignmentModule):
    """A causal text tower + next-token head, trained by MLE (+ SimCTG), decoded four ways."""

    loss_terms = ("mle", "simctg")
    num_encoders = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: CausalLMConfig = self.method_cfg
        tower = self.towers[self.modalities[0]]
        if self.modalities != ("text",) or not isinstance(tower, CausalTextTower):
            raise ValueError(
                "causal_lm needs text-only data (e.g. data.name: text_corpus) and "
                "model.text.name: causal_transformer"
            )
        longest = 1 + cfg.prefix_tokens + cfg.new_tokens
        if longest > tower.max_len:
            raise ValueError(
                f"prefix_tokens: <cls> + {cfg.prefix_tokens} prefix + {cfg.new_tokens} new tokens "
                f"exceed the tower's {tower.max_len} positions (data.max_text_len)"
            )
        self.lm_head = nn.Linear(self.hparams["model"]["embed_dim"], self.tokenizer.vocab_size)

    def language_model(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """``ids [B, T]`` (all real tokens) -> next-token logits ``[B, T, V]`` and states
        ``[B, T, D]``: the callable modules/decoding.py decodes with."""
        out = self.towers["text"]({"text_ids": ids})
        return self.lm_head(out.tokens), out.tokens

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """``mle``: next-token cross-entropy; ``simctg``: SimCTG's margin loss on the states."""
        out = outputs["text"]
        ids, mask = batch["text_ids"], batch["text_mask"]
        return {
            "mle": next_token_loss(self.lm_head(out.tokens), ids, mask),
            "simctg": simctg_loss(out.tokens, mask, self.method_cfg.margin),
        }

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """rep-n, diversity, coherence per strategy, isotropy, and sample outputs."""
        return {"generation": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """``generation/prefix`` [B, 1 + prefix_tokens] (``<cls>`` first), the human
        ``generation/reference`` and each ``generation/<strategy>`` [B, new_tokens] (ids; -1
        on documents too short for a prefix and after a reference's end), and the documents'
        states ``generation/states`` [B, L, D] with ``generation/mask`` [B, L]."""
        cfg: CausalLMConfig = self.method_cfg
        ids, mask = batch["text_ids"], batch["text_mask"]
        start, end = 1 + cfg.prefix_tokens, 1 + cfg.prefix_tokens + cfg.new_tokens
        padded = torch.full((ids.shape[0], end), -1, dtype=ids.dtype, device=ids.device)
        width = min(end, ids.shape[1])
        padded[:, :width] = ids[:, :width].masked_fill(~mask[:, :width], -1)
        rows = (padded[:, :start] >= 0).all(dim=1).nonzero().squeeze(1)
        prefix = padded[rows, :start]
        found = {
            "generation/prefix": padded[:, :start],
            "generation/reference": padded[:, start:],
            "generation/states": outputs["text"].tokens,
            "generation/mask": mask,
        }
        options = {
            "beam": {"beam_width": cfg.beam_width},
            "nucleus": {"top_p": cfg.top_p, "generator": self._sampling_generator(batch)},
            "contrastive": {"k": cfg.k, "alpha": cfg.alpha},
        }
        for name in cfg.strategies:
            decoded = torch.full_like(padded[:, start:], -1)
            if len(rows):
                decode = STRATEGIES[name]
                decoded[rows] = decode(
                    self.language_model, prefix, cfg.new_tokens, **options.get(name, {})
                )
            found[f"generation/{name}"] = decoded
        return found

    def _sampling_generator(self, batch: dict[str, Any]) -> torch.Generator:
        """The nucleus draws of this batch: seeded by the run's seed and the batch's first
        sample, so a run's samples repeat whatever ran before."""
        generator = torch.Generator(device=batch["text_ids"].device)
        return generator.manual_seed(torch.initial_seed() + int(batch["index"][0]))
