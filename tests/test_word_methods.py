"""The word-embedding methods on tiny word_corpora data: word_alignment's closed-form solve
(modules/word_alignment.py), CADE's frozen compass (modules/cade.py, the spec's unit tests of
methods/part2.md Sec. 51) and the CBOW stage's vocabulary counts (modules/word2vec.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from callbacks.word_translation import WordTranslationPrecision
from experiments.config import load_experiment
from experiments.stages import build
from modules.base import FitContext

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["data.num_train=150", "data.min_count=2", "data.batch_size=16", "model.embed_dim=16"]


def stage(tmp_path: Path, yaml: str, index: int, *extra: str):
    """(datamodule, module) of stage ``index`` of ``yaml`` on tiny data."""
    stages = load_experiment(EXPERIMENTS / yaml, [*TINY, f"data.cache_dir={tmp_path}", *extra])
    prefix = f"stages.{stages[index].name}."
    stages = load_experiment(
        EXPERIMENTS / yaml,
        [*TINY, f"data.cache_dir={tmp_path}", *extra, *(prefix + o for o in TINY)],
    )
    torch.manual_seed(0)
    return build(stages[index].plain)


def context(datamodule, earlier) -> FitContext:
    return FitContext(
        earlier=earlier,
        num_items=datamodule.num_items("train"),
        loader=lambda indices: datamodule.ordered_loader("train", indices),
        group_batches=datamodule.group_batches,
    )


def rotated_spaces(tmp_path: Path):
    """An embed-stage CBOW whose corpus B table is a rotation of corpus A's on the lexicon."""
    embed_data, cbow = stage(tmp_path, "si_en_alignment.yaml", 0)
    cbow.prepare_fit(context(embed_data, []))
    words = embed_data.index
    corpora = embed_data.corpora
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        table_a = cbow.input_vectors("corpus_a")
        table_a.normal_(generator=torch.Generator().manual_seed(2))
        for a, b in corpora.train_pairs + corpora.test_pairs:
            cbow.input_vectors("corpus_b")[words[b]] = rotation @ table_a[words[a]]
    return cbow, rotation


@pytest.mark.parametrize("init", ["procrustes", "refine"])
def test_alignment_recovers_a_rotation_and_translates_every_test_word(tmp_path, init) -> None:
    cbow, rotation = rotated_spaces(tmp_path)
    data, module = stage(tmp_path, "si_en_alignment.yaml", 1, f"stages.align.method.init={init}")
    module.prepare_fit(context(data, [cbow]))
    # refinement also pairs the words outside the lexicon (punctuation, unrotated rows)
    tolerance = 1e-4 if init == "procrustes" else 0.5
    assert torch.linalg.norm(module.mapping.detach() - rotation) < tolerance
    metric = WordTranslationPrecision()
    module.eval()
    with torch.no_grad():
        data.setup("test")
        for batch in data.test_dataloader():
            out = module.encode(batch)
            emb = {
                n: torch.nn.functional.normalize(module.embedding(n, out[n]), dim=-1) for n in out
            }
            metric.update(
                emb["corpus_a"],
                emb["corpus_b"],
                batch["label/source"],
                batch["label/target"],
                batch["label/gold"],
                batch["index"],
            )
    result = metric.compute()
    assert result["nn/P1"] == 100.0 and result["csls/P1"] == 100.0


def test_rcsls_steps_lower_the_loss_from_the_procrustes_map(tmp_path) -> None:
    """Spaces that are a rotation plus noise: RCSLS moves the map from Procrustes and lowers
    its loss (only the map trains; the tables stay frozen)."""
    cbow, _ = rotated_spaces(tmp_path)
    with torch.no_grad():
        table = cbow.input_vectors("corpus_b")
        table.add_(0.3 * torch.randn(table.shape, generator=torch.Generator().manual_seed(3)))
    data, module = stage(tmp_path, "si_en_alignment.yaml", 1)
    module.prepare_fit(context(data, [cbow]))
    trained = [name for name, p in module.named_parameters() if p.requires_grad]
    assert trained == ["mapping"]
    batch = next(iter(data.train_dataloader()))
    optimiser = torch.optim.SGD([module.mapping], lr=0.5)
    first = module.losses(batch, module.encode(batch))["rcsls"]
    for _ in range(5):
        optimiser.zero_grad()
        module.losses(batch, module.encode(batch))["rcsls"].backward()
        optimiser.step()
    assert module.losses(batch, module.encode(batch))["rcsls"] < first


def test_cbow_counts_each_corpus_words(tmp_path) -> None:
    data, cbow = stage(tmp_path, "si_en_alignment.yaml", 0)
    cbow.prepare_fit(context(data, []))
    words = data.words
    in_a = {words[i] for i in torch.nonzero(cbow.counts[0]).flatten()}
    assert in_a and all(not w.endswith("q1") for w in in_a)
    assert all(
        words[i].endswith("q1") or not words[i].isalnum()
        for i in torch.nonzero(cbow.counts[1]).flatten()
    )


def test_cade_trains_slices_against_a_bit_identical_compass(tmp_path) -> None:
    data, compass = stage(tmp_path, "cade.yaml", 0)
    with torch.no_grad():
        compass.output_vectors("corpus_a").normal_()
    _, cade = stage(tmp_path, "cade.yaml", 1)
    cade.prepare_fit(context(data, [compass]))
    before = cade.compass.clone()
    assert torch.equal(before, compass.output_vectors("corpus_a").detach())
    # identical slices: same init, same windows and negatives in both corpora
    with torch.no_grad():
        cade.towers["corpus_b"].table.weight.copy_(cade.towers["corpus_a"].table.weight)
    optimiser = torch.optim.SGD([p for p in cade.parameters() if p.requires_grad], lr=0.5)
    for batch in list(data.train_dataloader())[:3]:
        for key in ("", "center/", "negatives/"):
            batch[f"{key}corpus_b"] = batch[f"{key}corpus_a"]
        optimiser.zero_grad()
        cade.total_loss(cade.losses(batch, cade.encode(batch))).backward()
        optimiser.step()
    assert not cade.compass.requires_grad and cade.compass.grad is None
    assert torch.equal(cade.compass, before)
    a, b = (cade.towers[n].table.weight for n in ("corpus_a", "corpus_b"))
    assert torch.equal(a, b) and not torch.equal(a, compass.towers["corpus_a"].table.weight)
