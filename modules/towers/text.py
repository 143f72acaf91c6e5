"""Text tower trained from scratch: a small pre-norm transformer over word-level tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modules.registry import TOWERS
from modules.towers import TowerContext
from modules.towers.layers import TransformerConfig, projection_head, transformer_encoder
from modules.towers.output import TowerOutput
from modules.towers.tokenizer import WordTokenizer


@dataclass
class TextTransformerConfig(TransformerConfig):
    name: str = "transformer"
    pooling: str = "cls"


@TOWERS.register("transformer", TextTransformerConfig)
class TextTransformerTower(nn.Module):
    """Token + position embeddings, transformer, pooled by ``<cls>`` or masked mean."""

    modality = "text"

    def __init__(self, cfg: TextTransformerConfig, embed_dim: int, context: TowerContext) -> None:
        super().__init__()
        if context.vocab_size < 4:
            raise ValueError("text tower needs the tokenizer's vocabulary (vocab_size missing)")
        if cfg.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling: expected 'cls' or 'mean', got {cfg.pooling!r}")
        self.pooling = cfg.pooling
        self.embed = nn.Embedding(context.vocab_size, cfg.width, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(1, context.max_text_len, cfg.width) * 0.02)
        self.encoder = transformer_encoder(cfg)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = projection_head(cfg.width, embed_dim, cfg.projection)

    @classmethod
    def build_tokenizer(
        cls,
        cfg: TextTransformerConfig,
        texts: list[str] | None,
        max_len: int,
        state: dict[str, Any] | None = None,
    ) -> WordTokenizer:
        """The word-level tokenizer of this tower: the vocabulary of ``state`` (a checkpoint's)
        if given, else every word of ``texts`` (the training captions); ``max_len`` wins over
        the state's, as the vocabulary is reused under the current data config."""
        if state is not None:
            return WordTokenizer.from_state({**state, "max_len": max_len})
        if texts is None:
            raise ValueError(
                "the transformer text tower builds its vocabulary from the training captions: "
                "pass texts or a tokenizer state"
            )
        return WordTokenizer.build(texts, max_len=max_len)

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        ids, mask = batch["text_ids"], batch["text_mask"]
        if ids.shape[1] > self.pos.shape[1]:
            raise ValueError(
                f"text has {ids.shape[1]} tokens; the tower allows {self.pos.shape[1]}"
            )
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        x = self.norm(self.encoder(x, src_key_padding_mask=~mask))
        if self.pooling == "cls":
            pooled = x[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return TowerOutput(self.head(pooled), self.head(x), mask)
