"""DSE, Distilled Sentence Embedding (Barkan et al., "Scalable Attentive Sentence-Pair Modeling
via Distilled Sentence Embedding", AAAI 2020; methods/part2.md section 36).

A cross-attentive pair model (the teacher: one transformer over the concatenated pair, BERT's
sentence-pair classifier) is accurate but must run once per pair; scoring N queries against M
candidates costs N x M transformer passes. DSE distils it into a siamese sentence encoder ``E``:
``u = E(a)``, ``v = E(b)``, pair logits ``z_s = g([u; v; u * v; |u - v|])`` with ``g`` an MLP
``4d -> 512 -> ReLU -> C`` (the code's ``fc_dims = [512, 1]`` for a binary task), trained on

    L = (1 - alpha) L_task(z_s, y) + alpha (1/B) sum_b ||z_s[b] - z_t[b]||^2

(modules/losses/dse.py). Sentence embeddings are then computed once per sentence and a pair
costs only the small head ``g`` (benchmarks/dse_scoring.py measures the speed-up).

Two methods here, chained by experiments/dse.yaml:

- ``cross_encoder`` (:class:`CrossEncoder`): the teacher stage, the text tower over
  ``[a; b]`` (the two token rows joined: ``<cls> a <cls> b`` with the word-level tokenizer, whose
  ``<cls>`` doubles as the separator, ``[CLS] a [SEP] b [SEP]`` with WordPiece), a linear
  two-class head on the first token (BERT's classifier reads ``[CLS]``), cross-entropy;
- ``dse`` (:class:`DSE`): the student; its frozen teacher is the cross-encoder stage named by
  both ``teacher_from`` (the towers, kept with the student's checkpoint by the base) and
  ``features_from`` (its pair head, copied by ``prepare_fit``; a method may not override
  ``set_teacher``). The paper stores the teacher's logits offline as a data column; here the
  frozen teacher scores each training batch (the same numbers: the teacher is fixed
  and a training sample is fixed by its index), so no cache has to be kept in step with the
  data. With ``alpha = 0`` the student is the same bi-encoder trained on the labels alone
  (the baseline of the claim; the teacher is not run).

Data: ``sentences`` with ``data.train: paraphrase_nli`` (the YAMLs; ``nli`` works too): each
training triple ``text@0..2`` gives two labelled pairs, (``text@0``, ``text@1``) -> 1 and
(``text@0``, ``text@2``) -> 0; with ``paraphrase_nli`` the positive is a paraphrase (the same
meaning, what the test's ``label/paraphrase`` calls positive) and the negative the contradiction
(``nli``'s entailment drops a factor, so its positives are not what the test calls
paraphrases). Evaluation: the STS pairs' ``label/paraphrase`` (same meaning),
``classifier/pair/paraphrase/accuracy`` from the pair logits (the student's one logit is shown
to the evaluator as ``[0, z]``: argmax = ``z > 0``), and the sentence embeddings'
``sts/spearman``.

Choices (checked against ``microsoft/Distilled-Sentence-Embedding``):

- alpha = 0.5 (``--distillation_coeff`` default; the paper's "score reconstruction" reading,
  alpha = 1, is an option); squared error summed over logits (``dse_trainer.py``);
- binary task: one student logit, BCE with logits, teacher logit ``z_1 - z_0``
  (``dse_configurable_trainer.py``);
- the pair feature order ``[u, v, u*v, |u-v|]`` (``feature_extractors.py``), no extra embedding
  layer (``--additional_embedding_layer_size -1``), ReLU between the fc layers
  (``dse_siamese_classifier.py``);
- scoped down: the code's default pooler concatenates the mean over tokens of the top 4 BERT
  layers; here the student's sentence embedding is the tower's pooled projection (set
  ``model.text.pooling: mean`` for the mean over tokens), as every method of the platform reads
  it; the teacher is trained here (a small cross-encoder) instead of a fine-tuned BERT-large,
  and the student starts from the same initialisation as the teacher (random, or MiniLM),
  as the paper's student starts from the teacher's pretrained BERT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from modules.base import AlignmentModule, FitContext, MethodConfig
from modules.losses.dse import binary_teacher_logit, dse_terms, pair_features
from modules.registry import METHODS
from modules.towers.output import TowerOutput

#: Training views of the triples (``nli`` / ``paraphrase_nli``): anchor, positive, negative.
PREMISE, ENTAILED, CONTRADICTED = "text@0", "text@1", "text@2"
#: The evaluation pair (an STS pair's two sentences).
FIRST, SECOND = "text", "text@1"


def join_pairs(
    a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor], max_len: int, skip_first_of_b: bool
) -> tuple[Tensor, Tensor]:
    """The token rows of sentence pairs for a cross-encoder: row ``i`` is ``a[i]``'s real tokens
    followed by ``b[i]``'s (without its first token when ``skip_first_of_b``: WordPiece's
    ``[CLS] a [SEP]`` + ``b [SEP]``), padded with 0 to ``La + Lb`` (the two batches' padded
    widths, so that every micro-batch of one batch gets the same width) and cut to ``max_len``
    (the tower's positions). ``a``, ``b``: (ids [B, L], mask [B, L])."""
    (ids_a, mask_a), (ids_b, mask_b) = a, b
    skip = int(skip_first_of_b)
    width = min(ids_a.shape[1] + ids_b.shape[1] - skip, max_len)
    ids = ids_a.new_zeros(ids_a.shape[0], width)
    for i in range(ids_a.shape[0]):
        row = torch.cat([ids_a[i][mask_a[i]], ids_b[i][mask_b[i]][skip:]])[:width]
        ids[i, : row.numel()] = row
    lengths = mask_a.sum(1) + mask_b.sum(1) - skip
    mask = torch.arange(width, device=ids.device)[None, :] < lengths.clamp(max=width)[:, None]
    return ids, mask


def tokens_of(batch: dict[str, Any], key: str) -> tuple[Tensor, Tensor]:
    """The token ids and mask of the sentence ``key`` of a batch (``text``, ``text@1``, ...)."""
    return batch[f"{key}_ids"], batch[f"{key}_mask"]


class PairEncoding:
    """How the cross-encoder joins two sentences, shared by the teacher stage and the student
    that reads it (the same tokenizer: the student's comes from the teacher's checkpoint)."""

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer is None:
            raise ValueError("a cross-encoder needs the text tower's tokenizer")
        self.max_len = tokenizer.max_len
        # WordPiece rows end with [SEP]: the second sentence drops its [CLS]
        self.skip_first_of_b = getattr(tokenizer, "sep_id", None) is not None

    def __call__(self, batch: dict[str, Any], a: str, b: str) -> dict[str, Tensor]:
        ids, mask = join_pairs(
            tokens_of(batch, a), tokens_of(batch, b), self.max_len, self.skip_first_of_b
        )
        return {"text_ids": ids, "text_mask": mask}


def first_token(output: TowerOutput) -> Tensor:
    """The projected state of the first token (``[CLS]`` / ``<cls>``) [B, D], whatever the
    tower's pooling (the projection acts token-wise)."""
    if output.tokens is None:
        raise ValueError("the cross-encoder needs the text tower's token outputs")
    return output.tokens[:, 0]


@dataclass
class CrossEncoderConfig(MethodConfig):
    name: str = "cross_encoder"
    num_classes: int = 2  # BERT's sequence classifier: two logits for a binary task
    task: str = "paraphrase"  # the evaluation label the pair logits are scored on
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_classes != 2:
            raise ValueError(f"num_classes: the pair task is binary (2), got {self.num_classes}")


@METHODS.register("cross_encoder", CrossEncoderConfig)
class CrossEncoder(AlignmentModule):
    """The teacher: the text tower over the joined pair, a linear head on the first token,
    cross-entropy on entailment (1) vs contradiction (0)."""

    loss_terms: ClassVar[tuple[str, ...]] = ("task",)
    num_encoders = 1
    loss_on_eval = False  # evaluation batches are STS pairs, not the training triples
    deterministic_overrides = {"model.text.dropout": 0.0}  # BERT-style dropout in the tower

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_nli(self.views, self.method_cfg.name)
        self.pairs = PairEncoding(self.tokenizer)
        self.pair_head = nn.Linear(self.hparams["model"]["embed_dim"], self.method_cfg.num_classes)

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Training: the two joined pairs of each triple (``pair@1``: premise + entailment,
        ``pair@2``: premise + contradiction). Evaluation: the STS pair joined (``pair``) and,
        for the data's embedding evaluators, each sentence alone."""
        tower = self.towers["text"]
        if PREMISE in _views_in(batch):
            return {
                "pair@1": tower(self.pairs(batch, PREMISE, ENTAILED)),
                "pair@2": tower(self.pairs(batch, PREMISE, CONTRADICTED)),
            }
        return {**super().encode(batch), "pair": tower(self.pairs(batch, FIRST, SECOND))}

    def pair_logits(self, output: TowerOutput) -> Tensor:
        """Two-class logits [B, 2] of joined pairs."""
        return self.pair_head(first_token(output))

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        logits = torch.cat(
            [self.pair_logits(outputs["pair@1"]), self.pair_logits(outputs["pair@2"])]
        )
        return {"task": nn.functional.cross_entropy(logits, _triple_labels(logits))}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        return {"classifier": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        return {f"logits/pair/{self.method_cfg.task}": self.pair_logits(outputs["pair"])}


@dataclass
class DSEConfig(MethodConfig):
    name: str = "dse"
    alpha: float = 0.5  # distillation_coeff (code default); 0: labels only; 1: logits only
    hidden: int = 512  # fc_dims = [512, 1]
    task: str = "paraphrase"
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha: must be in [0, 1], got {self.alpha}")
        if self.hidden < 1:
            raise ValueError(f"hidden: must be >= 1, got {self.hidden}")


@METHODS.register("dse", DSEConfig)
class DSE(AlignmentModule):
    """The student: one sentence encoder for both sentences, the pair head ``g`` on
    ``[u; v; u*v; |u-v|]``, distilled from a frozen cross-encoder (``teacher_from``)."""

    loss_terms: ClassVar[tuple[str, ...]] = ("task", "distillation")
    requires_teacher = True
    num_encoders = 1
    loss_on_eval = False
    deterministic_overrides = {"model.text.dropout": 0.0}  # BERT-style dropout in the tower

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_nli(self.views, self.method_cfg.name)
        dim = self.hparams["model"]["embed_dim"]
        self.head = nn.Sequential(
            nn.Linear(4 * dim, self.method_cfg.hidden),
            nn.ReLU(),
            nn.Linear(self.method_cfg.hidden, 1),
        )
        self.pairs = PairEncoding(self.tokenizer)
        #: The cross-encoder's classifier, frozen beside the teacher's towers (``prepare_fit``).
        self.teacher_head = nn.Linear(dim, 2).requires_grad_(False)

    @torch.no_grad()
    def prepare_fit(self, ctx: FitContext) -> None:
        """The teacher's head: the pair head of the cross-encoder stage that ``features_from``
        names, the stage whose towers ``teacher_from`` froze (checked: the same weights)."""
        earlier = ctx.earlier
        if len(earlier) != 1 or not isinstance(earlier[0], CrossEncoder):
            raise ValueError(
                "features_from: dse reads one cross_encoder stage (its teacher_from), got "
                f"{[type(m).__name__ for m in earlier]}"
            )
        teacher = earlier[0]
        same = all(
            torch.equal(a, b.to(a.dtype))
            for a, b in zip(
                self.teacher["text"].state_dict().values(),
                teacher.towers["text"].state_dict().values(),
                strict=True,
            )
        )
        if not same:
            raise ValueError(
                "teacher_from and features_from must name the same cross_encoder stage"
            )
        self.teacher_head.load_state_dict(teacher.pair_head.state_dict())

    def pair_logits(self, u: Tensor, v: Tensor) -> Tensor:
        """The student's logit [B, 1] of pairs of sentence embeddings."""
        return self.head(pair_features(u, v))

    @torch.no_grad()
    def teacher_logits(self, batch: dict[str, Any], a: str, b: str) -> Tensor:
        """The frozen cross-encoder's logit ``z_1 - z_0`` [B, 1] of the pairs (a, b)."""
        out = self.teacher["text"](self.pairs(batch, a, b))
        return binary_teacher_logit(self.teacher_head(first_token(out)))

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        u = {k: self.embedding("text", outputs[k]) for k in (PREMISE, ENTAILED, CONTRADICTED)}
        student = torch.cat(
            [
                self.pair_logits(u[PREMISE], u[ENTAILED]),
                self.pair_logits(u[PREMISE], u[CONTRADICTED]),
            ]
        )
        alpha = self.method_cfg.alpha
        teacher = None
        if alpha > 0:
            teacher = torch.cat(
                [
                    self.teacher_logits(batch, PREMISE, ENTAILED),
                    self.teacher_logits(batch, PREMISE, CONTRADICTED),
                ]
            ).to(student.dtype)
        return dse_terms(student, _triple_labels(student), teacher, alpha)

    def evaluators(self) -> dict[str, dict[str, Any]]:
        return {"classifier": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        z = self.pair_logits(
            self.embedding("text", outputs[FIRST]), self.embedding("text", outputs[SECOND])
        )
        return {f"logits/pair/{self.method_cfg.task}": torch.cat([torch.zeros_like(z), z], dim=1)}


def _views_in(batch: dict[str, Any]) -> set[str]:
    return {k.removesuffix("_ids") for k in batch if k.endswith("_ids")}


def _triple_labels(logits: Tensor) -> Tensor:
    """Labels of ``cat(entailed pairs, contradicted pairs)``: B ones, then B zeros."""
    half = logits.shape[0] // 2
    return torch.cat([logits.new_ones(half), logits.new_zeros(half)]).long()


def _check_nli(views: dict[str, int], method: str) -> None:
    if views.get("text") != 3:
        raise ValueError(
            f"method {method} trains on (anchor, positive, negative) triples: set data.train: "
            f"nli or paraphrase_nli (the data has {views.get('text', 0)} training views of text)"
        )
