"""Core-tuning (methods/part2.md Sec. 62): the focal SupCon against a slow reference and the
spec's hand computation (paper and code averages differ by |P(i)| = 1 vs 4 on a 4-sample
batch), the focal weight silencing matched pairs, the hard-pair mining against brute force
(including the case where the code's argmin picks a non-positive), the negative mix never
below 0.8, draws that do not depend on how the batch is split, and the module: CE-tuning is
plain cross-entropy, the head's logits reach the classifier evaluator, bad configs fail."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.core_tuning import CoreTuning
from modules.losses.core_tuning import (
    NEGATIVE_LAMBDA_MIN,
    MixingDraws,
    hard_pair_mixtures,
    hardest_pairs,
    mixing_draws,
    soft_cross_entropy,
    soft_label_ids,
)
from modules.losses.supcon import supcon_loss
from tests.tiny_modules import MODEL, OPTIM

F64 = torch.float64


def unit(rows: int, dim: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=F64), dim=-1)


def slow_focal_supcon(z, ids, tau, average):
    """One anchor at a time: -(1/N_used) sum_i (1/n_i) sum_{p in P(i)} (1 - p_ip) log p_ip,
    n_i = |P(i)| (paper) or the number of rows (code's mean over columns)."""
    n = len(z)
    terms = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        log_norm = torch.logsumexp(torch.stack([z[i] @ z[j] / tau for j in others]), dim=0)
        positives = [j for j in others if ids[j] == ids[i]]
        if not positives:
            continue
        logp = [z[i] @ z[p] / tau - log_norm for p in positives]
        total = sum((1 - lp.exp()) * lp for lp in logp)
        terms.append(-total / (len(positives) if average == "positives" else n))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("average", ["positives", "columns"])
def test_focal_supcon_equals_the_slow_reference(average):
    z, ids = unit(7, seed=1), torch.tensor([0, 1, 0, 2, 1, 0, 3])
    got = supcon_loss([z], ids, 0.3, focal=True, average=average)
    torch.testing.assert_close(got, slow_focal_supcon(z, ids, 0.3, average), rtol=0, atol=1e-12)


def test_the_spec_hand_computation_paper_and_code_differ_by_four():
    """Labels (0, 0, 1, 1): each anchor has one positive, so the code's 1/4 is a quarter of
    the paper's 1/|P(i)| = 1."""
    z, ids, tau = unit(4, seed=2), torch.tensor([0, 0, 1, 1]), 0.07
    expected = 0.0
    for i, p in ((0, 1), (1, 0), (2, 3), (3, 2)):
        logits = torch.stack([z[i] @ z[j] / tau for j in range(4) if j != i])
        logp = z[i] @ z[p] / tau - torch.logsumexp(logits, dim=0)
        expected += -(1 - logp.exp()) * logp / 4
    paper = supcon_loss([z], ids, tau, focal=True, average="positives")
    code = supcon_loss([z], ids, tau, focal=True, average="columns")
    torch.testing.assert_close(paper, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(paper, 4 * code, rtol=0, atol=1e-12)


def test_a_pair_the_model_already_matches_contributes_nothing():
    """Rows 0 and 1 are each other's only positive with p = e^{1/t} / (e^{1/t} + e^{-1/t}):
    the focal loss is (1 - p) times SupCon's, and (1 - p) -> 0 as the pair is matched."""
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    ids = torch.tensor([0, 0, 1])
    ratios = []
    for tau in (1.0, 0.5, 0.25):
        p = math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(-1 / tau))
        focal = supcon_loss([a], ids, tau, focal=True)
        plain = supcon_loss([a], ids, tau)
        torch.testing.assert_close(focal, (1 - p) * plain, rtol=1e-12, atol=0)
        ratios.append((focal / plain).item())
    assert ratios[0] > ratios[1] > ratios[2] > 0 and ratios[2] < 4e-4


def test_focal_supcon_gradients_are_finite_with_masked_columns():
    z = unit(6, seed=3).requires_grad_(True)
    supcon_loss([z], torch.tensor([0, 0, 1, 1, 2, 3]), 0.1, focal=True).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_unknown_average_is_refused():
    with pytest.raises(ValueError, match="average"):
        supcon_loss([unit(4)], torch.arange(4), 0.1, average="rows")


def brute_hardest(features, labels, positions):
    unit_f = F.normalize(features, dim=-1)
    hard_positive, hard_negative = [], []
    for i in positions.tolist():
        sims = {j: float(unit_f[i] @ unit_f[j]) for j in range(len(features))}
        same = [j for j in sims if labels[j] == labels[i] and j != i]
        other = [j for j in sims if labels[j] != labels[i]]
        hard_positive.append(min(same, key=sims.get) if same else i)
        hard_negative.append(max(other, key=sims.get) if other else i)
    return torch.tensor(hard_positive), torch.tensor(hard_negative)


def test_hardest_pairs_match_brute_force_even_when_every_positive_is_similar():
    """Rows 0-2 share class 0 and all have cosine > 0 with each other: the code's argmin of
    ``sim * positive_mask`` would return a zero entry (a non-positive); ours returns the least
    similar same-class row. Row 5 is alone in its class: its own row."""
    features = torch.tensor(
        [[1.0, 0.1, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.3], [0, 1, 0], [0, 0.9, 0.2], [0, 0, 1]],
        dtype=F64,
    )
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    positions = torch.arange(6)
    got = hardest_pairs(features, labels, positions)
    want = brute_hardest(features, labels, positions)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert got[0][5] == 5
    one_class = hardest_pairs(features[:3], torch.zeros(3, dtype=torch.long), torch.arange(3))
    assert torch.equal(one_class[1], torch.arange(3))  # no negative: the row itself


def test_negative_mix_is_never_below_the_clamp_and_draws_ignore_the_split():
    index = torch.arange(100, 356)
    draws = mixing_draws(index, torch.arange(256), 256, step=7, alpha=1.0, salt=1)
    assert draws.negative_lambda.min() >= NEGATIVE_LAMBDA_MIN
    assert (draws.negative_lambda > NEGATIVE_LAMBDA_MIN).any()  # not all clamped
    assert (draws.negative_lambda == NEGATIVE_LAMBDA_MIN).float().mean() > 0.6  # Beta(1,1)
    assert not torch.equal(draws.partner, torch.arange(256))  # never the row itself
    assert (draws.partner != torch.arange(256)).all()
    second_half = mixing_draws(index[128:], torch.arange(128, 256), 256, 7, 1.0, 1)
    assert torch.equal(second_half.partner, draws.partner[128:])
    assert torch.equal(second_half.positive_lambda, draws.positive_lambda[128:])
    other_step = mixing_draws(index, torch.arange(256), 256, step=8, alpha=1.0, salt=1)
    assert not torch.equal(other_step.positive_lambda, draws.positive_lambda)


def test_mixtures_follow_the_draws_and_mix_labels_alike():
    features = unit(6, seed=4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    soft = F.one_hot(labels, 3).to(F64)
    positions = torch.tensor([1, 4])
    draws = MixingDraws(torch.tensor([3, 0]), torch.tensor([0.8, 0.9]), torch.tensor([0.25, 0.7]))
    rows, mixed = hard_pair_mixtures(features, soft, labels, positions, draws)
    hp, hn = brute_hardest(features, labels, positions)
    torch.testing.assert_close(rows[0], 0.2 * features[1] + 0.8 * features[3])
    torch.testing.assert_close(rows[1], 0.1 * features[4] + 0.9 * features[0])
    torch.testing.assert_close(rows[2], 0.25 * features[hp[0]] + 0.75 * features[hn[0]])
    torch.testing.assert_close(rows[3], 0.7 * features[hp[1]] + 0.3 * features[hn[1]])
    torch.testing.assert_close(mixed[0], torch.tensor([0.2, 0.8, 0.0], dtype=F64))
    torch.testing.assert_close(mixed[1], 0.1 * soft[4] + 0.9 * soft[0])
    torch.testing.assert_close(mixed[2], 0.25 * soft[hp[0]] + 0.75 * soft[hn[0]])
    torch.testing.assert_close(mixed[3], 0.7 * soft[hp[1]] + 0.3 * soft[hn[1]])


def test_soft_label_ids_and_soft_cross_entropy():
    soft = torch.tensor([[1.0, 0.0], [0.2, 0.8], [1.0, 0.0], [0.2, 0.8 + 1e-9], [0.5, 0.5]])
    ids = soft_label_ids(soft)
    assert ids[0] == ids[2] and ids[1] == ids[3] and len(set(ids.tolist())) == 3
    logits = torch.randn(5, 2, dtype=F64)
    by_hand = -sum(
        (soft[i].double() * torch.log(torch.softmax(logits[i], dim=0))).sum() for i in range(5)
    )
    torch.testing.assert_close(soft_cross_entropy(logits, soft.double()), by_hand / 5)
    hard = torch.tensor([0, 1, 0, 1, 0])
    one_hot = F.one_hot(hard, 2).to(F64)
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot), F.cross_entropy(logits, hard))


def module(**method) -> CoreTuning:
    torch.manual_seed(0)
    return CoreTuning(
        method={"name": "core_tuning", "task": "shape", **method},
        model={**MODEL, "learnable_temperature": False},
        optim=OPTIM,
        tokenizer=None,
        context={
            "modalities": ["image"],
            "views": {"image": 1},
            "labels": {"shape": 3},
            "image_size": 16,
            "in_channels": 3,
        },
    )


def views_batch(size: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image@0": torch.randn(size, 3, 16, 16, generator=g),
        "image": torch.randn(size, 3, 16, 16, generator=g),
        "label/shape": torch.tensor([0, 1, 2, 0, 1, 2][:size]),
        "index": torch.arange(size),
    }


def test_ce_tuning_is_plain_cross_entropy_on_the_features():
    m = module(hard_pair_mining=False, loss_weights={"ce": 1.0, "focal_supcon": 0.0})
    batch = views_batch()
    outputs = m.encode(batch)
    terms = m.losses(batch, outputs)
    features = m.embedding("image", outputs["image@0"])
    expected = F.cross_entropy(m.classifier(features), batch["label/shape"])
    torch.testing.assert_close(terms["ce"], expected)


def test_module_losses_equal_a_recomputation_of_the_rows_and_terms():
    """Both terms on [f; f'; f''] (3B rows): the CE by hand, the focal SupCon by the slow loop
    on the contrastor's rows with identical soft labels as positives, scaled by tau / 0.07."""
    m = module(temperature=0.1)
    batch = views_batch()
    outputs = m.encode(batch)
    terms = m.losses(batch, outputs)
    f = m.embedding("image", outputs["image@0"])
    labels = batch["label/shape"]
    one_hot = F.one_hot(labels, 3).to(f.dtype)
    draws = mixing_draws(batch["index"], torch.arange(6), 6, m.global_step, 1.0, salt=62)
    hp, hn = brute_hardest(f.detach(), labels, torch.arange(6))
    neg_l, pos_l = draws.negative_lambda[:, None], draws.positive_lambda[:, None]
    rows = torch.cat(
        [f, (1 - neg_l) * f + neg_l * f[draws.partner], pos_l * f[hp] + (1 - pos_l) * f[hn]]
    )
    soft = torch.cat(
        [
            one_hot,
            (1 - neg_l) * one_hot + neg_l * one_hot[draws.partner],
            pos_l * one_hot[hp] + (1 - pos_l) * one_hot[hn],
        ]
    )
    ce = -(torch.log_softmax(m.classifier(rows), dim=1) * soft).sum(1).mean()
    torch.testing.assert_close(terms["ce"], ce)
    ids = [tuple(row) for row in soft.round(decimals=6).tolist()]
    z = m.contrastor(rows).double()
    expected = slow_focal_supcon(z, ids, 0.1, "positives") * 0.1 / 0.07
    torch.testing.assert_close(terms["focal_supcon"].double(), expected, rtol=1e-5, atol=1e-6)


def test_mining_adds_two_mixtures_per_sample_and_both_terms_train_the_tower():
    m = module()
    batch = views_batch()
    terms = m.losses(batch, m.encode(batch))
    assert set(terms) == {"ce", "focal_supcon"} and all(math.isfinite(v) for v in terms.values())
    (terms["ce"] + 0.1 * terms["focal_supcon"]).backward()
    grads = [p.grad for p in m.towers.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert m.contrastor[0].weight.grad.abs().sum() > 0


def test_head_logits_reach_the_classifier_evaluator():
    m = module().eval()
    batch = views_batch()
    out = m.eval_outputs(batch, m.encode(batch))
    assert set(out) == {"logits/image/shape"} and out["logits/image/shape"].shape == (6, 3)
    assert m.evaluators() == {"classifier": {}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"task": "colour"}, "method.task"),
        ({"supcon_average": "rows"}, "supcon_average"),
        ({"mixup_alpha": 0.0}, "mixup_alpha"),
        ({"contrast_dim": 0}, "contrast_dim"),
    ],
)
def test_bad_configs_fail_with_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        module(**override)
