"""Modality-pairwise module: its loss is the mean CLIP loss over every pair of modalities on the
normalised embeddings (the anchored baseline: over the anchor's pairs only, so no gradient
couples two non-anchor towers); the data's modality order does not change it; it asks for a
linear probe on the concatenated embeddings, which the probe evaluator builds from all towers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from callbacks.evaluators import LinearProbe
from modules.losses.contrastive import clip_loss
from modules.modality_pairwise import ModalityPairwise
from tests.test_gram import AUDIO, CONTEXT, VOCAB, batch
from tests.tiny_modules import MODEL, OPTIM, word_state


def module(modalities=("image", "audio", "text"), seed: int = 0, **method: Any):
    torch.manual_seed(seed)
    return ModalityPairwise(
        method={"name": "modality_pairwise", **method},
        model={**MODEL, "audio": AUDIO, "temperature": 0.07, "learnable_temperature": False},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={"modalities": list(modalities), **CONTEXT},
    )


def embeddings(net: ModalityPairwise, b: dict) -> dict[str, torch.Tensor]:
    return {m: F.normalize(net.towers[m](b).pooled, dim=-1) for m in net.modalities}


def test_all_pairs_is_the_mean_clip_loss_of_the_three_pairs():
    net, b = module(), batch()
    with torch.no_grad():
        got = net.losses(b, net.encode(b))["pairwise"]
        z = embeddings(net, b)
        pairs = [("image", "audio"), ("image", "text"), ("audio", "text")]
        want = sum(clip_loss(z[p], z[q], 1 / 0.07, ids=b["item_id"]) for p, q in pairs) / 3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_anchored_pairs_leave_the_non_anchor_pair_out():
    """With pairs: anchored the image-audio similarity takes no part: the loss is the mean of
    the caption's two pairs (the anchor listed first, so its position is not assumed)."""
    net, b = module(("text", "image", "audio"), pairs="anchored", anchor="text"), batch()
    with torch.no_grad():
        got = net.losses(b, net.encode(b))["pairwise"]
        z = embeddings(net, b)
        want = sum(
            clip_loss(z[m], z["text"], 1 / 0.07, ids=b["item_id"]) for m in ("image", "audio")
        )
    torch.testing.assert_close(got, want / 2, rtol=1e-5, atol=1e-6)


def test_the_order_of_the_modalities_does_not_change_the_loss():
    """The same towers (weights copied by name) listed in another order: the same loss."""
    b = batch()
    first = module(("image", "audio", "text"))
    second = module(("text", "image", "audio"))
    second.load_state_dict(first.state_dict())
    with torch.no_grad():
        values = [net.losses(b, net.encode(b))["pairwise"] for net in (first, second)]
    torch.testing.assert_close(values[0], values[1], rtol=1e-6, atol=1e-7)


def test_every_tower_gets_a_gradient():
    net, b = module(), batch()
    net.losses(b, net.encode(b))["pairwise"].backward()
    for name, tower in net.towers.items():
        grads = [p.grad for p in tower.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="method.pairs must be one of"):
        module(pairs="ring")
    with pytest.raises(ValueError, match="method.anchor 'depth' is not among"):
        module(pairs="anchored", anchor="depth")


def test_asks_for_a_linear_probe_on_all_modalities_concatenated():
    net = module()
    assert net.evaluators() == {"linear_probe": {"modality": ["image", "audio", "text"]}}

    class Data:
        """Three labelled training items in one probe batch."""

        labels = {"shape": 3}

        def probe_loader(self, split):
            b = batch(size=3)
            return [{**b, "label/shape": torch.tensor([0, 1, 2])}]

    probe = LinearProbe(net, Data(), {"modality": ["image", "audio", "text"]}, {})
    bank = next(iter(probe.shared.values()))
    d = MODEL["embed_dim"]
    assert bank["features"].shape == (3, 3 * d)  # the three towers side by side
    for block in bank["features"].split(d, dim=1):  # each one's normalised embedding
        torch.testing.assert_close(block.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match=r"linear_probe.modality: \['depth'\] not among"):
        LinearProbe(net, Data(), {"modality": ["image", "depth"]}, {})
