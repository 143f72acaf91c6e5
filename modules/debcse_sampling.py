"""DebCSE's inverse-propensity-weighted pair sampling (Miao, Du and Zhang, "DebCSE: Rethinking
Unsupervised Contrastive Sentence Embedding Learning in the Debiasing Perspective", CIKM 2023;
methods/part1.md Sec. 23).

No official code was found, and the paper's method section was not available (only its
abstract): this is a reconstruction of what the abstract states, "an inverse propensity weighted
sampling method to select high-quality positive and negative pairs according to both the surface
and semantic similarity between sentences", against the biases it names (sentence length,
false negatives). The choices (each a plain function below, tested on its own):

- **candidates** from the unlabelled pool: an anchor's positive candidates are its ``k`` nearest
  neighbours by a frozen scorer's cosine similarity (semantic similarity); its negative
  candidates are its ``k`` nearest by surface similarity (word-set Jaccard overlap) among the
  sentences that are *not* positive candidates (surface-similar, semantically apart: hard
  negatives);
- **propensity** of a candidate: how common its confounder bin is among all candidates of the
  pool, ``e(c) = #{candidates in bin(c)} / #{candidates}``. For positives the confounders are the
  surface features (Jaccard overlap x relative length difference, joint bins): nearest
  neighbours of a scorer favour lexically close, equally long sentences. For negatives the
  confounder is the semantic similarity: surface neighbours favour near-duplicates (false
  negatives);
- **sampling**: one positive and one negative per anchor per step, drawn with probability
  proportional to ``1 / e``, so the drawn pairs are spread evenly over the confounder bins
  (inverse propensity weighting realised as sampling rather than loss weights). Draws are
  seeded by (seed, global step, sample index), so they do not depend on how the batch is split
  over processes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bag_of_words(ids: Tensor, mask: Tensor) -> Tensor:
    """Binary word-presence rows [n, V'] of token id rows ``ids`` [n, L] (``mask``: real
    tokens), over the ids the pool uses."""
    used, inverse = torch.unique(ids[mask.bool()], return_inverse=True)
    bags = torch.zeros(ids.shape[0], len(used))
    rows = torch.arange(ids.shape[0])[:, None].expand_as(ids)[mask.bool()]
    bags[rows, inverse] = 1.0
    return bags


def jaccard(bags_a: Tensor, bags_b: Tensor) -> Tensor:
    """Word-set Jaccard overlap [a, b] between binary rows."""
    inter = bags_a @ bags_b.T
    union = bags_a.sum(1)[:, None] + bags_b.sum(1)[None, :] - inter
    return inter / union.clamp_min(1.0)


def top_k_excluding(scores: Tensor, k: int, excluded: Tensor) -> Tensor:
    """Column indices [n, k] of the ``k`` highest scores of each row, never a column where
    ``excluded`` [n, n] is True."""
    return scores.masked_fill(excluded, float("-inf")).topk(k, dim=1).indices


def mine_candidates(
    embeddings: Tensor, bags: Tensor, k: int, chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """(positive candidates [n, k]: nearest by cosine of the scorer's L2-normalised
    ``embeddings``; negative candidates [n, k]: nearest by Jaccard of ``bags`` among the rest),
    never the anchor itself; rows computed ``chunk`` anchors at a time."""
    n = embeddings.shape[0]
    if k < 1 or 2 * k >= n:
        raise ValueError(f"k = {k} needs a pool of more than {2 * k} sentences, got {n}")
    positives, negatives = [], []
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        itself = torch.zeros(len(rows), n, dtype=torch.bool)
        itself[torch.arange(len(rows)), rows] = True
        pos = top_k_excluding(embeddings[rows] @ embeddings.T, k, itself)
        taken = itself.scatter(1, pos, True)
        negatives.append(top_k_excluding(jaccard(bags[rows], bags), k, taken))
        positives.append(pos)
    return torch.cat(positives), torch.cat(negatives)


def bin_index(values: Tensor, num_bins: int) -> Tensor:
    """Equal-width bins of ``values`` over their observed range, 0 .. num_bins - 1."""
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low).clamp_min(1e-12)
    return (scaled * num_bins).long().clamp(0, num_bins - 1)


def propensity(bins: Tensor) -> Tensor:
    """``e(c)``: the share of all candidates that fall in candidate ``c``'s bin (``bins``: any
    shape of bin ids); same shape."""
    _, inverse, counts = torch.unique(bins.flatten(), return_inverse=True, return_counts=True)
    return (counts[inverse].to(torch.float64) / bins.numel()).reshape(bins.shape)


def pair_features(anchors: Tensor, candidates: Tensor, bags: Tensor, lengths: Tensor) -> Tensor:
    """Surface confounders of each (anchor, candidate) pair [n, k, 2]: Jaccard word overlap and
    relative length difference ``|l_a - l_c| / max(l_a, l_c)``."""
    a, c = bags[anchors][:, None, :], bags[candidates]
    inter = (a * c).sum(-1)
    overlap = inter / (a.sum(-1) + c.sum(-1) - inter).clamp_min(1.0)
    la, lc = lengths[anchors][:, None].float(), lengths[candidates].float()
    return torch.stack([overlap, (la - lc).abs() / torch.maximum(la, lc).clamp_min(1.0)], dim=-1)


def joint_bins(features: Tensor, num_bins: int) -> Tensor:
    """One bin id per pair from equal-width bins of each feature (last dim) jointly."""
    ids = torch.zeros(features.shape[:-1], dtype=torch.long)
    for f in range(features.shape[-1]):
        ids = ids * num_bins + bin_index(features[..., f], num_bins)
    return ids


def draw_inverse_propensity(
    candidates: Tensor, propensities: Tensor, index: Tensor, step: int, seed: int, salt: int
) -> Tensor:
    """One candidate per sample of ``index`` (rows of ``candidates`` [n, k]), drawn with
    probability proportional to ``1 / propensity``, from a generator seeded by (seed, step,
    sample index, ``salt``); returns pool indices [len(index)]."""
    weights = 1.0 / propensities[index]
    picks = [
        torch.multinomial(
            w,
            1,
            generator=torch.Generator().manual_seed(
                (seed * 1_000_003 + int(i) * 7_919 + step * 104_729 + salt) % 2**62
            ),
        )
        for w, i in zip(weights, index.tolist(), strict=True)
    ]
    return candidates[index, torch.cat(picks)]
