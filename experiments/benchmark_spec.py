"""What experiments/benchmark.py runs: benchmark budgets and each YAML's comparisons.

A budget (``experiments/budgets/<name>.yaml``, one file per data family) is a set of overrides
under which the family's baseline has learned every factor the data holds, with the learning
curve that chose it. A
comparison lives in the ``benchmark:`` block of the method's own YAML (never in the experiment
config: ``load_yaml_chain`` drops the block), so a new method touches no shared file::

    benchmark:
      section: wave_a              # the <!-- benchmark: wave_a --> table of docs/methods.md
      budget: image_text
      comparisons:
        - name: cuaxu
          overrides: []            # key=value, as on run.py's command line
          stage: null              # whose test metrics: null = the chain's last stage
          budget_stage: null       # the stage(s) the budget applies to: null = the first stage
          baseline: {label: CLIP fine-tuned, overrides: [stages.finetune.method.name=clip]}
          metrics: [test/modality_gap, test/retrieval/mean_R1]
          claims: [{metric: test/modality_gap, direction: lower}]

A baseline takes ``config`` (default: the same YAML), ``overrides``, ``stage`` and
``budget_stage`` as the method does, and a ``label`` for the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.config import ConfigError, load_yaml_chain, read_yaml

EXPERIMENTS = Path(__file__).resolve().parent
BUDGETS = EXPERIMENTS / "budgets"
DIRECTIONS = ("higher", "lower")


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a YAML, its overrides and the stage whose metrics count."""

    config: Path
    overrides: tuple[str, ...] = ()
    stage: str | None = None
    budget_stage: tuple[str, ...] | None = None  # None: the first stage (or the experiment)
    label: str = ""

    def argv(self, budget: dict[str, Any], seed: int, extra: tuple[str, ...] = ()) -> list[str]:
        """``run.py``'s arguments for ``seed`` at ``budget``: the budget's overrides on the
        budget stage(s), then the arm's own, then ``extra`` (e.g. a store for tests)."""
        stages = self.budget_stage or _first_stage(self.config)
        prefixes = [f"stages.{name}." if name else "" for name in stages]
        budgeted = [f"{p}{key}={value}" for p in prefixes for key, value in budget.items()]
        return [str(self.config), *budgeted, *self.overrides, f"seed={seed}", *extra]


@dataclass(frozen=True)
class Claim:
    metric: str
    direction: str  # "higher" or "lower" is better for the method


@dataclass(frozen=True)
class Comparison:
    """A method against its baseline on the same data, budget and seeds."""

    name: str
    section: str
    budget: str
    method: Arm
    baseline: Arm
    metrics: tuple[str, ...]
    claims: tuple[Claim, ...] = field(default_factory=tuple)


def _first_stage(config: Path) -> tuple[str, ...]:
    """The first stage's name of a chain, or ``""`` (the experiment itself) without stages."""
    stages = load_yaml_chain(config).get("stages")
    return (next(iter(stages)),) if isinstance(stages, dict) and stages else ("",)


def load_budgets(folder: Path = BUDGETS) -> dict[str, dict[str, Any]]:
    """Budget name (the file's stem) -> its entry (``overrides``, ``curve``, ``description``)."""
    budgets = {}
    for path in sorted(folder.glob("*.yaml")):
        entry = read_yaml(path.read_text()) or {}
        if not isinstance(entry, dict) or not isinstance(entry.get("overrides"), dict):
            raise ConfigError(f"budgets/{path.name}: needs an 'overrides' mapping")
        budgets[path.stem] = entry
    return budgets


def _arm(raw: Any, where: str, default_config: Path) -> Arm:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(raw) - {"config", "overrides", "stage", "budget_stage", "label"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}")
    config = EXPERIMENTS / raw["config"] if raw.get("config") else default_config
    if not config.is_file():
        raise ConfigError(f"{where}.config: no file {config}")
    budget_stage = raw.get("budget_stage")
    if isinstance(budget_stage, str):
        budget_stage = [budget_stage]
    return Arm(
        config=config,
        overrides=tuple(str(o) for o in raw.get("overrides") or ()),
        stage=raw.get("stage"),
        budget_stage=tuple(budget_stage) if budget_stage else None,
        label=str(raw.get("label") or ""),
    )


def comparisons_in(path: Path, budgets: dict[str, Any]) -> list[Comparison]:
    """The comparisons declared in ``path``'s own ``benchmark:`` block (not its base's)."""
    try:
        block = (read_yaml(path.read_text()) or {}).get("benchmark")
    except Exception as err:  # a YAML error, reported as the config loader reports it
        raise ConfigError(f"{path.name}: invalid YAML ({type(err).__name__})") from None
    if block is None:
        return []
    where = f"{path.name} benchmark"
    if block.get("budget") not in budgets:
        known = ", ".join(budgets) or "none"
        raise ConfigError(f"{where}.budget: {block.get('budget')!r} is not a budget ({known})")
    out = []
    for i, raw in enumerate(block.get("comparisons") or []):
        at = f"{where}.comparisons[{i}]"
        claims = tuple(Claim(c["metric"], c["direction"]) for c in raw.get("claims") or [])
        for claim in claims:
            if claim.direction not in DIRECTIONS:
                raise ConfigError(f"{at}: a claim's direction is higher or lower")
        metrics = tuple(raw.get("metrics") or ())
        missing = [c.metric for c in claims if c.metric not in metrics]
        if not raw.get("name") or not metrics or missing:
            raise ConfigError(f"{at}: needs a name and metrics that include every claim's metric")
        own = {k: raw[k] for k in ("overrides", "stage", "budget_stage") if k in raw}
        out.append(
            Comparison(
                name=raw["name"],
                section=block.get("section", "main"),
                budget=block["budget"],
                method=_arm({**own, "label": raw["name"]}, at, path),
                baseline=_arm(raw.get("baseline") or {}, f"{at}.baseline", path),
                metrics=metrics,
                claims=claims,
            )
        )
    return out


def load_comparisons(
    folder: Path = EXPERIMENTS, budgets: dict[str, Any] | None = None
) -> list[Comparison]:
    """Every comparison of every YAML in ``folder``, in file order; names are unique."""
    budgets = load_budgets() if budgets is None else budgets
    found: list[Comparison] = []
    for path in sorted(folder.glob("*.yaml")):
        found.extend(comparisons_in(path, budgets))
    names = [c.name for c in found]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"comparison {repeated[0]} is declared twice")
    return found
