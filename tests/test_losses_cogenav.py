"""CoGenAV's sync loss against a slow loop over pairs and frames, and the spec's properties:
parallel frames give d = 1, frames pointing away get no gradient, per-frame rescaling changes
nothing, and a y = 0 pair scored 0 costs nothing."""

from __future__ import annotations

import math

import pytest
import torch

from modules.losses.cogenav import sync_loss, sync_score

F64 = torch.float64


def slow_sync_loss(audio: torch.Tensor, video: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Pair by pair, frame by frame: d = mean_t max(0, <a,v>/(|a||v|)), then the BCE with the
    log clamped at -100 (torch's binary_cross_entropy)."""
    total = audio.new_zeros(())
    for b in range(audio.shape[0]):
        frames = []
        for t in range(audio.shape[1]):
            a, v = audio[b, t], video[b, t]
            cos = (a * v).sum() / (a.norm() * v.norm())
            frames.append(torch.clamp(cos, min=0.0))
        d = torch.stack(frames).mean()
        y = label[b]
        log_d = torch.clamp(torch.log(d), min=-100.0)
        log_not_d = torch.clamp(torch.log(1 - d), min=-100.0)
        total = total - (y * log_d + (1 - y) * log_not_d)
    return total / audio.shape[0]


def inputs(seed: int = 0, b: int = 6, t: int = 5, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(b, t, d, generator=g, dtype=F64)
    video = audio + 0.8 * torch.randn(b, t, d, generator=g, dtype=F64)  # mostly positive cos
    label = torch.tensor([1.0, 0.0] * (b // 2), dtype=F64)
    return audio, video, label


def test_matches_the_slow_loop_in_value_and_gradient():
    audio, video, label = inputs()
    a1, v1 = audio.clone().requires_grad_(), video.clone().requires_grad_()
    a2, v2 = audio.clone().requires_grad_(), video.clone().requires_grad_()
    fast, slow = sync_loss(a1, v1, label), slow_sync_loss(a2, v2, label)
    fast.backward()
    slow.backward()
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    torch.testing.assert_close(a1.grad, a2.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(v1.grad, v2.grad, rtol=0, atol=1e-12)


def test_parallel_frames_score_one_and_cost_nothing_when_in_sync():
    """(a) A_t = c_t V_t with c_t > 0 for all t: d = 1, L(y = 1) = 0."""
    _, video, _ = inputs()
    scale = torch.rand(video.shape[:2], dtype=F64) + 0.1
    audio = scale[..., None] * video
    torch.testing.assert_close(sync_score(audio, video), torch.ones(len(video), dtype=F64))
    assert sync_loss(audio, video, torch.ones(len(video), dtype=F64)).item() < 1e-12


def test_frames_pointing_away_add_nothing_and_get_no_gradient():
    """(b) frames with cos < 0 contribute 0 to d and receive zero gradient (the ReLU)."""
    audio, video, label = inputs()
    audio[:, 2] = -video[:, 2]  # cos = -1 at frame 2
    kept = [0, 1, 3, 4]
    a = audio.clone().requires_grad_()
    loss = sync_loss(a, video, label)
    loss.backward()
    assert torch.all(a.grad[:, 2] == 0)
    positive = torch.nn.functional.cosine_similarity(audio, video, dim=-1) > 0
    assert positive[:, kept].any()
    assert torch.all(a.grad.abs().sum(dim=-1)[positive] > 0)
    expected = sync_score(audio[:, kept], video[:, kept]) * len(kept) / 5
    torch.testing.assert_close(sync_score(audio, video), expected)


def test_score_is_invariant_to_positive_per_frame_rescaling():
    """(c) d(c_t A_t, V) = d(A, V) for c_t > 0."""
    audio, video, _ = inputs(seed=1)
    scale = torch.rand(audio.shape[:2], dtype=F64) * 5 + 0.01
    torch.testing.assert_close(
        sync_score(scale[..., None] * audio, video), sync_score(audio, video)
    )


def test_out_of_sync_pair_scored_zero_costs_nothing_and_wrong_label_costs_the_clamp():
    """(d) y = 0 with d = 0: loss 0; y = 1 with d = 0: the clamped log, 100."""
    _, video, _ = inputs()
    audio = -video
    assert sync_loss(audio, video, torch.zeros(len(video), dtype=F64)).item() == 0.0
    assert math.isclose(sync_loss(audio, video, torch.ones(len(video), dtype=F64)).item(), 100.0)


def test_shapes_must_match():
    audio, video, label = inputs()
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        sync_loss(audio[:, :4], video, label)
