"""The platform's training step against a plain PyTorch loop, side by side.

    python benchmarks/training_step.py [--config experiments/clip.yaml] [--steps 60]
                                       [--rounds 3] [key=value ...]

Both sides train copies of the same towers, built by the platform from the YAML, on the same
pre-collated batches of its data:

- platform: ``lightning.Trainer.fit`` of the method (its ``training_step``, loss-term logging,
  non-finite check, AdamW + warm-up/cosine, temperature clamp) with the per-step callbacks of
  ``experiments/run.py`` (skipped-sample counting, throughput), logging to an MLflow sqlite
  store every ``trainer.log_every_n_steps`` steps;
- plain: ``towers -> normalise -> clip_loss -> backward -> AdamW -> scheduler -> clamp``.

Timings on a shared 2-core machine drift by tens of percent within a minute, so the sides
alternate every step: at the start of each platform step a callback runs the plain step on the
same batch and times it; the platform step is the rest of the interval to the next step start
(so it includes everything Lightning does between steps). Printed: the median of the per-step
ratios (robust to spikes) and the ratio of the mean times (which includes the periodic logger
writes), after the first three steps.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import modules.env  # noqa: E402, F401  (before lightning and mlflow)

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from callbacks.data_health import SkippedSamples  # noqa: E402
from callbacks.progress import Throughput  # noqa: E402
from experiments.config import load_experiment  # noqa: E402
from experiments.stages import build  # noqa: E402
from modules.base import warmup_cosine  # noqa: E402
from modules.losses.contrastive import clip_loss  # noqa: E402

WARMUP = 3


class PlainLoop:
    """The same training step written directly in PyTorch, on its own copy of the towers."""

    def __init__(self, module, cfg: dict, steps: int) -> None:
        self.module, optim = module.train(), cfg["optim"]
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [
                {
                    "params": [p for p in params if p.ndim >= 2],
                    "weight_decay": optim["weight_decay"],
                },
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=optim["lr"],
            betas=tuple(optim["betas"]),
            eps=optim["eps"],
        )
        schedule = warmup_cosine(optim["warmup_steps"], steps, optim["min_lr_ratio"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def step(self, batch: dict) -> None:
        towers, log_scale = self.module.towers, self.module.logit_scale
        a, b = self.module.modalities
        x = F.normalize(towers[a](batch).pooled, dim=-1)
        y = F.normalize(towers[b](batch).pooled, dim=-1)
        loss = clip_loss(x, y, log_scale.exp(), ids=batch["item_id"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            log_scale.clamp_(0.0, self.module.max_log_scale)


class Interleaved(L.Callback):
    """Runs and times one plain step at the start of every platform step; the platform step
    is the remainder of the interval between step starts."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.plain_seconds: list[float] = []
        self.platform_seconds: list[float] = []
        self._resumed: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        start = time.perf_counter()
        if self._resumed is not None:
            self.platform_seconds.append(start - self._resumed)
        self.plain.step(batch)
        self._resumed = time.perf_counter()
        self.plain_seconds.append(self._resumed - start)

    def on_train_end(self, trainer, pl_module) -> None:
        self.plain_seconds.pop()  # its platform step has no following start


def one_round(module, batches, cfg: dict, store: Path) -> tuple[float, float, float, float]:
    """Platform over plain: median per-step ratio and mean-time ratio; then the median
    seconds per step of each side."""
    timer = Interleaved(PlainLoop(copy.deepcopy(module), cfg, len(batches)))
    trainer = L.Trainer(
        max_steps=len(batches),
        accelerator="cpu",
        devices=1,
        log_every_n_steps=cfg["trainer"]["log_every_n_steps"],
        logger=MLFlowLogger(experiment_name="bench", tracking_uri=f"sqlite:///{store}"),
        callbacks=[timer, SkippedSamples(), Throughput()],  # the per-step ones run.py adds
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(copy.deepcopy(module), DataLoader(batches, batch_size=None))
    ours, base = timer.platform_seconds[WARMUP:], timer.plain_seconds[WARMUP:]
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    return (
        statistics.median(ratios),
        statistics.mean(ours) / statistics.mean(base),
        statistics.median(ours),
        statistics.median(base),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "clip.yaml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args()
    (stage,) = load_experiment(args.config, args.overrides)[-1:]
    cfg = stage.plain
    if cfg["method"]["name"] != "clip":
        sys.exit("the plain loop implements the clip method only")
    L.seed_everything(cfg["seed"], verbose=False)
    datamodule, module = build(cfg)
    loader = datamodule.train_dataloader()
    batches = [batch for batch, _ in zip(loader, range(args.steps), strict=False)]
    print(
        f"{cfg['name']}: batch {cfg['data']['batch_size']}, {len(batches)} steps per round, "
        f"log every {cfg['trainer']['log_every_n_steps']} steps, "
        f"{torch.get_num_threads()} threads"
    )
    print("round  platform s/step  plain s/step  median step ratio  mean-time ratio")
    medians = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            median, mean, ours, base = one_round(module, batches, cfg, Path(tmp) / "mlflow.db")
            medians.append(median)
            print(f"{r:<5d}  {ours:15.4f}  {base:12.4f}  {median:17.3f}  {mean:15.3f}")
    print(f"platform/plain step time, median over rounds: {statistics.median(medians):.3f}")


if __name__ == "__main__":
    main()
