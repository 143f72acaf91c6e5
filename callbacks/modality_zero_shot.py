"""Zero-shot classification of every listed modality against the data's class prompts (the
``zero_shot`` evaluator, which scores one modality, for several): LanguageBind's zero-shot of
each bound modality (depth, sound, ...) through the shared language tower. Keys:
``zero_shot/<modality>/<task>/accuracy``; option ``modalities`` (default: every modality but
text)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from callbacks.evaluators import Evaluator, ZeroShot, register


@register
class ModalityZeroShot(Evaluator):
    """One :class:`~callbacks.evaluators.ZeroShot` per modality; never on by default (a method
    or YAML asks for it)."""

    name = "modality_zero_shot"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        chosen = options.get("modalities") or [m for m in module.modalities if m != "text"]
        unknown = sorted(set(chosen) - set(module.modalities))
        if unknown:
            raise ValueError(
                f"{self.name}.modalities: {unknown} not among the data's {list(module.modalities)}"
            )
        self.each = {m: ZeroShot(module, datamodule, {"modality": m}, shared) for m in chosen}

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        for evaluator in self.each.values():
            evaluator.update(out, batch)

    def compute(self) -> dict[str, Tensor]:
        return {
            key.replace("zero_shot/", f"zero_shot/{m}/", 1): value
            for m, evaluator in self.each.items()
            for key, value in evaluator.compute().items()
        }
