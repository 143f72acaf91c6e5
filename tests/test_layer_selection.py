"""Mutual k-NN and the Rice rule against slow references, the layer taps on tiny towers, and the
STRUCTURE module around them: heads on the selected layer, frozen towers, layer selection."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from experiments.stages import fit_context
from modules.base import load_checkpoint
from modules.layer_selection import layer_scores, mutual_knn, nearest_neighbours, rice_k
from modules.structure import Structure
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, tiny_batch, word_state

VOCAB = WordTokenizer.build(["a red circle", "a blue square left of it"]).vocab
TEXTS = ["a red circle", "a blue square", "a red square", "left of it", "a blue circle"]


def make(text=None, image=None, **method):
    return Structure(
        method={"name": "structure", "align_dim": 12, **method},
        model={
            **MODEL,
            "image": image or MODEL["image"],
            "text": {**MODEL["text"], "depth": 2, **(text or {})},
            "frozen": ["image", "text"],
            "temperature": 0.05,
            "learnable_temperature": False,
        },
        optim={**OPTIM, "warmup_steps": 0},
        tokenizer=word_state(VOCAB),
        context={"modalities": ["image", "text"], "image_size": 16, "max_text_len": 8},
    )


def batch(size: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    return tiny_batch(VOCAB, [TEXTS[i % 5] for i in range(size)], seed)


def slow_mutual_knn(a, b, k):
    def neighbours(x):
        unit = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in x.tolist()]
        out = []
        for i, row in enumerate(unit):
            sims = [
                (sum(p * q for p, q in zip(row, other, strict=True)), j)
                for j, other in enumerate(unit)
            ]
            out.append({j for _, j in sorted((s for s in sims if s[1] != i), reverse=True)[:k]})
        return out

    na, nb = neighbours(a), neighbours(b)
    return sum(len(x & y) / k for x, y in zip(na, nb, strict=True)) / len(na)


def test_rice_rule():
    assert rice_k(5000) == 35
    assert rice_k(1000) == 20 and rice_k(27) == 6 and rice_k(100) == 10
    assert rice_k(3) == 2  # never more neighbours than other samples


def test_mutual_knn_against_a_slow_reference():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(14, 6, generator=g, dtype=torch.float64)
    b = a[:, :4] + 0.7 * torch.randn(14, 4, generator=g, dtype=torch.float64)
    for k in (1, 3, 5):
        assert mutual_knn(a, b, k) == pytest.approx(slow_mutual_knn(a, b, k))
    assert 0.0 < mutual_knn(a, b, 3) < 1.0
    assert nearest_neighbours(a, 3).shape == (14, 3)
    assert (nearest_neighbours(a, 3) != torch.arange(14)[:, None]).all()  # self excluded


def test_mutual_knn_is_one_for_identical_and_row_rescaled_features():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 8, generator=g)
    assert mutual_knn(x, x.clone(), rice_k(40)) == 1.0
    # features are normalised first: rescaling rows keeps every neighbour
    scales = torch.rand(40, 1, generator=g) * 10 + 0.1
    assert mutual_knn(x, x * scales, 5) == 1.0
    # and the score is about the k-NN sets, not the widths: a rotation into more dimensions
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    assert mutual_knn(x, torch.cat([x, torch.zeros(40, 4)], 1) @ q, 5) == 1.0


def test_layer_scores_find_the_planted_pair():
    g = torch.Generator().manual_seed(2)
    shared = torch.randn(30, 6, generator=g)
    image = [torch.randn(30, 5, generator=g), shared * 2, torch.randn(30, 7, generator=g)]
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    text = [shared @ rotation, torch.randn(30, 3, generator=g)]
    scores = layer_scores(image, text, 4)
    assert scores.shape == (3, 2)
    assert divmod(int(scores.argmax()), 2) == (1, 0) and scores[1, 0] == 1.0
    assert scores[0, 1] == pytest.approx(mutual_knn(image[0], text[1], 4))


def test_taps_give_every_layer_and_the_tower_returns_the_selected_one():
    module = make().eval()
    b = batch()
    image, text = module.towers["image"], module.towers["text"]
    out = image(b)
    x, stages = b["image"], []
    for stage in image.stages:
        x = stage(x)
        stages.append(x.mean(dim=(2, 3)))
    want_output = image.head(x.flatten(2).transpose(1, 2).mean(1))
    got = module.taps["image"].features
    assert module.taps["image"].names == ["block0", "block1", "output"]
    for g, w in zip(got, [*stages, want_output], strict=True):
        torch.testing.assert_close(g, w)
    torch.testing.assert_close(out.pooled, want_output)  # default: the last layer
    assert out.tokens is None

    # text: each block's [CLS] token; with mean pooling, the masked token mean
    ids, mask = b["text_ids"], b["text_mask"]
    h = text.embed(ids) + text.pos[:, : ids.shape[1]]
    blocks = []
    for layer in text.encoder.layers:
        h = layer(h, src_key_padding_mask=~mask)
        blocks.append(h)
    text(b)
    for g, w in zip(module.taps["text"].features[:2], blocks, strict=True):
        torch.testing.assert_close(g, w[:, 0])
    mean_module = make(text={"pooling": "mean"}, text_layer=0)
    mean_module.towers.load_state_dict(module.towers.state_dict())
    out = mean_module.towers["text"](b)
    weights = mask[..., None].float()
    torch.testing.assert_close(out.pooled, (blocks[0] * weights).sum(1) / weights.sum(1))
    assert out.mask is mask


def test_vit_taps_read_each_blocks_cls_token():
    vit = {"name": "vit", "patch_size": 8, "width": 16, "depth": 2, "heads": 2}
    module = make(image=vit, image_layer=0).eval()
    b = batch()
    tower = module.towers["image"]
    patches = tower.patchify(b["image"]).flatten(2).transpose(1, 2)
    x = torch.cat([tower.cls.expand(len(patches), -1, -1), patches], dim=1) + tower.pos
    torch.testing.assert_close(tower(b).pooled, tower.encoder.layers[0](x)[:, 0])
    assert module.taps["image"].widths == [16, 16, 16]


def test_embeddings_are_the_heads_on_the_selected_layer():
    module = make(image_layer=1, text_layer=0).eval()
    assert module.heads["image"].in_features == 16  # cnn stage 1 (channels [8, 16])
    assert module.heads["text"].out_features == 12
    outputs = module.encode(batch())
    torch.testing.assert_close(
        module.embedding("image", outputs["image"]),
        module.heads["image"](module.taps["image"].features[1]),
    )
    assert module.encode_texts(["a red circle"]).shape == (1, 12)
    result = module.validation_step(batch(), 0)
    assert result["embeddings"]["image"].shape == (5, 12)


def test_frozen_towers_stay_bit_identical_and_only_heads_train():
    module = make(warmup=0)
    towers = {k: v.clone() for k, v in module.towers.state_dict().items()}
    heads = {k: v.clone() for k, v in module.heads.state_dict().items()}
    optimizer = module.configure_optimizers()["optimizer"]
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in module.heads.parameters()}  # fixed temperature
    module.train()
    assert not module.towers["image"].training and not module.towers["text"].training
    terms = module.losses(b := batch(), module.encode(b))
    assert terms["structure"].item() > 0  # lam from the start when warmup is 0
    module.total_loss(terms).backward()
    assert all(p.grad is None for p in module.towers.parameters())
    optimizer.step()
    for k, v in module.towers.state_dict().items():
        assert torch.equal(v, towers[k]), k
    assert any(not torch.equal(v, heads[k]) for k, v in module.heads.state_dict().items())


def test_structure_term_follows_the_warmup_and_lambda_zero_is_plain_clip():
    module = make(warmup=10).eval()
    terms = module.losses(b := batch(), module.encode(b))
    assert terms["structure"].item() == 0.0  # step 0
    assert terms["r_image"].item() > 0 and terms["r_text"].item() > 0  # still logged
    baseline = make(lam=0.0).eval()
    baseline.load_state_dict(module.state_dict())
    terms = baseline.losses(b, baseline.encode(b))
    assert terms["structure"].item() == 0.0
    torch.testing.assert_close(baseline.total_loss(terms), terms["clip"])


class PairsData:
    """What prepare_fit reads through its context: the training items, in order."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(3)
        ids, mask = WordTokenizer(VOCAB, max_len=8).encode([TEXTS[i % 5] for i in range(n)])
        self.samples = [
            {"image": torch.randn(3, 16, 16, generator=g), "text_ids": ids[i], "text_mask": mask[i]}
            for i in range(n)
        ]

    def num_items(self, split: str) -> int:
        return len(self.samples)

    def ordered_loader(self, split: str, indices: list[int] | None = None) -> DataLoader:
        assert split == "train"
        samples = self.samples if indices is None else [self.samples[i] for i in indices]
        return DataLoader(samples, batch_size=7)

    def group_batches(self, groups: object) -> None:
        raise AssertionError("structure draws no batch groups")


def test_layer_selection_picks_the_best_pair_and_checkpoints_rebuild_it(tmp_path):
    torch.manual_seed(0)
    module = make(selection_samples=20)
    data = PairsData(25)
    torch.manual_seed(1)
    ctx = fit_context(data, [])
    module.prepare_fit(ctx)
    sel = module.selection
    assert sel["n"] == 20 and sel["k"] == rice_k(20)
    assert sel["scores"].shape == (3, 3)  # (block0, block1, output) x (block0, block1, output)
    best = divmod(int(sel["scores"].argmax()), 3)
    assert (sel["image"], sel["text"]) == best
    assert module.taps["image"].selected == best[0] and module.taps["text"].selected == best[1]
    assert module.heads["image"].in_features == module.taps["image"].widths[best[0]]

    # the score matrix is mutual k-NN of the same 20 pairs' layer features
    torch.manual_seed(1)
    picked = torch.randperm(25)[:20].tolist()
    chosen = DataLoader([data.samples[i] for i in picked], batch_size=20)
    with torch.no_grad():
        module.towers["image"](next(iter(chosen)))
        module.towers["text"](next(iter(chosen)))
    image_layers, text_layers = module.taps["image"].features, module.taps["text"].features
    assert sel["scores"][2, 1].item() == pytest.approx(
        mutual_knn(image_layers[2], text_layers[1], rice_k(20))
    )

    # the chosen layers travel in the hyper-parameters: a checkpoint rebuilds the same heads
    path = tmp_path / "structure.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    saved = load_checkpoint(str(path))
    rebuilt = Structure(**saved["hyper_parameters"])
    rebuilt.load_state_dict(saved["state_dict"], strict=True)
    b = batch()
    torch.testing.assert_close(
        F.normalize(rebuilt.eval().embedding("image", rebuilt.encode(b)["image"])),
        F.normalize(module.eval().embedding("image", module.encode(b)["image"])),
    )


def test_config_is_checked():
    with pytest.raises(ValueError, match="model.frozen"):
        Structure(
            method={"name": "structure"},
            model=MODEL,
            optim=OPTIM,
            tokenizer=word_state(VOCAB),
            context={"modalities": ["image", "text"], "image_size": 16, "max_text_len": 8},
        )
    with pytest.raises(ValueError, match="image_layer"):
        make(image_layer=3)
    with pytest.raises(ValueError, match="js_form"):
        make(js_form="jsd")
