"""Our retrieval metric against torchmetrics' retrieval metrics and against the matmul peak.

    python benchmarks/retrieval.py [--sizes 2000 5000] [--large 100000] [--dim 128] [--repeats 3]

At each of ``--sizes`` both compute image->text and text->image R@1/5/10 on the same random
embeddings (one caption per image, noisy copies, so ranks are spread); values must be
identical. Each side runs in its own subprocess (its own max RSS); the sides alternate and the
time ratio is the median of the per-repeat ratios.

At ``--large`` N (torchmetrics would need the N x N score matrix as one flat tensor) our ranks
(``callbacks/retrieval_ranks.py``, all the metric's work) run against ``matmul``, the one
N x N x D product both directions need, computed as fast as this machine does it (row stripes
of 1024 queries into one reused buffer, nothing else): the fraction of the matmul throughput we
reach is matmul seconds / ours. Also against ``stripes``, the previous implementation (each
direction its own product, in stripes of rows, comparisons on whole stripes), whose ranks must
equal ours exactly (compared by a digest of all four rank vectors). Twice: on ``noisy`` copies
(a trained model: median rank near 1) and on ``random`` pairs (an untrained model: ranks spread
over N, the worst case for the tiles' early exit).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from isolated import peak_mb, run_isolated

REPO = __file__.rsplit("/benchmarks/", 1)[0]
KS = (1, 5, 10)


def _embeddings(n: int, dim: int, data: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    if data == "random":
        return image, F.normalize(torch.randn(n, dim, generator=g), dim=1)
    text = F.normalize(image + 1.5 * torch.randn(n, dim, generator=g) / dim**0.5, dim=1)
    return image, text


def _ours(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    from callbacks.metrics import RetrievalMetrics

    metric = RetrievalMetrics(ks=KS)
    ids = torch.arange(len(image))
    metric.update(image, text, ids, ids)
    out = metric.compute()
    return {k: float(v) for k, v in out.items() if k.split("/")[-1] in {f"R{k}" for k in KS}}


def _torchmetrics(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    from torchmetrics.retrieval import RetrievalRecall

    n = len(image)
    out = {}
    for name, queries, gallery in (("image_to_text", image, text), ("text_to_image", text, image)):
        scores = (queries @ gallery.T).flatten()
        target = torch.eye(n, dtype=torch.bool).flatten()
        indexes = torch.arange(n).repeat_interleave(n)
        for k in KS:
            recall = RetrievalRecall(top_k=k)
            out[f"{name}/R{k}"] = 100.0 * float(recall(scores, target, indexes=indexes))
    return out


def _digest(ranks: dict[str, torch.Tensor]) -> dict[str, str]:
    return {
        name: hashlib.sha256(r.long().numpy().tobytes()).hexdigest()[:16]
        for name, r in sorted(ranks.items())
    }


def _ranks(image: torch.Tensor, text: torch.Tensor) -> dict[str, str]:
    from callbacks.retrieval_ranks import retrieval_ranks

    ranks = retrieval_ranks(image, text, torch.arange(len(image)))
    return _digest({name: getattr(ranks, name) for name in ranks.__dataclass_fields__})


def _stripes(image: torch.Tensor, text: torch.Tensor) -> dict[str, str]:
    """The previous implementation, for one caption per image: per direction, stripes of rows
    of its own product; rank 1 + #negatives >= the positive, optimistic 1 + #scores > it."""
    ranks = {}
    for name, queries, gallery in (("item", image, text), ("caption", text, image)):
        rows = max(1, min(1024, (1 << 24) // len(gallery)))
        columns = gallery.T.contiguous()
        pessimistic, optimistic = [], []
        for start in range(0, len(queries), rows):
            sims = queries[start : start + rows] @ columns
            own = sims.gather(1, torch.arange(start, start + len(sims))[:, None])
            pessimistic.append((sims >= own).count_nonzero(dim=1))
            optimistic.append(1 + (sims > own).count_nonzero(dim=1))
        ranks[name], ranks[f"{name}_optimistic"] = torch.cat(pessimistic), torch.cat(optimistic)
    return _digest(ranks)


def _matmul(image: torch.Tensor, text: torch.Tensor) -> dict:
    """The N x N product alone, in stripes of 1024 rows into one buffer."""
    columns = text.T.contiguous()
    buffer = image.new_empty(1024, len(text))
    for start in range(0, len(image), 1024):
        rows = image[start : start + 1024]
        torch.mm(rows, columns, out=buffer[: len(rows)])
    return {}


SIDES = {
    "ours": _ours,
    "torchmetrics": _torchmetrics,
    "ranks": _ranks,
    "stripes": _stripes,
    "matmul": _matmul,
}


def _measure(side: str, n: int, dim: int, data: str) -> dict:
    sys.path.insert(0, REPO)
    import torchmetrics.retrieval  # noqa: F401

    import callbacks.metrics  # noqa: F401  (imports are not what is timed)

    image, text = _embeddings(n, dim, data)
    SIDES[side](image[:64], text[:64])  # one-off start-up costs (thread pools) are not timed
    before = peak_mb()
    start = time.perf_counter()
    values = SIDES[side](image, text)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": peak_mb() - before, "values": values}


def _runs(sides: list[str], n: int, dim: int, data: str, repeats: int) -> dict[str, list[dict]]:
    """Every side once per repeat, in turn, each in a fresh interpreter."""
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(repeats):
        for side in sides:
            runs[side].append(run_isolated(__file__, side, n, dim, data))
    return runs


def _median(runs: list[dict]) -> float:
    return statistics.median(r["seconds"] for r in runs)


def against_torchmetrics(sizes: list[int], dim: int, repeats: int) -> None:
    print("peak MB: memory added on top of the embeddings (max RSS, per subprocess)")
    print("N       ours s  torchmetrics s  speed-up  ours MB  torchmetrics MB  identical")
    for n in sizes:
        runs = _runs(["ours", "torchmetrics"], n, dim, "noisy", repeats)
        ours, theirs = runs["ours"], runs["torchmetrics"]
        ratios = [t["seconds"] / o["seconds"] for o, t in zip(ours, theirs, strict=True)]
        same = all(
            abs(ours[0]["values"][k] - theirs[0]["values"][k]) < 1e-4 for k in ours[0]["values"]
        )
        print(
            f"{n:<7d} {_median(ours):6.3f}  {_median(theirs):14.3f}  "
            f"{statistics.median(ratios):8.1f}  {max(r['peak_mb'] for r in ours):7.0f}  "
            f"{max(r['peak_mb'] for r in theirs):15.0f}  {same}",
            flush=True,
        )


def against_matmul(n: int, dim: int) -> None:
    print(f"N = {n}, D = {dim}: one run each, sides in turn")
    print("data     matmul s  ours s  of matmul  stripes s  ours MB  same ranks")
    for data in ("noisy", "random"):
        runs = _runs(["matmul", "ranks", "stripes"], n, dim, data, 1)
        matmul, ours, stripes = (runs[side][0] for side in ("matmul", "ranks", "stripes"))
        print(
            f"{data:7s}  {matmul['seconds']:8.1f}  {ours['seconds']:6.1f}  "
            f"{matmul['seconds'] / ours['seconds']:9.2f}  {stripes['seconds']:9.1f}  "
            f"{ours['peak_mb']:7.0f}  {ours['values'] == stripes['values']}",
            flush=True,
        )


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:
        side, n, dim, data = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        print(json.dumps(_measure(side, n, dim, data)))
        return
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2000, 5000])
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.sizes:
        against_torchmetrics(args.sizes, args.dim, args.repeats)
    if args.large:
        against_matmul(args.large, args.dim)


if __name__ == "__main__":
    main()
