"""Our retrieval metric against torchmetrics' retrieval metrics, side by side.

    python benchmarks/retrieval.py [--sizes 2000 5000] [--large 100000] [--dim 128] [--repeats 3]

At each size both compute image->text and text->image R@1/5/10 on the same random embeddings
(one caption per image, noisy copies, so ranks are spread); values must be identical. Each side
runs in its own subprocess (its own max RSS); the sides alternate and the time ratio is the
median of the per-repeat ratios. ``--large`` times our metric alone (torchmetrics would need
the N x N score matrix as one flat tensor).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from isolated import peak_mb, run_isolated

REPO = __file__.rsplit("/benchmarks/", 1)[0]
KS = (1, 5, 10)


def _embeddings(n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(n, dim, generator=g), dim=1)
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


def _measure(kind: str, n: int, dim: int) -> dict:
    sys.path.insert(0, REPO)
    import torchmetrics.retrieval  # noqa: F401

    import callbacks.metrics  # noqa: F401  (imports are not what is timed)

    image, text = _embeddings(n, dim)
    before = peak_mb()
    start = time.perf_counter()
    values = (_ours if kind == "ours" else _torchmetrics)(image, text)
    seconds = time.perf_counter() - start
    peak = peak_mb() - before
    return {"seconds": seconds, "peak_mb": peak, "values": values}


def _run(*args: object) -> dict:
    """``_measure(*args)`` in a fresh interpreter (its own peak memory)."""
    return run_isolated(__file__, *args)


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:
        kind, n, dim = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(_measure(kind, n, dim)))
        return
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000])
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("peak MB: memory added on top of the embeddings (max RSS, per subprocess)")
    print("N       ours s  torchmetrics s  speed-up  ours MB  torchmetrics MB  identical")
    for n in args.sizes:
        ratios, ours, theirs = [], [], []
        for _ in range(args.repeats):
            ours.append(_run("ours", n, args.dim))
            theirs.append(_run("torchmetrics", n, args.dim))
            ratios.append(theirs[-1]["seconds"] / ours[-1]["seconds"])
        same = all(
            abs(ours[0]["values"][k] - theirs[0]["values"][k]) < 1e-4 for k in ours[0]["values"]
        )
        print(
            f"{n:<7d} {statistics.median(r['seconds'] for r in ours):6.3f}  "
            f"{statistics.median(r['seconds'] for r in theirs):14.3f}  "
            f"{statistics.median(ratios):8.1f}  {max(r['peak_mb'] for r in ours):7.0f}  "
            f"{max(r['peak_mb'] for r in theirs):15.0f}  {same}"
        )
    if args.large:
        big = _run("ours", args.large, args.dim)
        print(f"{args.large:<7d} {big['seconds']:6.1f}  (ours alone)  peak {big['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
