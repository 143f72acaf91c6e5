"""Every registered method keeps the method contract (docs/new_method.md): it implements the
base's public hooks only, and the layers import only downwards."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import lightning as L
import pytest

from modules.base import AlignmentModule
from modules.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
#: What a method may define that the base or Lightning also defines.
PUBLIC_HOOKS = {
    "__init__",
    "encode",
    "embedding",
    "losses",
    "scalars",
    "evaluators",
    "eval_outputs",
    "prepare_fit",
    "lr_multipliers",
}


def _inherited(cls: type) -> set[str]:
    """Names the base (and Lightning) define, that a subclass could override."""
    names: set[str] = set()
    for base in (AlignmentModule, L.LightningModule):
        for klass in base.__mro__:
            names |= set(vars(klass))
    return names


@pytest.mark.parametrize("name", METHODS.names())
def test_method_overrides_public_hooks_only(name: str) -> None:
    cls = METHODS.get(name).cls
    inherited = _inherited(cls)
    for klass in cls.__mro__:
        if klass in AlignmentModule.__mro__ or not issubclass(klass, AlignmentModule):
            continue
        for attr, value in vars(klass).items():
            if not (inspect.isfunction(value) or isinstance(value, property)):
                continue
            if attr in inherited and attr not in PUBLIC_HOOKS:
                pytest.fail(f"{klass.__name__}.{attr} overrides the base; use a public hook")


def _imports(path: Path) -> set[str]:
    """Top-level package.module names a file imports."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


#: The ground layer everyone may use.
GROUND = ("modules.env", "modules.registry", "modules.distributed", "modules.words")
#: package -> packages (other than itself and the ground) it must not import.
FORBIDDEN = {
    "modules": ("callbacks", "datamodules", "experiments"),
    "datamodules": ("modules", "callbacks", "experiments"),
    "callbacks": ("datamodules", "experiments"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if name.startswith(GROUND):
                continue
            top = name.split(".")[0]
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_contract_test_catches_a_private_override() -> None:
    """A method that overrides ``_eval_step`` (or a Lightning hook) is caught."""

    class Sneaky(AlignmentModule):
        def _eval_step(self, batch, split):  # noqa: ANN001, ANN202
            return {}

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN202
            return None

    inherited = _inherited(Sneaky)
    overridden = {
        a
        for a, v in vars(Sneaky).items()
        if inspect.isfunction(v) and a in inherited and a not in PUBLIC_HOOKS
    }
    assert overridden == {"_eval_step", "training_step"}
