"""Training-step time of the one-modality view methods, side by side, relative to SimCLR.

    python benchmarks/views_step_time.py [--steps 12] [--num-train 1024]
        [--methods simclr swav hard_negative_simclr ...] [key=value ...]

Each method is built by the platform from its YAML (experiments/<method>.yaml with the
``key=value`` overrides: the views table's batch of 256 scenes at 32 px by default), on the
same pre-collated batches of its data. The methods take turns, one training step each (encode
the views, the method's weighted loss terms, backward, AdamW step), so drift in a shared
machine's speed falls on all of them alike; the first two rounds are warm-up. Printed per method:
the median step time and its ratio to SimCLR's. Methods that need more views than two (the
multi-view losses at K > 2) are timed at the views their YAML asks for; say which when quoting.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import modules.env  # noqa: E402, F401  (before lightning)

import torch  # noqa: E402

from experiments.config import load_experiment  # noqa: E402
from experiments.stages import build  # noqa: E402
from modules.registry import METHODS  # noqa: E402

WARMUP = 2
DEFAULT = ["simclr", "swav", "hard_negative_simclr"]


def prepared(method: str, overrides: list[str], batches: int) -> tuple[object, list[dict]]:
    """The method's module in training mode and ``batches`` collated training batches."""
    stage = load_experiment(REPO / "experiments" / f"{method}.yaml", overrides)[-1]
    datamodule, module = build(stage.plain)
    loader = iter(datamodule.train_dataloader())
    return module.train(), [next(loader) for _ in range(batches)]


def step(module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    """Seconds of one training step: encode, weighted loss terms, backward, optimiser step."""
    start = time.perf_counter()
    terms = module.losses(batch, module.encode(batch))
    weights = module.method_cfg.loss_weights
    loss = sum(weights.get(name, 1.0) * value for name, value in terms.items())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=DEFAULT)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--num-train", type=int, default=1024)
    args, overrides = parser.parse_known_args()
    unknown = sorted(set(args.methods) - set(METHODS.names()))
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; known: {METHODS.names()}")
    if "simclr" not in args.methods:
        args.methods.insert(0, "simclr")
    overrides = [f"data.num_train={args.num_train}", "data.num_workers=0", *overrides]
    torch.manual_seed(0)
    runs = {}
    for method in args.methods:
        module, batches = prepared(method, overrides, batches=2)
        params = [p for p in module.parameters() if p.requires_grad]
        runs[method] = (module, torch.optim.AdamW(params, lr=1e-4), batches)
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    for k in range(args.steps + WARMUP):
        for method, (module, optimizer, batches) in runs.items():
            seconds = step(module, optimizer, batches[k % len(batches)])
            if k >= WARMUP:
                times[method].append(seconds)
    base = statistics.median(times["simclr"])
    print(f"{'method':<24}{'step (s)':>10}{'x simclr':>10}  (median of {args.steps} steps)")
    for method, values in times.items():
        median = statistics.median(values)
        print(f"{method:<24}{median:>10.3f}{median / base:>10.2f}")


if __name__ == "__main__":
    main()
