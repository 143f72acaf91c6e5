"""Decoding strategies for a causal language model: greedy, beam, nucleus (top-p) and
contrastive search (Su & Collier, "Contrastive Search Is What You Need For Neural Text
Generation", TMLR 2023; first in Su et al., "A Contrastive Framework for Neural Text
Generation", NeurIPS 2022).

Every function takes the model as a plain callable ``model(ids) -> (logits, hidden)``:
``ids [B, T]`` (every token real, no padding), ``logits [B, T, V]`` for the next token at each
position and ``hidden [B, T, H]`` the last-layer states; and a ``prefix [B, P]`` of equal-length
rows. Each returns the continuation ``[B, steps]`` (the prefix left out); no end token stops a
row (the paper decodes a fixed length too: 256 tokens). The model is run on the whole sequence
at each step (no key/value cache): our models and sequences are small, and the functions stay
independent of the model's internals.

Contrastive search (paper Eq. 1), at step t with context ``x_<t``:

    x_t = argmax_{v in V(k)} { (1 - alpha) p(v | x_<t) - alpha max_{j<t} cos(h_v, h_{x_j}) }

``V(k)``: the k most probable tokens; ``p``: the softmax probability (not its log); ``h_v``: the
last-layer state of the sequence with ``v`` appended; ``h_{x_j}``: the states of every context
token, prefix included (``ranking_fast`` and ``ContrastiveDecodingOneStepFast`` of
yxuansu/SimCTG ``simctg/utlisgpt.py``, which Contrastive_Search_Is_What_You_Need calls). With
``alpha = 0`` or ``k = 1`` it is greedy search. Defaults of the paper's English open-ended
generation: k = 5, alpha = 0.6; its baselines: beam width 4, nucleus p = 0.95.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

#: ``ids [B, T] -> (next-token logits [B, T, V], last-layer states [B, T, H])``.
LanguageModel = Callable[[Tensor], tuple[Tensor, Tensor]]


def _check(prefix: Tensor, steps: int) -> None:
    if prefix.ndim != 2 or prefix.shape[1] < 1:
        raise ValueError(f"prefix must be [B, P] with P >= 1, got shape {tuple(prefix.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")


@torch.no_grad()
def greedy_search(model: LanguageModel, prefix: Tensor, steps: int) -> Tensor:
    """The most probable next token, ``steps`` times."""
    _check(prefix, steps)
    ids = prefix
    for _ in range(steps):
        logits, _ = model(ids)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, prefix.shape[1] :]


@torch.no_grad()
def beam_search(model: LanguageModel, prefix: Tensor, steps: int, beam_width: int = 4) -> Tensor:
    """The continuation of highest summed log-probability among ``beam_width`` beams kept at
    each step (all continuations have the same length, so no length penalty)."""
    _check(prefix, steps)
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    batch, width = prefix.shape[0], beam_width
    ids = prefix.repeat_interleave(width, dim=0)  # [B*W, T]
    # one live beam per row at the start, so the first expansion does not repeat it W times
    scores = torch.full((batch, width), float("-inf"), device=prefix.device)
    scores[:, 0] = 0.0
    for _ in range(steps):
        logits, _ = model(ids)
        logp = F.log_softmax(logits[:, -1].float(), dim=-1).view(batch, width, -1)
        vocab = logp.shape[-1]
        total = (scores.unsqueeze(-1) + logp).view(batch, -1)  # [B, W*V]
        scores, flat = total.topk(min(width, total.shape[1]), dim=-1)
        if scores.shape[1] < width:  # a vocabulary smaller than the beam: pad with dead beams
            pad = width - scores.shape[1]
            scores = torch.cat([scores, scores.new_full((batch, pad), float("-inf"))], 1)
            flat = torch.cat([flat, flat[:, :1].expand(-1, pad)], 1)
        parent, token = flat // vocab, flat % vocab
        rows = (torch.arange(batch, device=ids.device).unsqueeze(1) * width + parent).view(-1)
        ids = torch.cat([ids[rows], token.view(-1, 1)], dim=1)
    best = scores.argmax(-1) + torch.arange(batch, device=ids.device) * width
    return ids[best, prefix.shape[1] :]


def nucleus_filter(logits: Tensor, top_p: float) -> Tensor:
    """``logits [B, V]`` with every token outside the nucleus set to -inf: the nucleus is the
    smallest set of most probable tokens whose probability reaches ``top_p`` (Holtzman et al.
    2020; the most probable token is always kept)."""
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    probs, order = F.softmax(logits.float(), dim=-1).sort(dim=-1, descending=True)
    before = probs.cumsum(-1) - probs  # mass of the more probable tokens
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.no_grad()
def nucleus_sampling(
    model: LanguageModel,
    prefix: Tensor,
    steps: int,
    top_p: float = 0.95,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Each next token drawn from the renormalised nucleus of ``top_p`` (``generator``: the
    random draws, for reproducible samples)."""
    _check(prefix, steps)
    ids = prefix
    for _ in range(steps):
        logits, _ = model(ids)
        probs = F.softmax(nucleus_filter(logits[:, -1], top_p), dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)
        ids = torch.cat([ids, token], dim=1)
    return ids[:, prefix.shape[1] :]


def degeneration_penalty(context: Tensor, candidates: Tensor) -> Tensor:
    """``max_j cos(h_v, h_{x_j})`` for each candidate: ``context [B, T, H]`` (the context
    tokens' states), ``candidates [B, K, H]`` -> ``[B, K]``."""
    cosine = F.normalize(candidates.float(), dim=-1) @ F.normalize(context.float(), dim=-1).mT
    return cosine.max(dim=-1).values


def contrastive_scores(probs: Tensor, penalty: Tensor, alpha: float) -> Tensor:
    """The paper's Eq. 1 score of each candidate: ``(1 - alpha) p - alpha penalty``."""
    return (1.0 - alpha) * probs - alpha * penalty


@torch.no_grad()
def contrastive_search(
    model: LanguageModel, prefix: Tensor, steps: int, k: int = 5, alpha: float = 0.6
) -> Tensor:
    """Contrastive search (module docstring): among the top ``k`` tokens, the one that is
    probable and whose state is least similar to the context's states."""
    _check(prefix, steps)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    batch = prefix.shape[0]
    logits, hidden = model(prefix)
    next_logits, ids = logits[:, -1], prefix
    for _ in range(steps):
        probs = F.softmax(next_logits.float(), dim=-1)
        top_probs, top_ids = probs.topk(min(k, probs.shape[-1]), dim=-1)  # [B, K]
        width = top_ids.shape[1]
        expanded = torch.cat(
            [ids.repeat_interleave(width, dim=0), top_ids.reshape(-1, 1)], dim=1
        )  # [B*K, T+1]: each candidate appended to its row's context
        cand_logits, cand_hidden = model(expanded)
        last = cand_hidden[:, -1].view(batch, width, -1)
        penalty = degeneration_penalty(hidden, last)
        choice = contrastive_scores(top_probs, penalty, alpha).argmax(-1)  # [B]
        rows = torch.arange(batch, device=ids.device) * width + choice
        ids = expanded[rows]
        hidden, next_logits = cand_hidden[rows], cand_logits[rows, -1]
    return ids[:, prefix.shape[1] :]


#: Strategy name -> the function that decodes with it (their hyper-parameters as keywords).
STRATEGIES: dict[str, Callable[..., Tensor]] = {
    "greedy": greedy_search,
    "beam": beam_search,
    "nucleus": nucleus_sampling,
    "contrastive": contrastive_search,
}
