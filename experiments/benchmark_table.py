"""The numbers of a benchmark table: mean ± std over seeds, paired differences, the verdict
rule, and the markdown blocks of docs/methods.md that experiments/benchmark.py rewrites.

The rule is docs/methods.md's: a claim held ("yes") when the paired difference (method −
baseline, same seed) has the claimed sign in every seed and its mean exceeds the std of the
differences; "no" when it is reversed by that margin; otherwise "no measurable effect". One seed
gives no verdict.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

from experiments.benchmark_spec import Comparison

RULE = (
    "held: the paired difference has the claimed sign in every seed and its mean exceeds the "
    "std of the differences; no: reversed by that margin; else no measurable effect"
)
BEGIN, END = "<!-- benchmark: {} -->", "<!-- /benchmark: {} -->"


@dataclass
class Row:
    """One metric of one comparison: the per-seed values of both arms."""

    comparison: Comparison
    metric: str
    method: dict[int, float]
    baseline: dict[int, float]

    def differences(self) -> list[float]:
        seeds = sorted(set(self.method) & set(self.baseline))
        return [self.method[s] - self.baseline[s] for s in seeds]

    def verdict(self) -> str:
        claim = next((c for c in self.comparison.claims if c.metric == self.metric), None)
        if claim is None:
            return ""
        return verdict(self.differences(), claim.direction)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def verdict(differences: list[float], direction: str) -> str:
    """``yes``, ``no`` or ``no measurable effect`` by :data:`RULE`."""
    if len(differences) < 2:
        return "one seed: no verdict"
    sign = 1.0 if direction == "higher" else -1.0
    gains = [sign * d for d in differences]
    mean, std = mean_std(gains)
    if all(g > 0 for g in gains) and mean > std:
        return "yes"
    if all(g < 0 for g in gains) and -mean > std:
        return "no"
    return "no measurable effect"


def number(x: float, digits: int | None = None) -> str:
    """A table number: 1 decimal from 10 up, 2 from 1, else 3 (or ``digits``)."""
    if math.isnan(x):
        return "–"
    if digits is None:
        digits = 1 if abs(x) >= 10 else 2 if abs(x) >= 1 else 3
    return f"{x:.{digits}f}".replace("-", "−")


def _pm(values: list[float]) -> str:
    mean, std = mean_std(values)
    digits = 1 if abs(mean) >= 10 else 2 if abs(mean) >= 1 else 3
    if len(values) < 2:
        return number(mean, digits)
    return f"{number(mean, digits)} ± {number(std, digits)}"


def markdown(rows: list[Row], budgets: dict[str, dict]) -> str:
    """The table of one section: a line per (comparison, metric); claims marked."""
    lines = [
        "| comparison | baseline | budget | seeds | metric | method | baseline | "
        "paired difference | claim | held? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        c = row.comparison
        claim = next((x for x in c.claims if x.metric == row.metric), None)
        seeds = ", ".join(str(s) for s in sorted(set(row.method) & set(row.baseline)))
        cells = [
            f"`{c.name}`",
            c.baseline.label or c.baseline.config.name,
            f"{c.budget} ({budgets[c.budget].get('label', '')})",
            seeds,
            f"`{row.metric.removeprefix('test/')}`",
            _pm([row.method[s] for s in sorted(row.method)]),
            _pm([row.baseline[s] for s in sorted(row.baseline)]),
            _pm(row.differences()),
            f"{claim.direction}" if claim else "",
            row.verdict(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the block between :data:`BEGIN` and :data:`END` of ``name`` replaced."""
    begin, end = BEGIN.format(name), END.format(name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"no '{begin}' ... '{end}' block to write the {name} table into")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text, count=1)
