"""clip_loss: the diagonal limit, invariances, targets (the slow reference, gradients and DDP
are in the conformance kit, tests/conformance/cases_contrastive.py)."""

import math

import torch
import torch.nn.functional as F

from modules.losses.contrastive import (
    clip_loss,
    multi_positive_targets,
    positive_mask,
    soft_target_cross_entropy,
)

TOL = dict(rtol=0.0, atol=1e-10)
# 5 captions of image 0, 5 of image 1, 2 of image 2, one of image 3, shuffled.
MULTI_IDS = torch.tensor([1, 0, 3, 0, 1, 2, 0, 1, 2, 0, 1, 1, 0])


def _features(n, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    text = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    scale = torch.tensor(3.7, dtype=torch.float64)
    return image.requires_grad_(), text.requires_grad_(), scale.requires_grad_()


def test_single_positive_equals_standard_diagonal_cross_entropy():
    image, text, scale = _features(7)
    logits = scale * image @ text.T
    labels = torch.arange(7)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    torch.testing.assert_close(clip_loss(image, text, scale), expected, **TOL)
    # Unique ids in any order are the same single-positive problem.
    unique_ids = torch.tensor([40, 3, 17, 8, 99, 0, 5])
    torch.testing.assert_close(clip_loss(image, text, scale, ids=unique_ids), expected, **TOL)


def test_multi_positive_differs_from_diagonal():
    image, text, scale = _features(len(MULTI_IDS))
    diagonal = clip_loss(image, text, scale)
    assert not torch.isclose(clip_loss(image, text, scale, ids=MULTI_IDS), diagonal)


def test_joint_permutation_and_modality_swap_invariance():
    image, text, scale = _features(len(MULTI_IDS), seed=3)
    loss = clip_loss(image, text, scale, ids=MULTI_IDS, label_smoothing=0.1)
    perm = torch.randperm(len(MULTI_IDS), generator=torch.Generator().manual_seed(1))
    permuted = clip_loss(image[perm], text[perm], scale, ids=MULTI_IDS[perm], label_smoothing=0.1)
    swapped = clip_loss(text, image, scale, ids=MULTI_IDS, label_smoothing=0.1)
    torch.testing.assert_close(permuted, loss, **TOL)
    torch.testing.assert_close(swapped, loss, **TOL)


def test_positive_mask_and_targets():
    rows, cols = torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1, 3])
    expected_mask = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(positive_mask(rows, cols), expected_mask)
    q = multi_positive_targets(rows, cols, dtype=torch.float64)
    torch.testing.assert_close(q[:2], torch.tensor([[0, 1, 0, 0], [0.5, 0, 0.5, 0]]).double())
    assert torch.equal(q[2], torch.zeros(4, dtype=torch.float64))  # no positive: no target mass
    smooth = multi_positive_targets(rows[:2], cols, label_smoothing=0.2, dtype=torch.float64)
    torch.testing.assert_close(smooth, 0.8 * q[:2] + 0.05)
    torch.testing.assert_close(smooth.sum(dim=1), torch.ones(2, dtype=torch.float64))


def test_soft_target_cross_entropy_with_one_hot_is_cross_entropy():
    logits = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 5, 2, 2, 1])
    one_hot = F.one_hot(labels, 6).double()
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, one_hot), F.cross_entropy(logits, labels), **TOL
    )
    uniform = torch.full((5, 6), 1 / 6, dtype=torch.float64)
    flat = soft_target_cross_entropy(torch.zeros(5, 6, dtype=torch.float64), uniform)
    torch.testing.assert_close(flat, torch.tensor(math.log(6), dtype=torch.float64), **TOL)
