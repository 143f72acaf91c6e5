"""LanguageBind: the frozen language tower is unchanged by a step; with one modality the loss is
CLIP's; each modality's term reaches only its own tower; LoRA layers start as the wrapped layer
and match an independent two-convolution LoRA; the modality towers start from an earlier image
tower; ``anchor: image`` (ImageBind) freezes the image hub instead; checkpoints round-trip."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from callbacks.modality_zero_shot import ModalityZeroShot
from modules.base import module_from_checkpoint
from modules.languagebind import LanguageBind
from modules.losses.contrastive import clip_loss
from modules.towers.lora import LoRAConv2d, LoRALinear, add_lora
from tests.test_gram import AUDIO, CONTEXT, VOCAB
from tests.test_gram import batch as gram_batch
from tests.tiny_modules import MODEL, OPTIM, word_state

DEPTH = {"name": "depth_cnn", "channels": [8, 16]}
ALL = ("image", "depth", "audio", "text")


def module(modalities=ALL, frozen=(), seed: int = 0, **method: Any) -> LanguageBind:
    torch.manual_seed(seed)
    return LanguageBind(
        method={"name": "languagebind", **method},
        model={**MODEL, "audio": AUDIO, "depth": DEPTH, "frozen": list(frozen)},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={"modalities": list(modalities), **CONTEXT},
    )


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    b = gram_batch(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    return {**b, "depth": torch.randn(5, 1, 16, 16, generator=g)}


def test_language_tower_has_no_gradient_and_is_unchanged_by_a_step():
    net, b = module(), batch()
    text = {k: v.clone() for k, v in net.towers["text"].state_dict().items()}
    assert not any(p.requires_grad for p in net.towers["text"].parameters())
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net.total_loss(net.losses(b, net.encode(b))).backward()
    optimizer.step()
    assert all(p.grad is None for p in net.towers["text"].parameters())
    for k, v in net.towers["text"].state_dict().items():
        assert torch.equal(v, text[k]), k
    assert net.bound == ("image", "depth", "audio")


def test_one_modality_is_the_clip_loss():
    net, b = module(("image", "text"), lora_rank=0), batch()
    with torch.no_grad():
        got = net.losses(b, net.encode(b))
        z = {m: F.normalize(net.towers[m](b).pooled, dim=-1) for m in ("image", "text")}
        want = clip_loss(z["image"], z["text"], net.scale, ids=b["item_id"])
    assert list(got) == ["image"]
    torch.testing.assert_close(got["image"], want, rtol=1e-6, atol=1e-7)


def test_each_term_reaches_only_its_own_tower():
    """d L_M / d theta_M' = 0 for M' != M: the terms share only the frozen language tower."""
    net, b = module(), batch()
    terms = net.losses(b, net.encode(b))
    for m, loss in terms.items():
        for other in net.bound:
            params = [p for p in net.towers[other].parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            norm = sum(float(g.abs().sum()) for g in grads if g is not None)
            assert (norm > 0) == (other == m), (m, other, norm)


def test_weights_scale_each_modality_term():
    b = batch()
    plain, weighted = module(), module(loss_weights={"audio": 0.5, "depth": 0.0})
    with torch.no_grad():
        terms = plain.losses(b, plain.encode(b))
        total = weighted.total_loss(weighted.losses(b, weighted.encode(b)))
    torch.testing.assert_close(total, terms["image"] + 0.5 * terms["audio"])


def test_lora_layers_start_as_the_wrapped_layer_and_train_only_their_factors():
    torch.manual_seed(0)
    tower = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)
    )
    x = torch.randn(2, 3, 8, 8)
    before = tower(x)
    assert add_lora(tower, rank=2, alpha=4.0) == 2
    assert isinstance(tower[0], LoRAConv2d) and isinstance(tower[3], LoRALinear)
    torch.testing.assert_close(tower(x), before)
    trained = sorted(n for n, p in tower.named_parameters() if p.requires_grad)
    assert trained == ["0.lora_a", "0.lora_b", "3.lora_a", "3.lora_b"]
    assert {"0.weight", "0.bias", "3.weight", "3.bias"} <= set(tower.state_dict())


def test_lora_convolution_is_the_two_convolution_update():
    """W' x = W x + (alpha / r) B(A x) with A a k x k convolution to r channels and B a 1 x 1
    one (peft's form), written independently."""
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    wrapped = LoRAConv2d.wrap(conv, rank=3, alpha=6.0)
    with torch.no_grad():
        wrapped.lora_b.normal_()
    x = torch.randn(2, 4, 9, 9)
    a = F.conv2d(x, wrapped.lora_a.view(3, 4, 3, 3), stride=2, padding=1)
    want = conv(x) + 2.0 * F.conv2d(a, wrapped.lora_b.view(6, 3, 1, 1))
    torch.testing.assert_close(wrapped(x), want, rtol=1e-5, atol=1e-5)
    linear = nn.Linear(5, 4)
    lin = LoRALinear.wrap(linear, rank=2, alpha=2.0)
    with torch.no_grad():
        lin.lora_b.normal_()
    v = torch.randn(3, 5)
    torch.testing.assert_close(lin(v), linear(v) + (v @ lin.lora_a.T) @ lin.lora_b.T)


def test_towers_start_from_the_earlier_stages_image_and_text_towers():
    earlier = module(("image", "text"), lora_rank=0, seed=3)
    net, b = module(seed=4), batch()
    net.prepare_fit(SimpleNamespace(earlier=[earlier]))
    image = earlier.towers["image"]
    with torch.no_grad():
        gray = b["depth"].expand(-1, 3, -1, -1)
        torch.testing.assert_close(
            net.towers["depth"]({"depth": b["depth"]}).pooled, image.encode(gray).pooled
        )
        torch.testing.assert_close(net.towers["image"](b).pooled, image(b).pooled)
        torch.testing.assert_close(net.towers["text"](b).pooled, earlier.towers["text"](b).pooled)
        first = net.towers["audio"].stages[0].down[0]
        spec = torch.randn(2, 1, 8, 12)
        torch.testing.assert_close(
            F.conv2d(spec, first.merged_weight(), stride=2, padding=1),
            image.stages[0].down[0](spec.expand(-1, 3, -1, -1)),
            rtol=1e-5,
            atol=1e-5,
        )


def test_image_anchor_is_imagebind():
    net, b = module(frozen=("text",), anchor="image"), batch()
    assert net.bound == ("depth", "audio")
    assert not any(p.requires_grad for m in ("image", "text") for p in net.towers[m].parameters())
    with torch.no_grad():
        terms = net.losses(b, net.encode(b))
        z = {m: F.normalize(net.towers[m](b).pooled, dim=-1) for m in ("image", "depth")}
    torch.testing.assert_close(
        terms["depth"], clip_loss(z["depth"], z["image"], net.scale, ids=b["item_id"])
    )


def test_config_and_checkpoint_round_trip():
    with pytest.raises(ValueError, match="method.anchor 'video' is not among"):
        module(anchor="video")
    with pytest.raises(ValueError, match="method.lora_rank must be >= 0"):
        module(lora_rank=-1)
    net, b = module(), batch()
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": dict(net.hparams), "state_dict": net.state_dict()}, buffer)
    buffer.seek(0)
    loaded = module_from_checkpoint(torch.load(buffer, weights_only=True))
    net.eval()
    with torch.no_grad():
        for m in ALL:
            torch.testing.assert_close(loaded.towers[m](b).pooled, net.towers[m](b).pooled)


def test_modality_zero_shot_scores_each_modality_against_the_prompts():
    """Keys ``zero_shot/<modality>/<task>/accuracy``; each the accuracy of argmax over the
    prompt embeddings of that modality's embeddings, computed here by hand."""
    net = module().eval()
    data = SimpleNamespace(zero_shot_tasks={"color": ["a red circle", "a blue square"]})
    evaluator = ModalityZeroShot(net, data, {"modalities": ["depth", "audio"]})
    prompts = net.encode_texts(["a red circle", "a blue square"])
    g = torch.Generator().manual_seed(0)
    emb = {m: F.normalize(torch.randn(6, 16, generator=g), dim=-1) for m in ("depth", "audio")}
    labels = torch.tensor([0, 1, 0, 1, 1, -1])
    evaluator.update({"embeddings": emb, "labels": {"color": labels}, "index": torch.arange(6)}, {})
    got = evaluator.compute()
    assert set(got) == {"zero_shot/depth/color/accuracy", "zero_shot/audio/color/accuracy"}
    for m in ("depth", "audio"):
        hits = ((emb[m] @ prompts.T).argmax(1) == labels)[:5].float().mean() * 100
        torch.testing.assert_close(got[f"zero_shot/{m}/color/accuracy"].float(), hits)
    with pytest.raises(ValueError, match=r"modality_zero_shot.modalities: \['video'\] not among"):
        ModalityZeroShot(net, data, {"modalities": ["video"]})
