"""Scoring N queries against M candidates: DSE's sentence embeddings vs its cross-encoder teacher.

    python benchmarks/dse_scoring.py [--queries 64] [--candidates 64] [--repeats 3] [key=value ...]

Both models are built by the platform from experiments/dse.yaml (its ``key=value`` overrides,
e.g. ``model.text.name=minilm``); scoring time does not depend on the weights, so they are not
trained. The sentences are the first N + M test sentences of the YAML's data, tokenized once.
Timed side by side, in turns (the first round is warm-up), in eval mode without gradients:

- ``teacher``: every one of the N x M pairs joined and run through the cross-encoder (in chunks
  of ``--chunk`` pairs) to its two-class logits;
- ``dse``: the N + M sentences encoded once, then the pair head ``g([u; v; u*v; |u-v|])`` on
  all N x M pairs of embeddings;
- ``cosine``: the N + M sentences encoded once, then one matrix product of the normalised
  embeddings (retrieval-style scoring).

Printed: the median seconds of each and the speed-up of the two embedding scorers over the
teacher (teacher time / their time), measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import modules.env  # noqa: E402, F401  (before lightning)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from experiments.config import load_experiment  # noqa: E402
from experiments.stages import build  # noqa: E402
from modules.dse import first_token, join_pairs, pair_features  # noqa: E402


def sentences(datamodule, count: int) -> list[str]:
    """The first ``count`` distinct test sentences (both sides of the STS pairs)."""
    split = datamodule.source.split("test")
    pool = list(dict.fromkeys([*split.texts["sentence1"], *split.texts["sentence2"]]))
    if len(pool) < count:
        raise SystemExit(f"the test split has {len(pool)} sentences; asked for {count}")
    return pool[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=256)
    args, overrides = parser.parse_known_args()
    torch.set_grad_enabled(False)
    stages = load_experiment(REPO / "experiments" / "dse.yaml", overrides)
    datamodule, teacher = build(stages[0].plain)
    _, student = build(stages[1].plain, datamodule.tokenizer.state())
    student.set_teacher(teacher.state_dict())
    teacher.eval(), student.eval()
    datamodule.setup("test")
    texts = sentences(datamodule, args.queries + args.candidates)
    q_ids, q_mask = teacher.tokenizer.encode(texts[: args.queries])
    c_ids, c_mask = teacher.tokenizer.encode(texts[args.queries :])
    tower_t, tower_s = teacher.towers["text"], student.towers["text"]
    n, m = args.queries, args.candidates
    qi, ci = torch.arange(n).repeat_interleave(m), torch.arange(m).repeat(n)  # all pairs

    def score_teacher() -> torch.Tensor:
        out = []
        for start in range(0, n * m, args.chunk):
            a, b = qi[start : start + args.chunk], ci[start : start + args.chunk]
            ids, mask = join_pairs(
                (q_ids[a], q_mask[a]),
                (c_ids[b], c_mask[b]),
                teacher.pairs.max_len,
                teacher.pairs.skip_first_of_b,
            )
            out.append(
                teacher.pair_head(first_token(tower_t({"text_ids": ids, "text_mask": mask})))
            )
        return torch.cat(out)

    def embed() -> tuple[torch.Tensor, torch.Tensor]:
        u = student.embedding("text", tower_s({"text_ids": q_ids, "text_mask": q_mask}))
        v = student.embedding("text", tower_s({"text_ids": c_ids, "text_mask": c_mask}))
        return u, v

    def score_dse() -> torch.Tensor:
        u, v = embed()
        return student.head(pair_features(u[qi], v[ci]))

    def score_cosine() -> torch.Tensor:
        u, v = embed()
        return F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T

    scorers: dict[str, Callable[[], torch.Tensor]] = {
        "teacher": score_teacher,
        "dse": score_dse,
        "cosine": score_cosine,
    }
    times: dict[str, list[float]] = {name: [] for name in scorers}
    for round_ in range(args.repeats + 1):
        for name, scorer in scorers.items():
            start = time.perf_counter()
            scores = scorer()
            if round_:  # the first round warms up
                times[name].append(time.perf_counter() - start)
        assert scores.numel() == n * m
    median = {name: statistics.median(values) for name, values in times.items()}
    text_tower = stages[0].plain["model"]["text"]["name"]
    print(
        f"{n} queries x {m} candidates = {n * m} pairs, text tower {text_tower}, "
        f"{torch.get_num_threads()} thread(s), median of {args.repeats}"
    )
    for name, seconds in median.items():
        ratio = median["teacher"] / seconds
        print(f"  {name:8s} {seconds:8.4f} s   speed-up over the teacher x{ratio:.1f}")


if __name__ == "__main__":
    main()
