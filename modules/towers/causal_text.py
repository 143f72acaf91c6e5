"""Causal text tower: the word-level transformer of ``modules/towers/text.py`` with a causal
attention mask, so position ``t`` sees tokens ``0..t`` only: the body of a small GPT-style
language model (modules/causal_lm.py puts the next-token head on its token states).

Same tokenizer as the ``transformer`` tower (word-level, ``<cls>`` first: here it is the
beginning-of-sequence token). ``tokens`` are the projected last-layer states, after the final
LayerNorm (GPT-2's ``hidden_states[-1]`` is also taken after ``ln_f``); ``pooled`` is their
masked mean (a causal ``<cls>`` state sees nothing but itself, so it cannot pool).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modules.registry import TOWERS
from modules.towers import TowerContext
from modules.towers.output import TowerOutput
from modules.towers.text import TextTransformerConfig, TextTransformerTower


@dataclass
class CausalTextConfig(TextTransformerConfig):
    name: str = "causal_transformer"
    pooling: str = "mean"


@TOWERS.register("causal_transformer", CausalTextConfig)
class CausalTextTower(TextTransformerTower):
    """Token + position embeddings, a causally masked pre-norm transformer, final LayerNorm."""

    def __init__(self, cfg: CausalTextConfig, embed_dim: int, context: TowerContext) -> None:
        if cfg.pooling != "mean":
            raise ValueError(f"pooling: a causal tower pools by 'mean', got {cfg.pooling!r}")
        super().__init__(cfg, embed_dim, context)

    @property
    def max_len(self) -> int:
        """The longest sequence the position embeddings cover."""
        return self.pos.shape[1]

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        ids = batch["text_ids"]
        mask = batch.get("text_mask")
        if mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        if ids.shape[1] > self.max_len:
            raise ValueError(f"text has {ids.shape[1]} tokens; the tower allows {self.max_len}")
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        length = ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).triu(1)
        x = self.encoder(x, mask=causal, src_key_padding_mask=~mask, is_causal=True)
        tokens = self.head(self.norm(x))
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return TowerOutput(pooled, tokens, mask)
