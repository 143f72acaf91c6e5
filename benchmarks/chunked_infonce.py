"""Chunked vs full-matrix InfoNCE: forward+backward time and peak memory, side by side.

    python benchmarks/chunked_infonce.py [--batch 4096 16384] [--dim 512] [--repeats 3]

Each measurement runs in its own subprocess, so its peak resident memory (max RSS) is its own;
the two sides alternate and the ratio printed is the median of the per-repeat ratios (timings
on a shared CPU vary run to run). The matmul throughput of this machine is measured in the same
run, to express the loss's achieved GFLOP/s as a fraction of it. float32 throughout (bf16
matmul is far slower on CPUs without native support).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from isolated import peak_mb, run_isolated

REPO = __file__.rsplit("/benchmarks/", 1)[0]


def _measure(kind: str, batch: int, dim: int, block: int) -> dict[str, float]:
    """One fwd+bwd of the symmetric loss (or one matmul) in this process: seconds, GFLOP and
    the peak memory it added on top of the process with its inputs allocated."""
    sys.path.insert(0, REPO)
    from modules.losses.contrastive import clip_loss

    torch.manual_seed(0)
    if kind == "matmul":
        a, b = torch.randn(batch, dim), torch.randn(batch, dim)
        before = peak_mb()
        start = time.perf_counter()
        a @ b.T
        seconds = time.perf_counter() - start
        flop = 2.0 * batch * batch * dim
    else:
        image = F.normalize(torch.randn(batch, dim), dim=1).requires_grad_()
        text = F.normalize(torch.randn(batch, dim), dim=1).requires_grad_()
        scale = torch.tensor(14.3, requires_grad=True)
        extra = {"block_elements": block} if kind == "chunked" else {}
        before = peak_mb()
        start = time.perf_counter()
        clip_loss(image, text, scale, **extra).backward()
        seconds = time.perf_counter() - start
        # two directions x (forward 1 product, backward 2 products; chunked recomputes 1 more)
        products = 2 * (3 + (kind == "chunked"))
        flop = products * 2.0 * batch * batch * dim
    return {"seconds": seconds, "gflop": flop / 1e9, "peak_mb": peak_mb() - before}


def _run(*args: object) -> dict:
    """``_measure(*args)`` in a fresh interpreter (its own peak memory)."""
    return run_isolated(__file__, *args)


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:
        kind, *sizes = sys.argv[2:]
        print(json.dumps(_measure(kind, *map(int, sizes))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[4096, 16384, 32768])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--block", type=int, default=4_000_000, help="logits per tile")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = _run("matmul", 4096, args.dim, 0)
    matmul_gflops = base["gflop"] / base["seconds"]
    print(f"matmul 4096x{args.dim} @ {args.dim}x4096: {matmul_gflops:.1f} GFLOP/s")
    print("peak MB: memory the loss added on top of its inputs (max RSS, per subprocess)")
    print("batch  plain s  chunked s  time ratio  plain MB  chunked MB  mem ratio  chunked/matmul")
    for batch in args.batch:
        ratios, plain, chunked = [], [], []
        for _ in range(args.repeats):
            p = _run("plain", batch, args.dim, args.block)
            c = _run("chunked", batch, args.dim, args.block)
            plain.append(p)
            chunked.append(c)
            ratios.append(c["seconds"] / p["seconds"])
        p_s = statistics.median(r["seconds"] for r in plain)
        c_s = statistics.median(r["seconds"] for r in chunked)
        p_mb = max(r["peak_mb"] for r in plain)
        c_mb = max(r["peak_mb"] for r in chunked)
        achieved = chunked[0]["gflop"] / c_s / matmul_gflops
        print(
            f"{batch:5d}  {p_s:7.2f}  {c_s:9.2f}  {statistics.median(ratios):10.2f}  "
            f"{p_mb:8.0f}  {c_mb:10.0f}  {c_mb / p_mb:9.3f}  {achieved:14.2f}"
        )


if __name__ == "__main__":
    main()
