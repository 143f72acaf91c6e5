"""The symmetric InfoNCE: open_clip's ClipLoss vs ours (full matrix, tiles, automatic choice).

    pip install --no-deps open_clip_torch   # only its loss.py is loaded, by path
    python benchmarks/chunked_infonce.py [--batch 1024 ... 32768] [--dim 512] [--repeats 3]
    python benchmarks/chunked_infonce.py --tiles 500000 1000000 2000000 4000000 --batch 8192 16384

Forward + backward of the loss on L2-normalised float32 features [B, D], one process. Each
measurement runs in its own subprocess (its own peak resident memory, max RSS, counted on top
of the allocated inputs) and times the second of two calls (the first pays one-off start-up
costs). The sides alternate; a ratio is the median of the per-repeat ratios, and its spread
(min-max over repeats) is the run-to-run noise. Sides:

- ``open_clip``: ``open_clip.loss.ClipLoss`` (two logits matrices, 2 + 4 products);
- ``plain``: ``clip_loss(..., block_elements=0)``, the full matrix (one matrix, 1 + 2 products);
- ``auto``: ``clip_loss`` as methods call it (``choose_block_elements``);
- ``tiles=N``: ``clip_loss(..., block_elements=N)``, one tile pass for both directions;
- ``rank-plain`` / ``rank-tiles=N``: a DDP rank's layout, each direction its own matrix / its
  own tile pass (what ``clip_loss`` does under DDP), here on one process.

Without ``--tiles`` it prints, per batch size, auto against open_clip and against plain (the
automatic choice must never be slower than plain beyond the noise). With ``--tiles`` it sweeps
tile sizes against plain, the measurement behind ``DEFAULT_BLOCK_ELEMENTS``; with ``--ddp``
it compares the DDP layout's two sides, the measurement behind
``PLAIN_MAX_LOGITS_PER_DIRECTION``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from isolated import peak_mb, run_isolated

REPO = __file__.rsplit("/benchmarks/", 1)[0]


def _open_clip_loss() -> torch.nn.Module:
    """open_clip's ClipLoss from the installed package's loss.py, without importing the package
    (whose ``__init__`` needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("open_clip is not installed: pip install --no-deps open_clip_torch")
    path = f"{list(spec.submodule_search_locations)[0]}/loss.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_loss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ClipLoss()


def _loss_fn(kind: str):
    sys.path.insert(0, REPO)
    from modules.losses.chunked import chunked_soft_cross_entropy
    from modules.losses.contrastive import clip_loss

    if kind == "open_clip":
        return _open_clip_loss()
    if kind == "auto":
        return clip_loss
    if kind == "rank-plain":
        return lambda a, b, scale: (
            0.5
            * sum(
                F.cross_entropy(scale * x @ y.T, torch.arange(len(x))) for x, y in ((a, b), (b, a))
            )
        )
    if kind.startswith("rank-tiles="):
        block = int(kind.removeprefix("rank-tiles="))
        return lambda a, b, scale: (
            0.5
            * sum(
                chunked_soft_cross_entropy(x, y, scale, *[torch.arange(len(x))] * 2, 0.0, block)
                for x, y in ((a, b), (b, a))
            )
        )
    block = 0 if kind == "plain" else int(kind.removeprefix("tiles="))
    return lambda a, b, scale: clip_loss(a, b, scale, block_elements=block)


def _measure(kind: str, batch: int, dim: int) -> dict[str, float]:
    """Seconds of the second fwd+bwd call, and the peak memory added on top of the inputs."""
    loss_fn = _loss_fn(kind)
    torch.manual_seed(0)
    image = F.normalize(torch.randn(batch, dim), dim=1).requires_grad_()
    text = F.normalize(torch.randn(batch, dim), dim=1).requires_grad_()
    scale = torch.tensor(14.3, requires_grad=True)
    before = peak_mb()
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        loss_fn(image, text, scale).backward()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds[-1], "peak_mb": peak_mb() - before}


def _side_by_side(kinds: list[str], batch: int, dim: int, repeats: int) -> dict[str, list[dict]]:
    """Every kind once per repeat, in turn, each in a fresh interpreter."""
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind in kinds:
            runs[kind].append(run_isolated(__file__, kind, batch, dim))
    return runs


def _ratio(runs: dict[str, list[dict]], num: str, den: str) -> str:
    """Median (min-max) over repeats of the time ratio num / den."""
    ratios = [n["seconds"] / d["seconds"] for n, d in zip(runs[num], runs[den], strict=True)]
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def _seconds(runs: list[dict]) -> float:
    return statistics.median(r["seconds"] for r in runs)


def _megabytes(runs: list[dict]) -> float:
    return max(r["peak_mb"] for r in runs)


def compare_with_open_clip(batches: list[int], dim: int, repeats: int) -> None:
    sys.path.insert(0, REPO)
    from modules.losses.chunked import choose_block_elements

    print("time ratio: median (min-max) of per-repeat ratios; MB: peak memory on top of inputs")
    print(
        "batch  auto's choice   open_clip s  plain s  auto s  auto/open_clip     auto/plain"
        "        open_clip MB  plain MB  auto MB"
    )
    for batch in batches:
        runs = _side_by_side(["open_clip", "plain", "auto"], batch, dim, repeats)
        block = choose_block_elements(batch, batch)
        choice = "full matrix" if block == 0 else f"tiles of {block:,}"
        print(
            f"{batch:5d}  {choice:>14s}  {_seconds(runs['open_clip']):10.3f}  "
            f"{_seconds(runs['plain']):7.3f}  {_seconds(runs['auto']):6.3f}  "
            f"{_ratio(runs, 'auto', 'open_clip'):>15s}  {_ratio(runs, 'auto', 'plain'):>15s}  "
            f"{_megabytes(runs['open_clip']):12.0f}  {_megabytes(runs['plain']):8.0f}  "
            f"{_megabytes(runs['auto']):7.0f}",
            flush=True,
        )


def sweep_tiles(tiles: list[int], batches: list[int], dim: int, repeats: int) -> None:
    print("tiles/plain: time ratio, median (min-max) of per-repeat ratios")
    for batch in batches:
        kinds = ["plain", *(f"tiles={t}" for t in tiles)]
        runs = _side_by_side(kinds, batch, dim, repeats)
        cells = "  ".join(f"{t:,}: {_ratio(runs, f'tiles={t}', 'plain')}" for t in tiles)
        print(f"B={batch:5d}  plain {_seconds(runs['plain']):.3f} s  {cells}", flush=True)


def ddp_layout(batches: list[int], dim: int, repeats: int) -> None:
    sys.path.insert(0, REPO)
    from modules.losses.chunked import DEFAULT_BLOCK_ELEMENTS

    tiles = f"rank-tiles={DEFAULT_BLOCK_ELEMENTS}"
    print(f"a DDP rank's layout: two matrices vs two tile passes ({DEFAULT_BLOCK_ELEMENTS:,})")
    print("batch  two matrices s  two tile passes s  tiles/matrices    matrices MB  tiles MB")
    for batch in batches:
        runs = _side_by_side(["rank-plain", tiles], batch, dim, repeats)
        print(
            f"{batch:5d}  {_seconds(runs['rank-plain']):14.3f}  {_seconds(runs[tiles]):17.3f}  "
            f"{_ratio(runs, tiles, 'rank-plain'):>15s}  {_megabytes(runs['rank-plain']):11.0f}  "
            f"{_megabytes(runs[tiles]):8.0f}",
            flush=True,
        )


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:
        kind, batch, dim = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(_measure(kind, batch, dim)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1024, 2048, 3072, 4096, 8192, 16384, 32768]
    )
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiles", type=int, nargs="+", help="sweep these tile sizes vs plain")
    parser.add_argument("--ddp", action="store_true", help="a DDP rank's layout, both sides")
    args = parser.parse_args()
    if args.ddp:
        ddp_layout(args.batch, args.dim, args.repeats)
    elif args.tiles:
        sweep_tiles(args.tiles, args.batch, args.dim, args.repeats)
    else:
        compare_with_open_clip(args.batch, args.dim, args.repeats)


if __name__ == "__main__":
    main()
