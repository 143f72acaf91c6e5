"""Evaluators by name: what a validation/test epoch measures, chosen by the data and the method.

Each evaluator reads the evaluation outputs of the base (``embeddings``, ``raw``, ``item_id``,
``index``, ``labels``, ``targets`` and the method's ``outputs``, see
``modules.base.AlignmentModule._eval_step``), feeds torchmetrics metrics (synced and
de-duplicated by sample id under DDP inside ``compute``) and returns its values without the
split prefix. The data declares which evaluations make sense on it (:func:`default_evaluators`),
a method adds what it needs (``evaluators()``), and a YAML may choose (``evaluation.*``).

Evaluators (name: what it needs -> what it logs):

- ``retrieval``: two or more encoders -> ``retrieval/<a>_to_<b>/R1`` (R5, R10, ranks) for
  every declared pair, ``retrieval/mean_R1``;
- ``geometry``: a pair -> ``alignment``, ``uniformity/<m>``, ``modality_gap(_raw)``;
- ``zero_shot``: a text encoder, the data's class prompts -> ``zero_shot/<task>/accuracy``;
- ``zero_shot_binary``: yes/no prompts -> ``zero_shot/<task>/auroc``, ``zero_shot/mean_auroc``;
- ``choice``: the data's wrong candidates -> ``<task>/accuracy``, ``<task>/auroc``;
- ``class_retrieval``: class labels -> ``class_retrieval/R1``, ``class_retrieval/mAP``;
- ``knn``, ``linear_probe``: class labels and a training-set loader ->
  ``knn/<task>/accuracy``, ``linear_probe/<task>/accuracy``;
- ``regression``: ``prediction/<target>`` outputs -> ``regression/<target>/MAE``, per region;
- ``sts``: two embeddings and a score target -> ``sts/spearman``;
- ``classifier``: ``logits/<name>/<task>`` outputs -> ``classifier/<name>/<task>/accuracy``;
- ``languages``: ``languages/<name>`` outputs [B, K, D] -> ``languages/lang<k>/.../R1``,
  ``languages/mrv``.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from callbacks.metrics import (
    AlignmentUniformity,
    ChoiceAccuracy,
    ClassRetrieval,
    ModalityGap,
    RetrievalMetrics,
    RetrievalWithRanks,
    ZeroShotAccuracy,
    ZeroShotAUROC,
    mean_rank_variance,
)
from callbacks.probes import KNNAccuracy, LinearProbeAccuracy
from callbacks.regression import RegressionMAE
from callbacks.sts import STSSpearman
from modules.clustering import combined_class

EVALUATORS: dict[str, type[Evaluator]] = {}


def register(cls: type[Evaluator]) -> type[Evaluator]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in EVALUATORS:
        raise ValueError(f"evaluator name {cls.name!r} is registered twice")
    EVALUATORS[cls.name] = cls
    return cls


def option_modality(evaluator: str, module: Any, options: dict[str, Any]) -> str:
    """The encoder an evaluator of one modality reads: ``options.modality``, by default the
    method's first; one that is not among the method's encoders is a one-line error."""
    side = options.get("modality", module.modalities[0])
    if side not in module.modalities:
        raise ValueError(
            f"{evaluator}.modality: modality {side!r} is not among the encoders "
            f"{list(module.modalities)}"
        )
    return side


def pairs_of(datamodule: Any, modalities: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The modality pairs to evaluate: the data's ``pairs``, else every pair of encoders."""
    declared = getattr(datamodule, "pairs", None)
    if declared is not None:
        return tuple(tuple(p) for p in declared)
    return tuple(combinations(modalities, 2))


class Evaluator:
    """One evaluation: built at the start of each validation/test epoch, updated per batch,
    computed at its end. ``options`` come from the method's ``evaluators()`` or the YAML;
    ``shared`` is one dict for all evaluators of the epoch."""

    name: ClassVar[str]

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        self.module, self.datamodule, self.options = module, datamodule, dict(options)
        #: What the evaluators of one epoch share (e.g. the training-set bank of the probes),
        #: computed once by whichever needs it first.
        self.shared = shared if shared is not None else {}
        self.device = module.device

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        """Whether the evaluation makes sense by default on this data and method."""
        return False

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, Tensor]:
        raise NotImplementedError


@register
class Retrieval(Evaluator):
    """Cross-modal retrieval (callbacks.metrics.RetrievalMetrics) over every declared pair;
    ``mean_R1`` is the mean R@1 over all directions (the value checkpoints monitor)."""

    name = "retrieval"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.pairs = pairs_of(datamodule, module.modalities)
        self.metrics = {
            pair: RetrievalMetrics(block_size=options.get("block_size", 1024), modalities=pair).to(
                self.device
            )
            for pair in self.pairs
        }

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return bool(pairs_of(datamodule, module.modalities))

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        emb = out["embeddings"]
        for (a, b), metric in self.metrics.items():
            metric.update(emb[a], emb[b], out["item_id"], out["index"])

    def compute(self) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        r1 = []
        for (a, b), metric in self.metrics.items():
            if not metric.update_count:
                continue
            for key, value in metric.compute().items():
                values[f"retrieval/{key}"] = value
            r1 += [values[f"retrieval/{a}_to_{b}/R1"], values[f"retrieval/{b}_to_{a}/R1"]]
        if r1:
            values["retrieval/mean_R1"] = torch.stack(r1).mean()
        return values


@register
class Geometry(Evaluator):
    """Alignment, uniformity (Wang & Isola 2020) and the modality gap (Liang et al. 2022) of
    each declared pair, on normalised and on raw embeddings. With one pair the keys carry no
    pair suffix (``alignment``, ``modality_gap``); with several, ``alignment/<a>_<b>``."""

    name = "geometry"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.pairs = pairs_of(datamodule, module.modalities)
        most = options.get("uniformity_max_items", 4096)
        self.metrics = {
            pair: {
                "alignment": AlignmentUniformity(max_items=most, modalities=pair),
                "gap": ModalityGap(modalities=pair),
                "gap_raw": ModalityGap(normalize=False, modalities=pair),
            }
            for pair in self.pairs
        }
        for metrics in self.metrics.values():
            for metric in metrics.values():
                metric.to(self.device)

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return bool(pairs_of(datamodule, module.modalities))

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        for (a, b), metrics in self.metrics.items():
            for name, metric in metrics.items():
                source = out["raw"] if name == "gap_raw" else out["embeddings"]
                metric.update(source[a], source[b], out["item_id"], out["index"])

    def compute(self) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        several = len(self.pairs) > 1
        for (a, b), metrics in self.metrics.items():
            for metric in metrics.values():
                if not metric.update_count:
                    continue
                for key, value in metric.compute().items():
                    if several and not key.startswith("uniformity/"):
                        key = f"{key}/{a}_{b}"
                    values[key] = value
        return values


def _text_side(module: Any) -> bool:
    """Whether the module has a text encoder and another encoder to classify with it."""
    return "text" in module.towers and module.modalities[0] != "text"


def class_prompt_embeddings(module: Any, classes: list[Any]) -> Tensor:
    """One normalised embedding per class: its prompt's, or the renormalised mean of its
    prompts' normalised embeddings (CLIP's prompt ensembling) when a class has several."""
    rows = []
    for prompts in classes:
        if isinstance(prompts, str):
            rows.append(module.encode_texts([prompts])[0])
        else:
            rows.append(F.normalize(module.encode_texts(list(prompts)).mean(dim=0), dim=-1))
    return torch.stack(rows).detach().float().to(module.device)


@register
class ZeroShot(Evaluator):
    """Zero-shot classification of the item-side embedding against the data's class prompts
    (``datamodule.zero_shot_tasks``: per class one prompt, or a list of template prompts)."""

    name = "zero_shot"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        tasks = dict(getattr(datamodule, "zero_shot_tasks", None) or {})
        with torch.no_grad():
            self.prompts = {t: class_prompt_embeddings(module, c) for t, c in tasks.items()}
        self.metrics = {
            task: ZeroShotAccuracy(num_classes=len(classes)).to(self.device)
            for task, classes in tasks.items()
        }
        self.side = options.get("modality", module.modalities[0])

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return _text_side(module) and bool(getattr(datamodule, "zero_shot_tasks", None))

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        item = out["embeddings"][self.side].float()
        for task, metric in self.metrics.items():
            if task in out["labels"]:
                metric.update(item @ self.prompts[task].T, out["labels"][task], out["index"])

    def compute(self) -> dict[str, Tensor]:
        return {
            f"zero_shot/{task}/accuracy": metric.compute()
            for task, metric in self.metrics.items()
            if metric.update_count
        }


@register
class ZeroShotBinary(Evaluator):
    """Yes/no findings: AUROC of sim(item, positive prompt) - sim(item, negative prompt)."""

    name = "zero_shot_binary"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        tasks = dict(getattr(datamodule, "zero_shot_binary_tasks", None) or {})
        with torch.no_grad():
            self.prompts = {t: class_prompt_embeddings(module, list(p)) for t, p in tasks.items()}
        self.metrics = {task: ZeroShotAUROC().to(self.device) for task in tasks}
        self.side = module.modalities[0]

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return _text_side(module) and bool(getattr(datamodule, "zero_shot_binary_tasks", None))

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        item = out["embeddings"][self.side].float()
        for task, metric in self.metrics.items():
            if task in out["labels"]:
                negative, positive = (item @ self.prompts[task].T).unbind(dim=1)
                metric.update(positive - negative, out["labels"][task], out["index"])

    def compute(self) -> dict[str, Tensor]:
        values = {
            f"zero_shot/{task}/auroc": metric.compute()
            for task, metric in self.metrics.items()
            if metric.update_count
        }
        defined = [v for v in values.values() if not torch.isnan(v)]
        if defined:
            values["zero_shot/mean_auroc"] = torch.stack(defined).mean()
        return values


@register
class Choice(Evaluator):
    """Two-alternative choices the data declares (``choice_tasks``: task -> (batch key,
    modality) of a wrong candidate), anchored on the pair's other modality."""

    name = "choice"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.inputs = dict(getattr(datamodule, "choice_tasks", None) or {})
        self.metrics = {task: ChoiceAccuracy().to(self.device) for task in self.inputs}
        self.pair = tuple(module.modalities[:2])

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return len(module.modalities) >= 2 and bool(getattr(datamodule, "choice_tasks", None))

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        emb = out["embeddings"]
        for task, metric in self.metrics.items():
            key, modality = self.inputs[task]
            anchor = emb[next(m for m in self.pair if m != modality)]
            wrong = self.module.encode_input(batch, modality, key)
            metric.update(
                (anchor * emb[modality]).sum(dim=1), (anchor * wrong).sum(dim=1), out["index"]
            )

    def compute(self) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        for task, metric in self.metrics.items():
            if metric.update_count:
                values |= {f"{task}/{k}": v for k, v in metric.compute().items()}
        return values


@register
class ClassRetrievalEvaluator(Evaluator):
    """Item-to-item retrieval by class (the combination of ``class_retrieval_labels``).

    Option ``subsets: {<subset>: {<label>: [class names]}}``: also retrieval among the items of
    each subset alone (queries and gallery), ``class_retrieval/<subset>/R1`` and ``mAP``; an item
    belongs to a subset when each listed label has one of the listed names. With the classes a
    training stage never saw (e.g. ``data.train_exclude``), that is retrieval of unseen classes.
    """

    name = "class_retrieval"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.labels = tuple(getattr(datamodule, "class_retrieval_labels", None) or ())
        self.metric = ClassRetrieval().to(self.device)
        self.side = options.get("modality", module.modalities[0])
        self.subsets = {
            name: self._label_ids(datamodule, members)
            for name, members in (options.get("subsets") or {}).items()
        }
        self.subset_metrics = {name: ClassRetrieval().to(self.device) for name in self.subsets}

    @staticmethod
    def _label_ids(datamodule: Any, members: dict[str, list[str]]) -> dict[str, Tensor]:
        """Label -> the ids of the listed class names (the data's ``class_names``)."""
        names = dict(getattr(datamodule, "class_names", None) or {})
        ids = {}
        for label, wanted in members.items():
            if label not in names:
                raise ValueError(
                    f"class_retrieval subsets: the data has no class names for {label!r}"
                )
            unknown = sorted(set(wanted) - set(names[label]))
            if unknown:
                raise ValueError(f"class_retrieval subsets: {label} has no classes {unknown}")
            ids[label] = torch.tensor([names[label].index(n) for n in wanted])
        return ids

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return bool(getattr(datamodule, "class_retrieval_labels", None))

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        labels = out["labels"]
        if not all(name in labels for name in self.labels):
            return
        classes = combined_class([labels[n] for n in self.labels], [1024] * len(self.labels))
        embeddings, ids = out["embeddings"][self.side], out["item_id"]
        self.metric.update(embeddings, classes, ids)
        for name, members in self.subsets.items():
            inside = torch.ones_like(classes, dtype=torch.bool)
            for label, wanted in members.items():
                inside &= torch.isin(labels[label], wanted.to(labels[label].device))
            self.subset_metrics[name].update(embeddings[inside], classes[inside], ids[inside])

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        values = {f"class_retrieval/{k}": v for k, v in self.metric.compute().items()}
        for name, metric in self.subset_metrics.items():
            values |= {f"class_retrieval/{name}/{k}": v for k, v in metric.compute().items()}
        return values


@torch.no_grad()
def training_bank(
    module: Any, datamodule: Any, sides: tuple[str, ...], tasks: Iterable[str]
) -> dict[str, Tensor]:
    """Normalised embeddings of the training items (un-augmented, in order), the ``sides``
    concatenated, and their labels: the bank of k-NN and linear probes."""
    was_training = module.training
    module.eval()
    features, labels = [], {task: [] for task in tasks}
    for batch in datamodule.probe_loader("train"):
        batch = {k: v.to(module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        outputs = module.encode(batch)
        features.append(torch.cat([module.normalized(s, outputs[s]).float() for s in sides], 1))
        for task in labels:
            labels[task].append(batch[f"label/{task}"])
    module.train(was_training)
    return {"features": torch.cat(features), **{t: torch.cat(v) for t, v in labels.items()}}


class _Probe(Evaluator):
    """Shared by k-NN and linear probes: a bank of training embeddings per epoch. Option
    ``modality``: one modality, or a list whose normalised embeddings are concatenated (fusion
    at evaluation only, as multimodal methods that train each modality on its own probe)."""

    metric_cls: ClassVar[type]

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        chosen = options.get("modality", module.modalities[0])
        self.sides = (chosen,) if isinstance(chosen, str) else tuple(chosen)
        unknown = sorted(set(self.sides) - set(module.modalities))
        if unknown:
            raise ValueError(
                f"{self.name}.modality: {unknown} not among the data's {list(module.modalities)}"
            )
        labels = dict(getattr(datamodule, "labels", None) or {})
        tasks = options.get("tasks") or list(labels)
        key = ("training_bank", self.sides, tuple(tasks))
        if key not in self.shared:  # k-NN and the linear probe read the same bank
            self.shared[key] = training_bank(module, datamodule, self.sides, tasks)
        bank = self.shared[key]
        extra = {k: v for k, v in options.items() if k not in ("modality", "tasks")}
        self.metrics = {}
        for task in tasks:
            metric = self.metric_cls(num_classes=labels[task], **extra).to(self.device)
            metric.set_bank(bank["features"], bank[task])
            self.metrics[task] = metric

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return (
            len(module.modalities) == 1
            and bool(getattr(datamodule, "labels", None))
            and hasattr(datamodule, "probe_loader")
        )

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        features = torch.cat([out["embeddings"][s].float() for s in self.sides], 1)
        for task, metric in self.metrics.items():
            if task in out["labels"]:
                metric.update(features, out["labels"][task], out["index"])

    def compute(self) -> dict[str, Tensor]:
        return {
            f"{self.name}/{task}/accuracy": metric.compute()
            for task, metric in self.metrics.items()
            if metric.update_count
        }


@register
class KNN(_Probe):
    """Weighted k-NN accuracy against the training-set bank (callbacks.probes)."""

    name = "knn"
    metric_cls = KNNAccuracy


@register
class LinearProbe(_Probe):
    """Linear-probe accuracy, fitted on the training-set bank (callbacks.probes)."""

    name = "linear_probe"
    metric_cls = LinearProbeAccuracy


@register
class Regression(Evaluator):
    """MAE (and GM) overall and per many/medium/few-shot region of each continuous target the
    method predicts (``outputs["prediction/<target>"]``); regions from the training targets."""

    name = "regression"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        targets = options.get("targets") or list(getattr(datamodule, "targets", ()) or ())
        extra = {k: v for k, v in options.items() if k != "targets"}
        self.metrics = {}
        for name in targets:
            metric = RegressionMAE(**extra).to(self.device)
            metric.set_train_targets(torch.as_tensor(datamodule.train_targets(name)))
            self.metrics[name] = metric

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        for name, metric in self.metrics.items():
            prediction = out["outputs"].get(f"prediction/{name}")
            if prediction is not None:
                metric.update(prediction, out["targets"][name], out["index"])

    def compute(self) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        for name, metric in self.metrics.items():
            if metric.update_count:
                values |= {f"regression/{name}/{k}": v for k, v in metric.compute().items()}
        return values


@register
class STS(Evaluator):
    """Spearman correlation (x100) between the cosine of two embeddings and a gold score
    (``options``: ``pair`` of embedding names, ``target`` name; defaults: the data's
    ``sts_pair``, e.g. ``("text", "text@1")`` for sentence pairs, else the first two encoders,
    and ``score``). On by default for data that declares ``sts_pair``."""

    name = "sts"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        default = getattr(datamodule, "sts_pair", None) or module.modalities[:2]
        self.pair = tuple(options.get("pair") or default)
        self.target = options.get("target", "score")
        self.metric = STSSpearman().to(self.device)

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return bool(getattr(datamodule, "sts_pair", None))

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        a, b = self.pair
        emb = {**out["embeddings"], **out["outputs"]}
        self.metric.update(emb[a], emb[b], out["targets"][self.target], out["index"])

    def compute(self) -> dict[str, Tensor]:
        return {"sts/spearman": self.metric.compute()} if self.metric.update_count else {}


@register
class Classifier(Evaluator):
    """Accuracy of the method's classification heads: ``outputs["logits/<name>/<task>"]``
    against ``label/<task>`` (e.g. CLOSE's heads on image and on text embeddings)."""

    name = "classifier"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.metrics: dict[str, ZeroShotAccuracy] = {}

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        for key, logits in out["outputs"].items():
            if not key.startswith("logits/"):
                continue
            name = key.removeprefix("logits/")
            task = name.rsplit("/", 1)[-1]
            if name not in self.metrics:
                self.metrics[name] = ZeroShotAccuracy(logits.shape[1]).to(self.device)
            self.metrics[name].update(logits, out["labels"][task], out["index"])

    def compute(self) -> dict[str, Tensor]:
        return {
            f"classifier/{name}/accuracy": metric.compute()
            for name, metric in self.metrics.items()
            if metric.update_count
        }


@register
class Languages(Evaluator):
    """Per-language retrieval and the Mean Rank Variance of 1-to-K (Nie et al. 2024): the
    method's ``outputs["languages/<caption side>"]`` [B, K, D] (normalised) against the item
    side; ``mrv`` = mean over instances of the spread of their rank over the K languages
    (``options.mrv_kind``: ``std`` as the released analysis code, or ``var``)."""

    name = "languages"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.pair = tuple(module.modalities[:2])
        self.kind = options.get("mrv_kind", "std")
        self.metrics: list[RetrievalWithRanks] = []

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        item, caption = self.pair
        texts = out["outputs"].get(f"languages/{caption}")
        if texts is None:
            return
        if not self.metrics:
            self.metrics = [
                RetrievalWithRanks(ks=(1,), modalities=self.pair).to(self.device)
                for _ in range(texts.shape[1])
            ]
        image = out["embeddings"][item]
        for k, metric in enumerate(self.metrics):
            metric.update(image, texts[:, k], out["item_id"], out["index"])

    def compute(self) -> dict[str, Tensor]:
        if not self.metrics:
            return {}
        a, b = self.pair
        values: dict[str, Tensor] = {}
        ranks: dict[str, list[Tensor]] = {"item": [], "caption": []}
        for k, metric in enumerate(self.metrics):
            result = metric.compute()
            for direction in (f"{a}_to_{b}", f"{b}_to_{a}"):
                values[f"languages/lang{k}/{direction}/R1"] = result[f"{direction}/R1"]
            for side in ranks:
                ranks[side].append(result[f"ranks/{side}"])
        mrv = {
            f"{a}_to_{b}": mean_rank_variance(torch.stack(ranks["item"]), self.kind),
            f"{b}_to_{a}": mean_rank_variance(torch.stack(ranks["caption"]), self.kind),
        }
        values |= {f"languages/{d}/mrv": value.float() for d, value in mrv.items()}
        values["languages/mrv"] = torch.stack(list(mrv.values())).mean().float()
        values["languages/mean_R1"] = torch.stack(
            [v for key, v in values.items() if key.endswith("/R1")]
        ).mean()
        return values


def default_evaluators(module: Any, datamodule: Any) -> dict[str, dict[str, Any]]:
    """The evaluations that apply to this data and method by default (name -> no options)."""
    return {name: {} for name, cls in EVALUATORS.items() if cls.applies(module, datamodule)}


def chosen_evaluators(
    module: Any, datamodule: Any, config: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The evaluations of a run: the data's defaults (or ``evaluation.evaluators`` when set),
    plus the method's own, minus ``evaluation.exclude``; options from the method, overridden by
    ``evaluation.options.<name>``."""
    config = config or {}
    listed = config.get("evaluators")
    chosen = default_evaluators(module, datamodule) if listed is None else {n: {} for n in listed}
    for name, options in module.evaluators().items():
        chosen[name] = {**chosen.get(name, {}), **options}
    for name, options in (config.get("options") or {}).items():
        chosen.setdefault(name, {}).update(options)
    for name in config.get("exclude") or ():
        chosen.pop(name, None)
    unknown = sorted(set(chosen) - set(EVALUATORS))
    if unknown:
        raise ValueError(f"evaluation: unknown evaluator(s) {unknown}; known: {sorted(EVALUATORS)}")
    return chosen


def monitor_of(evaluators: dict[str, dict[str, Any]], datamodule: Any) -> tuple[str, str] | None:
    """The validation metric the best checkpoint is chosen by, and its mode."""
    if "retrieval" in evaluators:
        return "val/retrieval/mean_R1", "max"
    for name in ("knn", "linear_probe"):
        if name in evaluators:
            tasks = evaluators[name].get("tasks") or list(getattr(datamodule, "labels", {}))
            if tasks:
                return f"val/{name}/{tasks[0]}/accuracy", "max"
    if "sts" in evaluators:
        return "val/sts/spearman", "max"
    if "regression" in evaluators:
        targets = evaluators["regression"].get("targets") or list(datamodule.targets)
        return f"val/regression/{targets[0]}/MAE", "min"
    return None
