"""The modality-pairwise loss (methods/part1.md Sec. 9) against a slow per-anchor reference of
the mean over ordered pairs, and the spec's unit tests: M = 2 is the symmetric CLIP loss, the
loss does not depend on the order of the modalities, every tower gets a gradient; the anchored
(star) variant keeps only the anchor's pairs, wherever the anchor is listed."""

from __future__ import annotations

import math
from itertools import permutations

import pytest
import torch
import torch.nn.functional as F

from modules.losses.contrastive import clip_loss
from modules.losses.modality_pairwise import modality_pairwise_loss

F64 = torch.float64
TOL = dict(rtol=0.0, atol=1e-12)


def unit(rows: int, dim: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=F64), dim=1)


def slow_pairwise(features, scale, ids=None, anchor=None):
    """1 / (#ordered pairs) sum_{m != m'} -1/B sum_i mean_{p in P(i)} log softmax_j(s <z^m_i,
    z^m'_j>)_p, one anchor row at a time (P(i): columns with i's id; the diagonal without ids)."""
    total, count = 0.0, 0
    for m, n in permutations(range(len(features)), 2):
        if anchor is not None and anchor not in (m, n):
            continue
        a, b = features[m], features[n]
        rows = []
        for i in range(a.shape[0]):
            logits = [scale * torch.dot(a[i], b[j]) for j in range(b.shape[0])]
            log_norm = torch.logsumexp(torch.stack(logits), dim=0)
            positives = [
                j for j in range(b.shape[0]) if (ids[j] == ids[i] if ids is not None else j == i)
            ]
            rows.append(-sum(logits[p] - log_norm for p in positives) / len(positives))
        total = total + torch.stack(rows).mean()
        count += 1
    return total / count


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("with_ids", [False, True])
def test_equals_the_slow_reference_of_eq_1_2(m, with_ids):
    features = [unit(6, seed=s) for s in range(m)]
    ids = torch.tensor([0, 1, 0, 2, 3, 1]) if with_ids else None
    got = modality_pairwise_loss(features, 1 / 0.07, ids)
    torch.testing.assert_close(got, slow_pairwise(features, 1 / 0.07, ids), **TOL)


def test_two_modalities_are_the_symmetric_clip_loss():
    image, text = unit(8, seed=1), unit(8, seed=2)
    torch.testing.assert_close(
        modality_pairwise_loss([image, text], 14.3), clip_loss(image, text, 14.3), **TOL
    )


def test_the_order_of_the_modalities_does_not_matter():
    features = [unit(8, seed=s) for s in range(4)]
    want = modality_pairwise_loss(features, 10.0)
    for order in permutations(range(4)):
        torch.testing.assert_close(
            modality_pairwise_loss([features[k] for k in order], 10.0), want, **TOL
        )


def test_every_tower_gets_a_gradient_and_the_anchored_variant_is_the_star():
    features = [unit(8, seed=s).requires_grad_() for s in range(3)]
    modality_pairwise_loss(features, 10.0).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)
    # anchored at modality 2: the pair (0, 1) takes no part; all pairs = mean of 3, star = of 2
    star = modality_pairwise_loss(features, 10.0, anchor=2)
    pair = {(a, b): clip_loss(features[a], features[b], 10.0) for a, b in ((0, 1), (0, 2), (1, 2))}
    torch.testing.assert_close(star, (pair[0, 2] + pair[1, 2]) / 2, **TOL)
    torch.testing.assert_close(
        modality_pairwise_loss(features, 10.0), sum(pair.values()) / 3, **TOL
    )
    torch.testing.assert_close(star, slow_pairwise(features, 10.0, anchor=2), **TOL)
    first = modality_pairwise_loss(features, 10.0, anchor=0)  # anchor not last
    torch.testing.assert_close(first, (pair[0, 1] + pair[0, 2]) / 2, **TOL)


def test_limits_aligned_towers_and_one_modality():
    """Identical towers at a high scale: the loss goes to 0; uniform logits: log B."""
    same = unit(8, seed=3)
    assert modality_pairwise_loss([same, same, same], 1e4).item() < 1e-6
    zero = torch.zeros(8, 6, dtype=F64)
    torch.testing.assert_close(
        modality_pairwise_loss([zero, zero, zero], 10.0),
        torch.tensor(math.log(8), dtype=F64),
        **TOL,
    )
    with pytest.raises(ValueError, match="at least 2 modalities"):
        modality_pairwise_loss([same], 10.0)
