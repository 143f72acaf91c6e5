"""CoMix (modules/comix.py) and its data (datamodules/video_domains.py): the two-domain
moving-shapes generator, batches that keep the target's labels out of training, the UCF-HMDB /
Jester list reader (a malformed line is a one-line DataError naming file and line), and the
method's views, terms and switches. The SupCon loss itself: tests/test_losses_supcon.py and
tests/conformance/cases_supcon.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.embedded.video_domains import ACTIONS, VideoDomainsConfig, generate
from datamodules.errors import DataError
from datamodules.formats.da_lists import read_video_list
from datamodules.video_domains import VideoDomainsDataConfig, VideoDomainsDataModule
from experiments.config import load_experiment
from experiments.stages import build
from modules.comix import CoMixConfig, background_mix, slow_frames

YAML = Path(__file__).resolve().parents[1] / "experiments" / "comix.yaml"
TINY = [
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=8",
    "method.warm_start_steps=0",
]


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    datamodule, module = build(load_experiment(YAML, TINY)[-1].plain)
    datamodule.setup("fit")
    return datamodule, module


def test_generator_is_deterministic_and_the_domains_differ_only_in_background():
    cfg = VideoDomainsConfig(num_train=24, num_val=4, num_test=4)
    source, labels = generate(cfg, "train", "source")
    again, labels_again = generate(cfg, "train", "source")
    target, _ = generate(cfg, "train", "target")
    assert np.array_equal(source, again) and np.array_equal(labels, labels_again)
    assert source.shape == (24, 8, 32, 32, 3) and set(labels) <= set(range(len(ACTIONS)))
    assert target.mean() > source.mean() + 40  # bright striped colour vs dark grey
    grey = source[..., 0] == source[..., 1]
    assert grey.mean() > 0.8 and (target[..., 0] == target[..., 1]).mean() < 0.2


def test_actions_need_time():
    """A move left played backwards is a move right: the frames of one clip are the same set."""
    cfg = VideoDomainsConfig(num_train=40, num_val=4, num_test=4)
    clips, labels = generate(cfg, "train", "target")
    moving = clips[labels == ACTIONS.index("left")][0]
    static_changes = np.abs(np.diff(moving.astype(int), axis=0)).sum(axis=(1, 2, 3))
    assert (static_changes > 0).sum() >= 4  # the shape moves over the clip
    vanish = clips[labels == ACTIONS.index("disappear")][0]
    assert not np.array_equal(vanish[0], vanish[-1])


def test_training_batches_hold_source_labels_and_unlabelled_target_clips(built):
    datamodule, _ = built
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["video"].shape == batch["target_video"].shape == (8, 8, 3, 32, 32)
    assert [k for k in batch if k.startswith("label/")] == ["label/action"]
    source = datamodule.source.split("train")
    assert torch.equal(
        batch["label/action"], torch.as_tensor(source.labels["action"])[batch["index"]]
    )
    val = next(iter(datamodule.val_dataloader()))
    assert "target_video" not in val and val["video"].mean() > batch["video"].mean()


def test_reader_reads_three_line_forms_and_names_a_malformed_line(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("a/v1.avi 3\n\nb/v2 40 1\n7,0\n")
    videos = read_video_list(listed, tmp_path / "videos")
    assert videos.labels == [3, 1, 0]
    assert videos.paths == [tmp_path / "videos" / p for p in ("a/v1.avi", "b/v2", "7")]
    listed.write_text("a/v1.avi 3\nb/v2.avi one\n")
    with pytest.raises(DataError, match=r"list.txt:2: label 'one'"):
        read_video_list(listed, tmp_path)
    listed.write_text("a/v1.avi 3\nonly-a-path\n")
    with pytest.raises(DataError, match=r"list.txt:2: expected") as err:
        read_video_list(listed, tmp_path)
    assert "\n" not in str(err.value)


def test_da_list_source_pairs_source_and_target_frame_folders(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("s0", "s1", "t0"):
        folder = tmp_path / "videos" / name
        folder.mkdir(parents=True)
        for k in range(4):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                folder / f"{k:03d}.png"
            )
    (tmp_path / "src.txt").write_text("s0 0\ns1 1\n")
    (tmp_path / "tgt.txt").write_text("t0 1\n")
    cfg = VideoDomainsDataConfig(
        format="da_list",
        root=str(tmp_path),
        videos="videos",
        source_list="src.txt",
        target_list="tgt.txt",
        val_list="tgt.txt",
        test_list="tgt.txt",
        class_names=["a", "b"],
        num_frames=4,
        frame_size=16,
    )
    source = VideoDomainsDataModule(cfg).source
    train = source.split("train")
    item = train.load(1)
    assert item["video"].shape == item["target_video"].shape == (4, 16, 16, 3)
    assert list(train.labels["action"]) == [0, 1]
    with pytest.raises(ValueError, match="data.class_names"):
        VideoDomainsDataConfig(
            format="da_list",
            root=str(tmp_path),
            source_list="a",
            target_list="b",
            val_list="c",
            test_list="d",
        )


def test_slow_view_and_background_mixing():
    assert slow_frames(16, 4, random=False).tolist() == [2, 6, 10, 14]
    torch.manual_seed(0)
    for _ in range(20):
        picks = slow_frames(8, 3, random=True)
        assert picks.tolist() == sorted(picks.tolist()) and len(set(picks.tolist())) == 3
        assert 0 <= picks[0] < 3 and 3 <= picks[1] < 5 and 5 <= picks[2] < 8
    clip, bg = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 3, 5, 5)
    assert torch.equal(background_mix(clip, bg, 0.0), clip)  # the spec's unit test (a)
    torch.testing.assert_close(background_mix(clip, bg, 0.5)[:, 2], (clip[:, 2] + bg) / 2)


def test_config_rejects_bad_values_naming_the_key():
    for key, value in (("threshold", 1.5), ("gamma_max", -0.1), ("slow_fractions", [0.0])):
        with pytest.raises(ValueError, match=f"^{key}"):
            CoMixConfig(**{key: value})


def test_step_views_terms_and_eval_logits(built):
    datamodule, module = built
    batch = next(iter(datamodule.train_dataloader()))
    module.train()
    outputs = module.encode(batch)
    assert set(outputs) == {
        f"{d}{s}" for d in ("video", "target") for s in ("", "@slow", "@mix", "@mixslow")
    }
    terms = module.losses(batch, outputs)
    assert set(terms) == {"ce", "bgm", "tpl", "pseudo_ce"}
    assert all(torch.isfinite(t) for t in terms.values()) and terms["bgm"] > 0
    module.total_loss(terms).backward()
    assert module.classifier.weight.grad.abs().sum() > 0
    module.eval()
    val = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        logits = module.eval_outputs(val, module.encode(val))["logits/video/action"]
    assert logits.shape == (8, len(ACTIONS))


def test_warm_start_and_threshold_switch_the_adaptation_terms_off(built):
    datamodule, module = built
    batch = next(iter(datamodule.train_dataloader()))
    module.train()
    cfg = module.method_cfg
    old = cfg.warm_start_steps, cfg.threshold
    try:
        cfg.warm_start_steps = 1  # global_step 0 < 1: source-only
        terms = module.losses(batch, module.encode(batch))
        assert terms["bgm"] == terms["tpl"] == terms["pseudo_ce"] == 0 and terms["ce"] > 0
        cfg.warm_start_steps, cfg.threshold = 0, 1.0  # no pseudo-label is that confident
        terms = module.losses(batch, module.encode(batch))
        assert terms["tpl"] == terms["pseudo_ce"] == 0 and terms["bgm"] > 0
    finally:
        cfg.warm_start_steps, cfg.threshold = old
