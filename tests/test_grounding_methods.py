"""G2L (modules/g2l.py) and CRA (modules/cra.py) on tiny clips: moment features, the positive
moment, the plain-contrast switch, the predictions the evaluator reads, the Gaussian grounding,
CMA's negatives and the configuration checks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from modules.cra import CRA
from modules.g2l import G2L
from modules.losses.contrastive import clip_loss
from modules.losses.grounding import proposals
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import OPTIM

T = 6
VOCAB = [
    "<pad>",
    "<unk>",
    "<cls>",
    "the",
    "red",
    "circle",
    "moves",
    "left",
    "what",
    "does",
    "do",
    "appears",
    "right",
]
MODEL = {
    "embed_dim": 16,
    "video": {
        "name": "frames",
        "frame": {"name": "cnn", "channels": [4, 8]},
        "width": 16,
        "depth": 1,
        "heads": 2,
    },
    "text": {"name": "transformer", "width": 16, "depth": 1, "heads": 2},
    "temperature": 0.1,
    "learnable_temperature": False,
    "max_logit_scale": 100.0,
}


def build(cls: type, labels: dict[str, int] | None = None, **method: Any) -> Any:
    torch.manual_seed(0)
    return cls(
        method={"name": cls.__name__.lower(), **method},
        model=MODEL,
        optim=OPTIM,
        tokenizer=WordTokenizer(VOCAB, max_len=8).state(),
        context={
            "modalities": ["video", "text"],
            "labels": labels or {},
            "image_size": 16,
            "in_channels": 3,
            "num_frames": T,
            "max_text_len": 8,
        },
    )


def batch(size: int = 4, qa: bool = False) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    tok = WordTokenizer(VOCAB, max_len=8)
    ids, mask = tok.encode(["the red circle moves left"] * size)
    out = {
        "video": torch.randn(size, T, 3, 16, 16, generator=g),
        "text_ids": ids,
        "text_mask": mask,
        "target/start": torch.tensor([0.0, 1 / 6, 0.5, 2 / 6])[:size],
        "target/end": torch.tensor([0.5, 0.5, 1.0, 4 / 6])[:size],
        "index": torch.arange(size),
        "item_id": torch.arange(size),
    }
    if qa:
        k_ids, k_mask = tok.encode(
            ["what does the circle do moves left", "appears", "right"] * size
        )
        out["text_ids_k"], out["text_mask_k"] = k_ids.view(size, 3, -1), k_mask.view(size, 3, -1)
        out["label/answer"] = torch.tensor([0, 1, 2, 0])[:size]
    return out


def test_moment_features_pool_their_frames():
    g2l = build(G2L)
    frames = torch.randn(2, T, 16)
    got = g2l.moments(frames)
    first, last = proposals(T)
    for p in (0, 7, len(first) - 1):
        i, j = int(first[p]), int(last[p])
        inputs = torch.cat([frames[:, i : j + 1].mean(1), frames[:, i], frames[:, j]], dim=-1)
        assert torch.allclose(got[:, p], g2l.moments.proj(inputs), atol=1e-6)


def test_g2l_terms_plain_contrast_and_predictions():
    plain = build(G2L, geodesic=False)
    data = batch()
    outputs = plain.encode(data)
    terms = plain.losses(data, outputs)
    moments, sentence, _ = plain._features(outputs)
    similarity = plain.scale * torch.einsum("bd,bpd->bp", sentence, moments)
    start, end = plain.moment_bounds()
    # the moments on the frame grid are the positives (IoU 1)
    positive = (
        torch.stack(
            [
                ((start - s).abs() < 1e-6) & ((end - e).abs() < 1e-6)
                for s, e in zip(data["target/start"], data["target/end"], strict=True)
            ]
        )
        .float()
        .argmax(dim=1)
    )
    assert torch.allclose(terms["contrast"], F.cross_entropy(similarity, positive))
    geodesic = build(G2L)
    weighted = geodesic.losses(data, geodesic.encode(data))["contrast"]
    assert torch.isfinite(weighted) and not torch.allclose(weighted, terms["contrast"])
    pred = plain.eval_outputs(data, outputs)
    assert ((pred["grounding/start"] < pred["grounding/end"]) & (pred["grounding/end"] <= 1)).all()
    assert plain.evaluators() == {"grounding": {}}


def test_g2l_needs_every_training_moment_and_checks_its_config():
    g2l = build(G2L)
    data = batch()
    data["target/start"][0] = float("nan")
    with pytest.raises(ValueError, match="needs its moment"):
        g2l.losses(data, g2l.encode(data))
    with pytest.raises(ValueError, match="knn"):
        build(G2L, knn=0)
    with pytest.raises(ValueError, match="iou_min"):
        build(G2L, iou_min=0.9, iou_max=0.5)


def test_cra_terms_and_predictions():
    cra = build(CRA, labels={"answer": 3})
    data = batch(qa=True)
    outputs = cra.encode(data)
    assert outputs["qa"].pooled.shape == (4, 3, 16)
    terms = cra.losses(data, outputs)
    out = cra._forward(outputs)
    true_text = out["candidates"][torch.arange(4), data["label/answer"]]
    video = F.normalize(cra.align(out["grounded"]), dim=-1)
    # CMA: each QA text's positive is its own grounded segment, every other sample a negative
    logits = true_text @ video.T / 0.07
    manual = 0.5 * (
        F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))
    )
    assert torch.allclose(terms["cma"], manual, atol=1e-5)
    assert torch.allclose(terms["cma"], clip_loss(true_text, video, 1 / 0.07))
    assert torch.allclose(terms["qa"], F.cross_entropy(out["logits"], data["label/answer"]))
    pred = cra.eval_outputs(data, outputs)
    assert pred["qa/logits"].shape == (4, 3)
    assert (
        (0 <= pred["grounding/start"]) & (pred["grounding/start"] <= pred["grounding/end"])
    ).all()
    assert (pred["grounding/end"] <= 1).all()


def test_cra_grounded_feature_is_a_unit_mass_window_of_the_frames():
    cra = build(CRA, labels={"answer": 3})
    frames = torch.ones(2, T, 16) * torch.arange(16.0)  # every frame the same: the mean is it
    centre, width, grounded = cra.grounding(torch.randn(2, 16), frames)
    assert torch.allclose(grounded, frames[:, 0], atol=1e-5)
    assert ((0 < centre) & (centre < 1) & (0 < width) & (width < 1)).all()


def test_cra_needs_questions_and_checks_its_config():
    with pytest.raises(ValueError, match="data.task: qa"):
        build(CRA)
    with pytest.raises(ValueError, match="cma_temperature"):
        build(CRA, labels={"answer": 3}, cma_temperature=0.0)
