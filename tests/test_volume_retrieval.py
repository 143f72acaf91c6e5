"""Volume retrieval (callbacks/volume_retrieval.py): R@K and ranks by -V against a brute force
over (anchor, tuple) pairs with a Gram-Schmidt volume, multi-caption items and DDP duplicates;
pessimistic ties; blocks that bound the Gram matrices; the evaluator's options and keys."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import callbacks.volume_retrieval as volume_retrieval
from callbacks.evaluators import EVALUATORS, chosen_evaluators
from callbacks.volume_retrieval import VolumeRetrieval, VolumeRetrievalMetrics

F64 = torch.float64


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=F64), dim=-1)


def slow_volume(vectors: list[torch.Tensor]) -> float:
    """Volume of the parallelotope of ``vectors``: the product of Gram-Schmidt residual norms."""
    basis, volume = [], 1.0
    for v in vectors:
        residual = v.clone()
        for e in basis:
            residual = residual - (residual @ e) * e
        norm = float(residual.norm())
        volume *= norm
        basis.append(residual / norm)
    return volume


def brute_force(anchors, tuples, anchor_item, ks=(1, 5, 10)) -> dict[str, float]:
    """Ranks by -V one (anchor, tuple) pair at a time: anchor -> tuple (its item's tuple among
    all), tuple -> anchor (its best anchor among all); pessimistic ties."""
    score = [[-slow_volume([a, *t]) for t in tuples] for a in anchors]
    forward = []
    for i, row in enumerate(score):
        own = row[anchor_item[i]]
        forward.append(1 + sum(s >= own for j, s in enumerate(row) if j != anchor_item[i]))
    backward = []
    for j in range(len(tuples)):
        mine = [i for i in range(len(anchors)) if anchor_item[i] == j]
        best = max(score[i][j] for i in mine)
        backward.append(
            1 + sum(score[i][j] >= best for i in range(len(anchors)) if anchor_item[i] != j)
        )
    out = {}
    for name, ranks in (("text_to_tuple", forward), ("tuple_to_text", backward)):
        r = torch.tensor(ranks, dtype=F64)
        out |= {f"{name}/R{k}": 100.0 * float((r <= k).double().mean()) for k in ks}
        out[f"{name}/median_rank"] = float(r.median()) if len(r) % 2 else float(r.quantile(0.5))
        out[f"{name}/mean_rank"] = float(r.mean())
    return out


def dataset(items: int = 13, k: int = 3, dim: int = 4, seed: int = 0):
    """Items with 1-3 captions each; the tuple is noise around each item's first caption so
    retrieval is neither perfect nor chance. Returns (anchors [Nc, D], tuples [Ni, k-1, D],
    caption -> item)."""
    g = torch.Generator().manual_seed(seed)
    per_item = torch.randint(1, 4, (items,), generator=g)
    anchor_item = torch.repeat_interleave(torch.arange(items), per_item)
    anchors = unit(len(anchor_item), dim, seed=seed + 1)
    first = anchors[torch.searchsorted(anchor_item, torch.arange(items))]
    noise = 0.8 * torch.randn(items, k - 1, dim, generator=g, dtype=F64)
    tuples = F.normalize(first[:, None] + noise, dim=-1)
    return anchors, tuples, anchor_item


def feed(metric: VolumeRetrievalMetrics, anchors, tuples, anchor_item, batch: int = 5, seed=0):
    """One row per caption (its item's tuple repeated), shuffled, a few rows twice (DDP
    padding), in batches; ``index`` = caption, ``item_id`` = item + 100."""
    rows = torch.randperm(len(anchors), generator=torch.Generator().manual_seed(seed))
    rows = torch.cat([rows, rows[:3]])
    for part in rows.split(batch):
        metric.update(anchors[part], tuples[anchor_item[part]], anchor_item[part] + 100, part)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_ranks_match_brute_force_with_multi_caption_items_and_duplicates(k):
    anchors, tuples, anchor_item = dataset(k=k, seed=k)
    metric = VolumeRetrievalMetrics(anchor="text")
    feed(metric, anchors, tuples, anchor_item)
    got = {key: float(v) for key, v in metric.compute().items()}
    want = brute_force(anchors, tuples, anchor_item.tolist())
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-4), key
    assert 0 < got["text_to_tuple/R1"] < 100  # neither perfect nor collapsed: a real check


def test_collapsed_embeddings_rank_last_pessimistic_ties():
    items, dim = 6, 4
    same = unit(1, dim).expand(items, dim)
    metric = VolumeRetrievalMetrics(anchor="text")
    metric.update(
        same, same[:, None].expand(items, 2, dim), torch.arange(items), torch.arange(items)
    )
    out = metric.compute()
    for key in ("text_to_tuple/R1", "tuple_to_text/R1"):
        assert float(out[key]) == 0.0
    assert float(out["text_to_tuple/mean_rank"]) == items
    assert float(out["tuple_to_text/mean_rank"]) == items


def test_a_tuple_equal_to_its_anchor_has_volume_zero_and_ranks_first():
    items, dim = 8, 6
    anchors = unit(items, dim, seed=3)
    # (a_i, b_i) contains a_i: V(a_i, tuple_i) = 0, and V(a_i, tuple_j) > 0 for j != i
    others = torch.stack([anchors, unit(items, dim, seed=4)], dim=1)
    metric = VolumeRetrievalMetrics(anchor="text")
    metric.update(anchors, others, torch.arange(items), torch.arange(items))
    out = metric.compute()
    assert float(out["text_to_tuple/R1"]) == 100.0
    assert float(out["tuple_to_text/R1"]) == 100.0


def test_blocks_bound_the_gram_matrices_and_do_not_change_the_ranks(monkeypatch):
    anchors, tuples, anchor_item = dataset(items=40, seed=5)
    whole = VolumeRetrievalMetrics(anchor="text")
    feed(whole, anchors, tuples, anchor_item)
    want = whole.compute()

    sizes = []
    real = volume_retrieval.gram_volume

    def recording(anchor, others, eps=0.0):
        sizes.append(anchor.shape[0] * others[0].shape[0] * (len(others) + 1) ** 2)
        return real(anchor, others, eps)

    monkeypatch.setattr(volume_retrieval, "gram_volume", recording)
    limit = 2000
    blocked = VolumeRetrievalMetrics(anchor="text", block_elements=limit)
    feed(blocked, anchors, tuples, anchor_item)
    got = blocked.compute()
    assert len(sizes) > 2 and max(sizes) <= limit
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_a_thousand_items_stay_within_the_default_block():
    n, dim = 1000, 16
    anchors = unit(n, dim, seed=1).float()
    others = F.normalize(anchors[:, None] + 0.3 * unit(n, 2, dim, seed=2).float(), dim=-1)
    metric = VolumeRetrievalMetrics(anchor="text")
    metric.update(anchors, others, torch.arange(n), torch.arange(n))
    rows = metric._rows_per_block(n, 3)
    assert rows * n * 9 <= metric.block_elements and rows < n  # several blocks
    out = metric.compute()
    assert float(out["text_to_tuple/R1"]) > 50.0


def test_update_rejects_a_tuple_of_the_wrong_shape():
    metric = VolumeRetrievalMetrics()
    with pytest.raises(ValueError, match="B, k-1, D"):
        metric.update(unit(4, 3), unit(4, 3), torch.arange(4), torch.arange(4))


def fake_module(modalities=("image", "audio", "text")):
    return SimpleNamespace(modalities=modalities, device=torch.device("cpu"))


def eval_out(embeddings: dict[str, torch.Tensor], item_id, index) -> dict:
    return {"embeddings": embeddings, "item_id": item_id, "index": index}


def test_evaluator_scores_the_last_encoder_against_the_others_by_default():
    assert EVALUATORS["volume_retrieval"] is VolumeRetrieval
    items, dim = 9, 5
    emb = {m: unit(items, dim, seed=i) for i, m in enumerate(("image", "audio", "text"))}
    evaluator = VolumeRetrieval(fake_module(), None, {})
    assert evaluator.anchor == "text" and evaluator.others == ("image", "audio")
    ids = torch.arange(items)
    evaluator.update(eval_out(emb, ids, ids), {})
    out = evaluator.compute()
    want = brute_force(emb["text"], torch.stack([emb["image"], emb["audio"]], 1), ids.tolist())
    for key, value in want.items():
        assert float(out[f"volume_retrieval/{key}"]) == pytest.approx(value, abs=1e-4)
    mean = (want["text_to_tuple/R1"] + want["tuple_to_text/R1"]) / 2
    assert float(out["volume_retrieval/mean_R1"]) == pytest.approx(mean)


def test_evaluator_options_anchor_modalities_and_ks():
    items, dim = 7, 4
    emb = {m: unit(items, dim, seed=i) for i, m in enumerate(("image", "audio", "text"))}
    evaluator = VolumeRetrieval(
        fake_module(), None, {"anchor": "image", "modalities": ["text"], "ks": [1, 2]}
    )
    ids = torch.arange(items)
    evaluator.update(eval_out(emb, ids, ids), {})
    out = evaluator.compute()
    assert "volume_retrieval/image_to_tuple/R2" in out
    assert "volume_retrieval/tuple_to_image/R1" in out
    assert "volume_retrieval/image_to_tuple/R5" not in out
    assert VolumeRetrieval(fake_module(), None, {}).compute() == {}  # nothing seen


@pytest.mark.parametrize(
    "options",
    [{"anchor": "depth"}, {"modalities": ["text"]}, {"anchor": "text", "modalities": ["video"]}],
)
def test_evaluator_rejects_unknown_or_overlapping_modalities(options):
    with pytest.raises(ValueError, match="volume_retrieval"):
        VolumeRetrieval(fake_module(), None, options)


def test_it_is_not_a_default_evaluation_only_requested():
    module = SimpleNamespace(
        modalities=("image", "audio", "text"),
        towers={"image": None, "audio": None, "text": None},
        evaluators=lambda: {},
    )
    data = SimpleNamespace(pairs=(("image", "audio"),))
    assert "volume_retrieval" not in chosen_evaluators(module, data)
    module.evaluators = lambda: {"volume_retrieval": {"anchor": "text"}}
    assert chosen_evaluators(module, data)["volume_retrieval"] == {"anchor": "text"}
