"""Metrics against brute-force references, invariances, and a 2-process gloo sync check."""

from __future__ import annotations

import math
import socket
import statistics
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from callbacks.metrics import (
    AlignmentUniformity,
    ChoiceAccuracy,
    ClassRetrieval,
    ModalityGap,
    RetrievalMetrics,
    ZeroShotAccuracy,
    ZeroShotAUROC,
    binary_auroc,
    first_occurrence,
)

CAPTIONS = 5


def make_pairs(num_images: int = 30, dim: int = 16, noise: float = 1.0, seed: int = 0):
    """One row per (image, caption): images repeat once per caption; rows shuffled."""
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(num_images, dim, generator=g, dtype=torch.float64), dim=1)
    item_id = torch.arange(num_images).repeat_interleave(CAPTIONS)
    text = F.normalize(
        images[item_id] + noise * torch.randn(len(item_id), dim, generator=g, dtype=torch.float64),
        dim=1,
    )
    # ids need not be contiguous: spread them out
    item_id = item_id * 7 + 3
    index = torch.randperm(len(item_id), generator=g) * 3 + 11
    order = torch.randperm(len(item_id), generator=g)
    return (
        images.repeat_interleave(CAPTIONS, dim=0)[order],
        text[order],
        item_id[order],
        index[order],
    )


def feed(metric, rows, batch: int = 13):
    for start in range(0, len(rows[0]), batch):
        metric.update(*(r[start : start + batch] for r in rows))
    return metric.compute()


def pad_like_sampler(rows, extra: int = 7):
    """Append copies of the first rows, as a DistributedSampler pads a split."""
    return tuple(torch.cat([r, r[:extra]]) for r in rows)


def reference_retrieval(rows, ks=(1, 5, 10)):
    """Per-query Python loops: sort candidates by score, negatives before positives on ties
    (pessimistic), rank = 1-based position of the first positive."""
    image, text, item_id, index = (r.tolist() for r in rows)
    images, texts = {}, {}
    for img, txt, iid, idx in zip(image, text, item_id, index, strict=True):
        images.setdefault(iid, img)
        texts.setdefault(idx, (txt, iid))

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    def first_positive_rank(candidates):  # candidates: (score, is_positive)
        ordered = sorted(candidates, key=lambda c: (-c[0], c[1]))
        return 1 + next(i for i, c in enumerate(ordered) if c[1])

    i2t = [
        first_positive_rank([(dot(img, txt), owner == iid) for txt, owner in texts.values()])
        for iid, img in images.items()
    ]
    t2i = [
        first_positive_rank([(dot(img, txt), iid == owner) for iid, img in images.items()])
        for txt, owner in texts.values()
    ]
    out = {}
    for name, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
        for k in ks:
            out[f"{name}/R{k}"] = 100.0 * sum(r <= k for r in ranks) / len(ranks)
        out[f"{name}/median_rank"] = statistics.median(ranks)
        out[f"{name}/mean_rank"] = sum(ranks) / len(ranks)
    return out


def assert_dicts_close(got, want, tol=1e-4):
    assert set(got) == set(want)
    for key in want:
        assert float(got[key]) == pytest.approx(float(want[key]), abs=tol), key


@pytest.mark.parametrize("noise", [0.3, 1.0, 3.0])
def test_retrieval_matches_brute_force(noise):
    rows = make_pairs(noise=noise)
    want = reference_retrieval(rows)
    assert_dicts_close(feed(RetrievalMetrics(block_size=7), rows), want)
    # an element budget smaller than one row of scores: one query row per block
    assert_dicts_close(feed(RetrievalMetrics(block_elements=20), rows), want)


def test_retrieval_drops_padded_duplicates_and_ignores_order():
    rows = make_pairs(noise=1.0, seed=1)
    want = reference_retrieval(rows)
    padded = pad_like_sampler(rows)
    reversed_rows = tuple(r.flip(0) for r in padded)
    assert_dicts_close(feed(RetrievalMetrics(), padded, batch=8), want)
    assert_dicts_close(feed(RetrievalMetrics(block_size=5), reversed_rows, batch=64), want)


def test_retrieval_refuses_a_caption_index_shared_by_two_items():
    """Two items under one caption index would leave one of them captionless, ranked last."""
    image, text = torch.eye(3), torch.eye(3)
    item_id, index = torch.tensor([0, 1, 2]), torch.tensor([5, 5, 6])
    with pytest.raises(ValueError, match="caption index 5 belongs to item_id 0 and 1"):
        feed(RetrievalMetrics(), (image, text, item_id, index))


def test_retrieval_reports_optimistic_recall_only_where_ties_change_a_rank():
    # 6 images of 3 classes, one caption each, the caption is the class name: captions of one
    # class are identical, so every image ties with its class mates' captions
    classes = torch.tensor([0, 0, 1, 1, 2, 2])
    text = torch.eye(3)[classes]
    image = F.normalize(text + 0.01 * torch.arange(6.0)[:, None], dim=1)  # no ties of its own
    ids = torch.arange(6)
    got = feed(RetrievalMetrics(ks=(1, 2)), (image, text, ids, ids))
    # pessimistic: the tied caption of the class mate comes first; optimistic: it does not
    assert float(got["image_to_text/R1"]) == 0.0
    assert float(got["image_to_text/R1_optimistic"]) == 100.0
    assert float(got["image_to_text/R2"]) == float(got["image_to_text/R2_optimistic"]) == 100.0
    # caption -> image: the two images of a class score differently, so half the queries win
    # either way (ties among images only in the collapsed case below)
    assert float(got["text_to_image/R1"]) == pytest.approx(50.0)
    assert "text_to_image/R1_optimistic" not in got
    # distinct captions: no tie, no optimistic keys
    plain = feed(RetrievalMetrics(), make_pairs(noise=1.0, seed=3))
    assert not [key for key in plain if key.endswith("_optimistic")]


def test_retrieval_optimistic_ranks_of_collapsed_embeddings_are_one():
    image, _, item_id, index = make_pairs(seed=2)
    same = F.normalize(torch.ones(image.shape[1]), dim=0).expand_as(image).contiguous()
    got = feed(RetrievalMetrics(), (same, same.clone(), item_id, index))
    assert float(got["image_to_text/R1"]) == 0.0 and float(got["text_to_image/R1"]) == 0.0
    assert float(got["image_to_text/R1_optimistic"]) == 100.0
    assert float(got["text_to_image/R1_optimistic"]) == 100.0


def test_retrieval_perfect_and_collapsed_embeddings():
    image, _, item_id, index = make_pairs(seed=2)
    perfect = feed(RetrievalMetrics(), (image, image.clone(), item_id, index))
    for direction in ("image_to_text", "text_to_image"):
        assert float(perfect[f"{direction}/R1"]) == 100.0
        assert float(perfect[f"{direction}/median_rank"]) == 1.0
    # all embeddings equal (float32, not exactly representable): every score ties, and
    # pessimistic ties rank every positive behind every negative, in both directions
    vector = F.normalize(
        torch.randn(image.shape[1], generator=torch.Generator().manual_seed(0)), dim=0
    )
    same = vector.expand_as(image).contiguous()
    collapsed = feed(RetrievalMetrics(), (same, same.clone(), item_id, index))
    num_images, num_texts = len(item_id.unique()), len(index)
    assert float(collapsed["image_to_text/median_rank"]) == num_texts - CAPTIONS + 1
    assert float(collapsed["text_to_image/median_rank"]) == num_images
    assert float(collapsed["text_to_image/R10"]) == 0.0


def distinct_items(rows):
    image, text, item_id, index = rows
    images = {int(i): image[n] for n, i in reversed(list(enumerate(item_id)))}
    texts = {int(i): (text[n], int(item_id[n])) for n, i in enumerate(index)}
    return images, texts


def reference_uniformity(items):
    total, count = 0.0, 0
    for a in range(len(items)):
        for b in range(a + 1, len(items)):
            total += math.exp(-2.0 * float((items[a] - items[b]).pow(2).sum()))
            count += 1
    return math.log(total / count)


def test_alignment_uniformity_match_formulas():
    rows = make_pairs(num_images=20, noise=0.5, seed=4)
    images, texts = distinct_items(rows)
    alignment = sum(float((images[iid] - t).pow(2).sum()) for t, iid in texts.values()) / len(texts)
    got = feed(AlignmentUniformity(), pad_like_sampler(rows))
    assert float(got["alignment"]) == pytest.approx(alignment, rel=1e-9)
    assert float(got["uniformity/image"]) == pytest.approx(
        reference_uniformity(list(images.values())), rel=1e-9
    )
    assert float(got["uniformity/text"]) == pytest.approx(
        reference_uniformity([t for t, _ in texts.values()]), rel=1e-9
    )


def test_alignment_uniformity_extremes_and_subsample():
    image, _, item_id, index = make_pairs(seed=5)
    same = feed(AlignmentUniformity(), (image, image.clone(), item_id, index))
    assert float(same["alignment"]) == pytest.approx(0.0, abs=1e-12)
    collapsed = torch.ones_like(image) / math.sqrt(image.shape[1])
    flat = feed(AlignmentUniformity(), (collapsed, collapsed.clone(), item_id, index))
    assert float(flat["uniformity/text"]) == pytest.approx(0.0, abs=1e-12)
    # above the cap: deterministic, independent of row order, and a real estimate
    rows = make_pairs(num_images=30, seed=5)
    capped = feed(AlignmentUniformity(max_items=40), rows)
    again = feed(AlignmentUniformity(max_items=40), tuple(r.flip(0) for r in rows))
    full = feed(AlignmentUniformity(), rows)
    assert float(capped["uniformity/text"]) == float(again["uniformity/text"])
    assert float(capped["uniformity/text"]) != float(full["uniformity/text"])
    assert float(capped["uniformity/text"]) == pytest.approx(
        float(full["uniformity/text"]), abs=0.2
    )


def test_modality_gap_matches_formula_and_invariances():
    rows = make_pairs(num_images=12, noise=2.0, seed=6)
    images, texts = distinct_items(rows)
    mean_image = sum(F.normalize(v, dim=0) for v in images.values()) / len(images)
    mean_text = sum(F.normalize(t, dim=0) for t, _ in texts.values()) / len(texts)
    want = float((mean_image - mean_text).norm())
    got = feed(ModalityGap(), pad_like_sampler(rows))["modality_gap"]
    assert float(got) == pytest.approx(want, rel=1e-9)
    image, _, item_id, index = rows
    assert float(feed(ModalityGap(), (image, image.clone(), item_id, index))["modality_gap"]) == (
        pytest.approx(0.0, abs=1e-12)
    )
    # opposite modalities: gap = 2 |mean image|; scaling an embedding changes nothing
    opposite = feed(ModalityGap(), (image * 3, -image, item_id, index))["modality_gap"]
    assert float(opposite) == pytest.approx(2 * float(mean_image.norm()), rel=1e-9)


def test_raw_modality_gap_keeps_the_norms():
    rows = make_pairs(num_images=12, noise=2.0, seed=6)
    images, texts = distinct_items(rows)
    want = sum(images.values()) / len(images) - sum(t for t, _ in texts.values()) / len(texts)
    got = feed(ModalityGap(normalize=False), pad_like_sampler(rows))["modality_gap_raw"]
    assert float(got) == pytest.approx(float(want.norm()), rel=1e-9)
    image, _, item_id, index = rows
    scaled = feed(ModalityGap(normalize=False), (image * 3, image, item_id, index))
    mean_image = sum(images.values()) / len(images)
    assert float(scaled["modality_gap_raw"]) == pytest.approx(
        2 * float(mean_image.norm()), rel=1e-9
    )


def test_zero_shot_accuracy_hand_count():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(40, 4, generator=g)
    labels = torch.randint(-1, 4, (40,), generator=g)
    index = torch.arange(40)
    preds = logits.argmax(dim=1)
    valid = [i for i in range(40) if labels[i] >= 0]
    want = 100.0 * sum(int(preds[i] == labels[i]) for i in valid) / len(valid)
    padded = (
        torch.cat([logits, logits[:9]]),
        torch.cat([labels, labels[:9]]),
        torch.cat([index, index[:9]]),
    )
    assert float(feed(ZeroShotAccuracy(4), padded, batch=6)) == pytest.approx(want)
    by_ids = (padded[0].argmax(dim=1), padded[1], padded[2])
    assert float(feed(ZeroShotAccuracy(4), by_ids, batch=6)) == pytest.approx(want)
    none = ZeroShotAccuracy(4)
    none.update(logits[:3], torch.full((3,), -1), index[:3])
    assert math.isnan(float(none.compute()))
    with pytest.raises(ValueError):
        ZeroShotAccuracy(3).update(logits, labels, index)


def pairwise_auroc(scores: list[float], labels: list[int]) -> float:
    """AUROC as the probability that a positive outscores a negative (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_binary_auroc_matches_pairwise_count_and_is_nan_for_one_class():
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 6, (40,), generator=g).double()  # many ties
    labels = torch.randint(0, 2, (40,), generator=g)
    want = pairwise_auroc(scores.tolist(), labels.tolist())
    assert float(binary_auroc(scores, labels)) == pytest.approx(want, abs=1e-6)
    assert float(binary_auroc(-scores, labels)) == pytest.approx(1 - want, abs=1e-6)
    assert math.isnan(float(binary_auroc(scores, torch.ones_like(labels))))


def test_zero_shot_auroc_ignores_unknown_labels_and_padding():
    scores = torch.tensor([0.9, 0.1, 0.8, 0.3, 0.5, 0.7])
    labels = torch.tensor([1, 0, 1, -1, 0, 0])
    metric = ZeroShotAUROC()
    metric.update(scores, labels, torch.arange(6))
    metric.update(scores[:2], labels[:2], torch.arange(2))  # a padded repeat of rows 0 and 1
    known = labels >= 0
    want = pairwise_auroc(scores[known].tolist(), labels[known].tolist())
    assert float(metric.compute()) == pytest.approx(want)
    with pytest.raises(ValueError, match="-1"):
        ZeroShotAUROC().update(scores, labels + 1, torch.arange(6))


def test_choice_accuracy_counts_strict_wins_and_pools_auroc():
    positive = torch.tensor([0.9, 0.2, 0.5, 0.4])
    negative = torch.tensor([0.1, 0.3, 0.5, 0.0])  # a win, a loss, a tie (wrong), a win
    metric = ChoiceAccuracy()
    metric.update(positive, negative, torch.tensor([4, 5, 6, 7]))
    metric.update(positive[:1], negative[:1] + 5, torch.tensor([4]))  # duplicate id: dropped
    out = metric.compute()
    assert float(out["accuracy"]) == pytest.approx(50.0)
    pooled = pairwise_auroc([*positive.tolist(), *negative.tolist()], [1] * 4 + [0] * 4)
    assert float(out["auroc"]) == pytest.approx(pooled)
    # a model blind to the difference scores both the same, up to float rounding: 0 % wins
    blind = ChoiceAccuracy()
    blind.update(positive, positive + 1e-7 * torch.randn(4), torch.arange(4))
    assert float(blind.compute()["accuracy"]) == 0.0
    exact = ChoiceAccuracy()
    exact.update(positive, positive.clone(), torch.arange(4))
    assert float(exact.compute()["auroc"]) == pytest.approx(0.5)


def test_metric_names_follow_the_modalities():
    rows = make_pairs(num_images=6)
    retrieval = RetrievalMetrics(modalities=("video", "text"))
    retrieval.update(*rows)
    assert {"video_to_text/R1", "text_to_video/median_rank"} <= set(retrieval.compute())
    uniformity = AlignmentUniformity(modalities=("audio", "video"))
    uniformity.update(*rows)
    assert set(uniformity.compute()) == {"alignment", "uniformity/audio", "uniformity/video"}


def test_first_occurrence():
    ids = torch.tensor([5, 3, 5, 9, 3, 1])
    assert first_occurrence(ids).tolist() == [5, 1, 0, 3]


def with_scores(rows):
    """The rows plus two per-row scores for the choice and AUROC metrics: the true pair's
    similarity and that of the row's image with another row's text."""
    image, text = rows[0], rows[1]
    return (*rows, (image * text).sum(1), (image * text.roll(1, 0)).sum(1))


def all_metrics(rows, batch: int = 13) -> dict[str, float]:
    """Every paired metric on ``with_scores`` rows, plus the choice metric and a yes/no AUROC
    (label: the item id's parity)."""
    image, text, item_id, index, positive, negative = rows
    result = {}
    for metric in (RetrievalMetrics(), AlignmentUniformity(), ModalityGap()):
        result.update({k: float(v) for k, v in feed(metric, rows[:4], batch).items()})
    choice = feed(ChoiceAccuracy(), (positive, negative, index), batch)
    result.update({f"choice/{k}": float(v) for k, v in choice.items()})
    result["auroc"] = float(feed(ZeroShotAUROC(), (positive, item_id % 2, index), batch))
    return result


def _shard_results(rank: int, world: int, port: int, rows) -> dict[str, float]:
    """One rank of a gloo group: a DistributedSampler-like shard (padded, interleaved)."""
    address = f"tcp://127.0.0.1:{port}"
    dist.init_process_group(
        "gloo", init_method=address, rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        per_rank = -(-len(rows[0]) // world)
        padded = pad_like_sampler(rows, extra=per_rank * world - len(rows[0]))
        shard = tuple(r[rank::world] for r in padded)
        return all_metrics(shard, batch=4)
    finally:
        dist.destroy_process_group()


def test_two_process_sync_equals_one_process():
    """This process is rank 0 and one spawned process rank 1 (one extra import, not two)."""
    rows = with_scores(make_pairs(num_images=9, seed=8))  # 45 rows: 23 per rank, one padded
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    other = mp.get_context("spawn").Process(target=_shard_results, args=(1, 2, port, rows))
    other.start()
    try:
        got = _shard_results(0, 2, port, rows)
    finally:
        other.join(timeout=60)
    assert other.exitcode == 0
    assert_dicts_close(got, all_metrics(rows), tol=1e-9)


# ------------------------------------------------------------------ retrieval by class


def brute_force(embedding, label):
    hits, aps = [], []
    n = len(label)
    for q in range(n):
        others = [j for j in range(n) if j != q]
        positives = [j for j in others if label[j] == label[q]]
        if not positives or label[q] < 0:
            continue
        score = {j: float(embedding[q] @ embedding[j]) for j in others if label[j] >= 0}
        best = max(score[j] for j in positives)
        hits.append(all(score[j] < best for j in score if label[j] != label[q]))
        precisions = []
        for k in positives:
            ahead = [j for j in score if score[j] >= score[k]]
            precisions.append(sum(label[j] == label[q] for j in ahead) / len(ahead))
        aps.append(sum(precisions) / len(precisions))
    return 100.0 * sum(hits) / len(hits), 100.0 * sum(aps) / len(aps)


def test_class_retrieval_matches_brute_force_with_duplicates_ties_and_singletons():
    g = torch.Generator().manual_seed(3)
    embedding = F.normalize(torch.randn(12, 3, generator=g), dim=1)
    embedding[3] = embedding[2]  # an exact tie across classes (2 vs 0)
    label = torch.tensor([0, 1, 0, 2, 1, 0, 2, 1, 0, 3, -1, 2])  # class 3 has one item
    metric = ClassRetrieval(block_size=5)
    # items arrive in two batches, item 4 twice (padding duplicate) with its first row kept
    metric.update(embedding[:7], label[:7], torch.arange(7))
    metric.update(
        torch.cat([embedding[7:], embedding[4:5] * 0]),
        torch.cat([label[7:], torch.tensor([0])]),
        torch.cat([torch.arange(7, 12), torch.tensor([4])]),
    )
    got = metric.compute()
    want_r1, want_map = brute_force(embedding.double(), label.tolist())
    assert got["R1"].item() == pytest.approx(want_r1, abs=1e-4)
    assert got["mAP"].item() == pytest.approx(want_map, abs=1e-4)


def test_class_retrieval_limits():
    label = torch.tensor([0, 0, 1, 1, 2, 2])
    perfect = F.one_hot(label, 3).float()
    metric = ClassRetrieval()
    metric.update(perfect, label, torch.arange(6))
    assert {k: v.item() for k, v in metric.compute().items()} == {"R1": 100.0, "mAP": 100.0}
    collapsed = ClassRetrieval()
    collapsed.update(torch.ones(6, 2) / 2**0.5, label, torch.arange(6))
    result = collapsed.compute()
    assert result["R1"].item() == 0.0  # ties are pessimistic
    assert result["mAP"].item() == pytest.approx(100.0 / 5)  # one positive among five others
