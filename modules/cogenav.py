"""CoGenAV: contrastive-generative audio-visual synchronisation (Bai, Ma, Wei & Bo, "CoGenAV:
Versatile Audio-Visual Representation Learning via Contrastive-Generative Synchronization",
arXiv 2505.03186, 2025; code: ``HumanMLLM/CoGenAV``, inference only).

An encoder turns a talking clip's audio into per-frame features ``A`` [T, d] and its lip video
into per-frame features ``V`` [T, d] at the same frame rate. Two objectives train it:

- **contrastive synchronisation**: ``d(A, V) = (1/T) sum_t ReLU(cos(A_t, V_t))``
  scored by binary cross-entropy, ``y = 1`` for an in-sync pair and ``y = 0`` for an
  out-of-sync one (:func:`modules.losses.cogenav.sync_loss`);
- **generative synchronisation**: a feature adapter fuses the streams (3 layers of
  cross-attention, query = audio features, key/value = visual features, each followed by a
  residual LayerNorm and a gated FFN ``x + sigmoid(MLP(x)) * MLP(x)``, released
  ``FeatureAdaptation``) and a frozen speech recogniser decodes the transcript from it:
  ``L_gen = -sum_n log p(w_n | w_<n, Adapter(A, V))``.

The total is ``L = L_gen + lambda L_sync`` (``method.loss_weights``: ``gen`` and ``sync``).
(The formulas follow the method section and the released code; the spec we worked from gives
no equation numbers, so none are cited.)

Choices (the spec's ⚠ points, checked against the released code where it exists):

- the sync score and loss are the released ``seq2seq_contrastive_loss`` (ReLU of the frame
  cosines, mean over time, ``F.binary_cross_entropy``);
- negatives: the paper does not show how unsynchronised pairs are built; we follow the
  issue and SyncNet practice: the same clip's video shifted by 2-4 frames (the data's
  ``video_shifted``), one negative per positive;
- lambda is not given: 1 (``loss_weights: {sync: 1, gen: 1}``);
- towers: the paper shares one 12-layer AV-HuBERT trunk between the modalities (a missing
  stream zero-filled); here two towers (``audio_frames``: Conv1d front-end at the video frame
  rate, ``frames``: per-frame CNN + transformer), each returning per-frame tokens [B, T, D].

Scoped down (2 CPU cores, no pretrained recogniser): the frozen Whisper decoder is replaced
by a small **trainable** word-level Transformer decoder (``decoder_layers``, teacher-forced
cross-entropy over the transcript's word ids then an end token, greedy decoding for the
word error rate) that reads the adapter's output directly; Whisper's own encoder and the
``DeltaUpsampler`` that doubles the frame rate to Whisper's 50 Hz are left out (they only fit
the features to Whisper's input). So this is "CoGenAV-sync + toy transcript decoder", not the
paper's model: the generative term trains the adapter and decoder along with the encoders,
where the paper's gradient reaches only the adapter and the encoder.

Evaluation: the embedding every evaluator compares is the clip's per-frame tokens,
L2-normalised per frame, flattened and divided by sqrt(T), so the dot product of an audio and
a video embedding is the mean frame cosine (``d`` without the ReLU): the data's ``choice``
tasks (``sync``: in-sync against shifted video; ``active_speaker``: against another speaker)
rank pairs by it. ``eval_outputs`` gives the greedy transcript (``transcript/words``) for the
``wer`` evaluator (callbacks/transcript.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import DualTowerModule, MethodConfig
from modules.losses.cogenav import sync_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class CoGenAVConfig(MethodConfig):
    """``vocab_size``: word ids of the data's ``words`` (20 for the built-in clips; LRS: the
    length of the data's ``word_vocab``); ``max_words``: longest transcript decoded (the data's
    ``max_words``); adapter as the paper (3 layers, FFN expansion 4); the decoder stands in for
    Whisper (see the module docstring)."""

    name: str = "cogenav"
    vocab_size: int = 20
    max_words: int = 8
    adapter_layers: int = 3
    adapter_heads: int = 4
    ffn_expansion: int = 4
    decoder_layers: int = 2
    decoder_heads: int = 4
    loss_weights: dict[str, float] = field(default_factory=lambda: {"sync": 1.0, "gen": 1.0})

    def __post_init__(self) -> None:
        for key in (
            "vocab_size",
            "max_words",
            "adapter_layers",
            "adapter_heads",
            "ffn_expansion",
            "decoder_layers",
            "decoder_heads",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"method.{key}: must be >= 1, got {getattr(self, key)}")


class GatedFFN(nn.Module):
    """``x + sigmoid(MLP_g(x)) * MLP_v(x)``, each MLP ``Linear -> GELU -> Linear``."""

    def __init__(self, dim: int, expansion: int) -> None:
        super().__init__()
        hidden = dim * expansion
        self.gate = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.value = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.sigmoid(self.gate(x)) * self.value(x)


class AdapterLayer(nn.Module):
    """Cross-attention from the audio stream to the visual stream, then the gated FFN, each
    with a residual connection and a LayerNorm after it (post-norm, as released)."""

    def __init__(self, dim: int, heads: int, expansion: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = GatedFFN(dim, expansion)
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        attended, _ = self.attn(audio, visual, visual, need_weights=False)
        audio = self.attn_norm(attended + audio)
        return self.ffn_norm(self.ffn(audio) + audio)


class FeatureAdaptation(nn.Module):
    """The adapter: ``layers`` of :class:`AdapterLayer`, audio [B, T, D] attending to visual
    [B, T, D]; returns the fused audio stream [B, T, D]."""

    def __init__(self, dim: int, heads: int, layers: int, expansion: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(AdapterLayer(dim, heads, expansion) for _ in range(layers))

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        for layer in self.layers:
            audio = layer(audio, visual)
        return audio


class TranscriptDecoder(nn.Module):
    """Word-level autoregressive Transformer decoder over the adapter's features (stand-in
    for Whisper's frozen decoder). Output ids: the ``vocab_size`` words and ``end``;
    inputs additionally ``start``."""

    def __init__(self, dim: int, heads: int, layers: int, vocab_size: int, max_words: int) -> None:
        super().__init__()
        self.end, self.start, self.max_words = vocab_size, vocab_size + 1, max_words
        self.embed = nn.Embedding(vocab_size + 2, dim)
        self.position = nn.Parameter(torch.randn(1, max_words + 1, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(
            dim, heads, 2 * dim, 0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab_size + 1)

    def forward(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """Logits [B, L, vocab + 1] of the next word after each prefix of ``tokens`` [B, L]
        (``start`` first; causal)."""
        length = tokens.shape[1]
        x = self.embed(tokens) + self.position[:, :length]
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=x.device)
        x = self.decoder(x, memory, tgt_mask=causal.to(x.dtype), tgt_is_causal=True)
        return self.out(self.norm(x))

    def teacher_forced(self, words: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs ``[start, w_1..w_n, end, ...]`` and targets ``[w_1..w_n, end, -1, ...]``
        from ``words`` [B, L] (-1 padded)."""
        valid = words >= 0
        lengths = valid.sum(dim=1)
        targets = torch.where(valid, words, torch.full_like(words, -1))
        targets = torch.cat([targets, torch.full_like(words[:, :1], -1)], dim=1)
        targets[torch.arange(len(words), device=words.device), lengths] = self.end
        start = torch.full_like(words[:, :1], self.start)
        inputs = torch.cat([start, targets[:, :-1].clamp_min(0)], dim=1)
        return inputs, targets

    @torch.no_grad()
    def greedy(self, memory: Tensor) -> Tensor:
        """Greedy transcripts [B, max_words] (-1 after the end token)."""
        tokens = torch.full((len(memory), 1), self.start, dtype=torch.long, device=memory.device)
        done = torch.zeros(len(memory), dtype=torch.bool, device=memory.device)
        out = []
        for _ in range(self.max_words):
            step = self(tokens, memory)[:, -1].argmax(dim=-1)
            done |= step == self.end
            out.append(torch.where(done, torch.full_like(step, -1), step))
            tokens = torch.cat([tokens, step[:, None]], dim=1)
        return torch.stack(out, dim=1)


@METHODS.register("cogenav", CoGenAVConfig)
class CoGenAV(DualTowerModule):
    """Audio and lip towers with per-frame tokens, the sync BCE on in-sync / shifted pairs,
    and the adapter + transcript decoder's cross-entropy."""

    loss_terms = ("sync", "gen")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: CoGenAVConfig = self.method_cfg
        if set(self.pair) != {"audio", "video"}:
            raise ValueError(f"cogenav needs audio and video encoders, got {list(self.pair)}")
        dim = self.hparams["model"]["embed_dim"]
        self.adapter = FeatureAdaptation(
            dim, cfg.adapter_heads, cfg.adapter_layers, cfg.ffn_expansion
        )
        self.decoder = TranscriptDecoder(
            dim, cfg.decoder_heads, cfg.decoder_layers, cfg.vocab_size, cfg.max_words
        )

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Both towers, and the video tower on the shifted clip (the sync negative)."""
        outputs = super().encode(batch)
        if "video_shifted" in batch:
            tower = self.towers["video"]
            outputs["video_shifted"] = tower({tower.key: batch["video_shifted"]})
        return outputs

    def embedding(self, name: str, output: TowerOutput) -> Tensor:
        """Per-frame tokens, unit per frame, flattened / sqrt(T): dot products are mean frame
        cosines."""
        tokens = F.normalize(output.tokens, dim=-1)
        return tokens.flatten(1) / math.sqrt(tokens.shape[1])

    def fused(self, outputs: dict[str, TowerOutput]) -> Tensor:
        """The adapter's output: audio tokens attending to the in-sync video tokens."""
        return self.adapter(outputs["audio"].tokens, outputs["video"].tokens)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """``sync``: BCE of ``d`` on (audio, video) with y = 1 and (audio, shifted video) with
        y = 0; ``gen``: ``-sum_n log p(w_n | w_<n, Adapter(A, V))`` over each transcript's words
        and its end token (the paper's sum, not a per-token mean), averaged over transcripts
        (per sample, so 2 processes take the 1-process step)."""
        if "video_shifted" not in outputs or "words" not in batch:
            raise KeyError("cogenav needs the batch keys video_shifted and words")
        audio = outputs["audio"].tokens
        video = torch.cat([outputs["video"].tokens, outputs["video_shifted"].tokens])
        labels = torch.cat([audio.new_ones(len(audio)), audio.new_zeros(len(audio))])
        sync = sync_loss(torch.cat([audio, audio]), video, labels)
        words = self._checked_words(batch["words"])
        inputs, targets = self.decoder.teacher_forced(words)
        logits = self.decoder(inputs, self.fused(outputs))
        nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-1, reduction="none")
        return {"sync": sync, "gen": nll.sum(dim=1).mean()}

    def _checked_words(self, words: Tensor) -> Tensor:
        cfg: CoGenAVConfig = self.method_cfg
        if words.shape[1] > cfg.max_words:
            raise ValueError(
                f"method.max_words: {cfg.max_words}, but the data has {words.shape[1]} words "
                "per transcript"
            )
        if len(words) and int(words.max()) >= cfg.vocab_size:
            raise ValueError(
                f"method.vocab_size: {cfg.vocab_size}, but the data has word id {int(words.max())}"
            )
        return words

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """The greedy transcript's word error rate."""
        return {"wer": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """``transcript/words`` [B, max_words]: greedy word ids, -1 after the end."""
        return {"transcript/words": self.decoder.greedy(self.fused(outputs))}
