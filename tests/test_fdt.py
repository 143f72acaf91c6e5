"""FDT: sparsemax against a slow simplex-projection reference and its limits and gradient; the FDT
embedding in the codebook's convex hull, equal across modalities for equal tokens, blind to
padding; the module's loss and metrics read the FDT embedding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.fdt import FDT, token_weights
from modules.losses.contrastive import clip_loss
from modules.losses.sparsemax import sparsemax
from modules.towers.output import TowerOutput
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import tiny_module

VOCAB = WordTokenizer.build(["a red circle", "a blue square left of it"]).vocab


def slow_sparsemax(z: list[float]) -> list[float]:
    """Projection onto the simplex by trying every support size k (largest k with a positive
    k-th coordinate after thresholding), written without sorting tricks or cumsums."""
    ordered = sorted(z, reverse=True)
    best = None
    for k in range(1, len(z) + 1):
        tau = (sum(ordered[:k]) - 1) / k
        if ordered[k - 1] - tau > 0:
            best = tau
    return [max(v - best, 0.0) for v in z]


def test_sparsemax_matches_slow_reference_on_random_rows_and_any_dim():
    g = torch.Generator().manual_seed(0)
    z = (
        torch.randn(7, 9, generator=g, dtype=torch.float64)
        * torch.tensor([0.1, 1, 3, 10, 0.5, 2, 5])[:, None]
    )
    want = torch.tensor([slow_sparsemax(row.tolist()) for row in z], dtype=torch.float64)
    torch.testing.assert_close(sparsemax(z), want)
    torch.testing.assert_close(sparsemax(z.T.contiguous(), dim=0), want.T)
    torch.testing.assert_close(
        sparsemax(z.reshape(7, 3, 3), dim=-1), sparsemax(z.reshape(21, 3)).reshape(7, 3, 3)
    )


def test_sparsemax_is_a_distribution_exactly_sparse_for_large_gaps_and_shift_invariant():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 50, generator=g, dtype=torch.float64) * 3
    p = sparsemax(z)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(dim=1), torch.ones(5, dtype=torch.float64))
    assert (p == 0).any(dim=1).all()  # spread-out scores: some weights exactly 0
    gap = torch.tensor([[0.0, 5.0, 1.0, -2.0]], dtype=torch.float64)
    assert sparsemax(gap).tolist() == [[0.0, 1.0, 0.0, 0.0]]  # gap > 1: one-hot, exact
    two = sparsemax(torch.tensor([[3.0, 2.8, -1.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(two, torch.tensor([[0.6, 0.4, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(sparsemax(z + 123.0), p)
    flat = sparsemax(torch.zeros(2, 4, dtype=torch.float64))
    torch.testing.assert_close(flat, torch.full((2, 4), 0.25, dtype=torch.float64))
    torch.testing.assert_close(  # softmax would never give exact zeros; sparsemax does
        sparsemax(torch.tensor([[0.0, -torch.inf, 1.0]])), torch.tensor([[0.0, 0.0, 1.0]])
    )


def test_sparsemax_gradient_is_the_support_projection():
    g = torch.Generator().manual_seed(2)
    z = (torch.randn(4, 8, generator=g, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(sparsemax, (z,))
    upstream = torch.randn(4, 8, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(sparsemax(z), z, upstream)
    support = sparsemax(z).detach() > 0
    mean = (upstream * support).sum(1, keepdim=True) / support.sum(1, keepdim=True)
    torch.testing.assert_close(grad, torch.where(support, upstream - mean, 0.0))


def test_token_weights_max_pool_then_sparsemax_against_a_loop():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    c = torch.randn(6, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    got = token_weights(q, c, mask, temperature=0.5)
    for b in range(2):
        real = [n for n in range(5) if mask[b, n]]
        pooled = [
            max(float(q[b, n] @ c[k]) / 2.0 / 0.5 for n in real) for k in range(6)
        ]  # sqrt(d) = 2
        torch.testing.assert_close(
            got[b], torch.tensor(slow_sparsemax(pooled), dtype=torch.float64)
        )


def module(**method) -> FDT:
    torch.manual_seed(0)
    return tiny_module(VOCAB, FDT, {"name": "fdt", "num_tokens": 32, **method}).double()


def tokens(batch: int = 3, length: int = 5, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, 16, generator=g, dtype=torch.float64)


def test_embedding_lies_in_the_convex_hull_of_the_codebook():
    fdt = module(token_temperature=0.05)  # sharp scores: sparse mixtures
    x = tokens()
    w = fdt.weights("image", TowerOutput(x.mean(1), x))
    assert (w >= 0).all() and (w == 0).any()
    torch.testing.assert_close(w.sum(1), torch.ones(3, dtype=torch.float64))
    e = fdt.embedding("image", TowerOutput(x.mean(1), x))
    torch.testing.assert_close(e, w @ fdt.codebook)
    # in the hull, every linear functional of e is at most its maximum over the codebook
    directions = torch.randn(10, 16, dtype=torch.float64)
    assert ((e @ directions.T) <= (fdt.codebook @ directions.T).amax(0) + 1e-12).all()
    # what <split>/fdt/active_tokens/<side> logs: mean count of non-zero weights per sample
    assert fdt._active_tokens["image"].item() == (w > 0).sum(1).double().mean().item() < 32


def test_identical_tokens_give_identical_embeddings_across_modalities():
    fdt = module(token_temperature=1.0)
    fdt.queries["text"].load_state_dict(fdt.queries["image"].state_dict())
    x = tokens()
    image = fdt.embedding("image", TowerOutput(x.mean(1), x, None))
    text = fdt.embedding("text", TowerOutput(x[:, 0], x, torch.ones(3, 5, dtype=torch.bool)))
    torch.testing.assert_close(image, text)
    fresh = module(token_temperature=1.0)  # different phi per modality by default
    assert not torch.allclose(
        fresh.embedding("image", TowerOutput(x.mean(1), x)),
        fresh.embedding("text", TowerOutput(x.mean(1), x)),
    )


def test_padding_tokens_do_not_change_the_embedding():
    fdt = module(token_temperature=0.1)
    x = tokens(length=4)
    alone = fdt.embedding("text", TowerOutput(x[:, 0], x, torch.ones(3, 4, dtype=torch.bool)))
    # huge pad tokens would dominate the max-pool (and pads scored 0, as in the official code,
    # could win it too); masked with -inf they change nothing
    pads = 50 * tokens(length=3, seed=5)
    padded = torch.cat([x, pads], dim=1)
    mask = torch.cat([torch.ones(3, 4), torch.zeros(3, 3)], dim=1).bool()
    with_pads = fdt.embedding("text", TowerOutput(x[:, 0], padded, mask))
    torch.testing.assert_close(with_pads, alone)
    unmasked = fdt.embedding("text", TowerOutput(x[:, 0], padded, torch.ones_like(mask)))
    assert not torch.allclose(unmasked, alone)


def test_loss_and_eval_read_the_fdt_embedding_and_train_codebook_and_queries():
    fdt = module()
    tok = WordTokenizer(VOCAB, max_len=8)
    ids, mask = tok.encode(["a red circle", "a blue square", "left of it"])
    batch = {
        "image": torch.randn(3, 3, 16, 16, dtype=torch.float64),
        "text_ids": ids,
        "text_mask": mask,
        "index": torch.arange(3),
        "item_id": torch.arange(3),
    }
    outputs = fdt.encode(batch)
    a, b = (F.normalize(fdt.embedding(s, outputs[s]), dim=-1) for s in ("image", "text"))
    loss = fdt.losses(batch, outputs)["clip"]
    torch.testing.assert_close(loss, clip_loss(a, b, fdt.scale, ids=batch["item_id"]))
    loss.backward()
    assert fdt.codebook.grad is not None and fdt.codebook.grad.abs().sum() > 0
    assert all(p.grad is not None for p in fdt.queries.parameters())
    seen = fdt.eval()._eval_step(batch, "val")  # what every metric reads
    torch.testing.assert_close(seen["embeddings"]["image"], a.detach())
    torch.testing.assert_close(seen["embeddings"]["text"], b.detach())
    torch.testing.assert_close(fdt.encode_texts(["a red circle", "a blue square"]), b[:2].detach())
    with pytest.raises(ValueError, match="num_tokens"):
        module(num_tokens=1)


def test_official_scale_clamp_keeps_the_logit_scale_in_e3_to_max():
    default, official = module(), module(official_scale_clamp=True)
    assert default.temperature.log_scale.item() == pytest.approx(math.log(1 / 0.07))
    # log(1/0.07) = 2.66 starts below the official lower clamp 3
    assert official.temperature.log_scale.item() == pytest.approx(3.0)
    with torch.no_grad():
        official.temperature.log_scale.fill_(10.0)
    official.temperature.clamp_()
    assert official.temperature.log_scale.item() == pytest.approx(math.log(100.0))
