"""CoGenAV (modules/cogenav.py): the audio tower's per-frame tokens, the decoder's teacher
forcing and greedy decoding, the method's pairing of in-sync and shifted clips, its embedding,
and the word error rate evaluator (callbacks/transcript.py) against torchmetrics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.text import WordErrorRate

from callbacks.transcript import TranscriptWER, TranscriptWEREvaluator, ids_to_text
from experiments.config import load_experiment
from experiments.stages import build
from modules.cogenav import CoGenAVConfig, TranscriptDecoder
from modules.losses.cogenav import sync_loss
from modules.towers import TowerContext
from modules.towers.audio_frames import AudioFramesConfig, AudioFramesTower

TINY = [
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=4",
    "model.audio.width=16",
    "model.audio.depth=1",
    "model.video.width=16",
    "model.video.depth=1",
    "model.video.frame.channels=[4,8]",
    "model.embed_dim=16",
]


@pytest.fixture(scope="module")
def built():
    """The experiments/cogenav.yaml method at toy size and one training batch."""
    torch.manual_seed(0)
    stages = load_experiment("experiments/cogenav.yaml", TINY)
    datamodule, module = build(stages[-1].plain)
    return module, next(iter(datamodule.train_dataloader()))


def test_audio_tower_gives_one_token_per_video_frame():
    context = TowerContext(num_frames=4, audio_frames=20, n_mels=8)
    tower = AudioFramesTower(AudioFramesConfig(width=8, depth=1, heads=2), 6, context)
    spec = torch.randn(3, 8, 20)
    out = tower({"audio": spec})
    assert out.tokens.shape == (3, 4, 6)
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))
    # the front-end's step t reads audio frames 5t-1 .. 5t+4: the last frame's audio reaches
    # no earlier step than t = 2
    changed = spec.clone()
    changed[:, :, 15:] += 1.0
    before = tower.front(spec).detach()
    after = tower.front(changed).detach()
    torch.testing.assert_close(before[:, :, :2], after[:, :, :2])
    assert not torch.allclose(before[:, :, 3], after[:, :, 3])
    with pytest.raises(ValueError, match="audio_frames"):
        AudioFramesTower(AudioFramesConfig(), 6, TowerContext(num_frames=3, audio_frames=20))


def test_teacher_forcing_shifts_the_transcript_and_ends_it():
    decoder = TranscriptDecoder(8, 2, 1, vocab_size=10, max_words=3)
    words = torch.tensor([[3, 5, -1], [1, 2, 4]])
    inputs, targets = decoder.teacher_forced(words)
    end, start = 10, 11
    assert targets.tolist() == [[3, 5, end, -1], [1, 2, 4, end]]
    assert inputs[:, :1].tolist() == [[start], [start]]
    assert inputs[0, 1:3].tolist() == [3, 5] and inputs[1, 1:].tolist() == [1, 2, 4]


def test_greedy_decoding_recovers_an_overfitted_transcript_and_stops_at_the_end():
    torch.manual_seed(0)
    decoder = TranscriptDecoder(16, 2, 1, vocab_size=6, max_words=4)
    memory = torch.randn(2, 3, 16)
    words = torch.tensor([[2, 0, 5, -1], [4, 4, -1, -1]])
    inputs, targets = decoder.teacher_forced(words)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        logits = decoder(inputs, memory)
        F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1).backward()
        optimizer.step()
    assert decoder.greedy(memory).tolist() == words.tolist()


def test_sync_term_pairs_audio_with_the_clip_and_its_shifted_copy(built):
    module, batch = built
    module.train()
    outputs = module.encode(batch)
    terms = module.losses(batch, outputs)
    audio = outputs["audio"].tokens
    ones, zeros = torch.ones(len(audio)), torch.zeros(len(audio))
    # the mean of the positives' and the negatives' BCE (B each)
    expected = 0.5 * (
        sync_loss(audio, outputs["video"].tokens, ones)
        + sync_loss(audio, outputs["video_shifted"].tokens, zeros)
    )
    torch.testing.assert_close(terms["sync"], expected)
    # gen: per transcript, the summed -log p of its words and the end token; mean over the batch
    inputs, targets = module.decoder.teacher_forced(batch["words"])
    logp = module.decoder(inputs, module.fused(outputs)).log_softmax(dim=-1)
    sums = [
        -sum(logp[b, n, targets[b, n]] for n in range(targets.shape[1]) if targets[b, n] >= 0)
        for b in range(len(targets))
    ]
    torch.testing.assert_close(terms["gen"], torch.stack(sums).mean())
    # the shifted clip is encoded by the video tower itself
    shifted = module.towers["video"]({"video": batch["video_shifted"]}).tokens
    torch.testing.assert_close(outputs["video_shifted"].tokens, shifted)


def test_embedding_dot_product_is_the_mean_frame_cosine(built):
    module, batch = built
    outputs = module.encode(batch)
    a, v = outputs["audio"], outputs["video"]
    dot = (module.normalized("audio", a) * module.normalized("video", v)).sum(dim=1)
    cosine = F.cosine_similarity(a.tokens, v.tokens, dim=-1).mean(dim=1)
    torch.testing.assert_close(dot, cosine)


def test_eval_outputs_are_greedy_word_ids(built):
    module, batch = built
    module.eval()
    with torch.no_grad():
        words = module.eval_outputs(batch, module.encode(batch))["transcript/words"]
    module.train()
    assert words.shape == (len(batch["index"]), module.method_cfg.max_words)
    assert words.min() >= -1 and words.max() < module.method_cfg.vocab_size
    # after the first -1 (the end) everything is -1
    ended = (words < 0).long().cummax(dim=1).values.bool()
    assert torch.all(words[ended] == -1)


def test_wrong_sizes_name_the_key(built):
    module, batch = built
    bad = dict(batch, words=batch["words"].clamp_min(0) + module.method_cfg.vocab_size)
    with pytest.raises(ValueError, match="method.vocab_size"):
        module.losses(bad, module.encode(batch))
    with pytest.raises(ValueError, match="method.decoder_layers"):
        CoGenAVConfig(decoder_layers=0)


def test_wer_metric_is_torchmetrics_corpus_wer_counting_each_sample_once():
    preds = ["yes no up", "left", "one two three four", ""]
    target = ["yes up", "left right", "one two tree four", "cat"]
    reference = WordErrorRate()
    reference.update(preds, target)
    metric = TranscriptWER()
    metric.update(preds[:2], target[:2], torch.tensor([0, 1]))
    metric.update(preds, target, torch.tensor([0, 1, 2, 3]))  # 0 and 1 again (DDP padding)
    torch.testing.assert_close(metric.compute(), 100.0 * reference.compute().double())
    empty = TranscriptWER()
    empty.update(["a b"], [""], torch.tensor([0]))
    empty.update(["c"], ["c d"], torch.tensor([1]))
    # edits (2 insertions + 1 deletion) over reference words (0 + 2)
    torch.testing.assert_close(empty.compute(), torch.tensor(150.0, dtype=torch.float64))


def test_wer_evaluator_reads_the_method_transcript_through_the_vocabulary():
    module = SimpleNamespace(device=torch.device("cpu"))
    datamodule = SimpleNamespace(word_vocab=["yes", "no", "up"])
    evaluator = TranscriptWEREvaluator(module, datamodule, {})
    batch = {"words": torch.tensor([[0, 1, -1], [2, -1, -1]])}
    out = {
        "outputs": {"transcript/words": torch.tensor([[0, 2, -1], [2, -1, -1]])},
        "index": torch.tensor([0, 1]),
    }
    evaluator.update(out, batch)
    values = evaluator.compute()
    torch.testing.assert_close(values["transcript/wer"], torch.tensor(100 / 3, dtype=torch.float64))
    assert ids_to_text(torch.tensor([[1, 2, -1]]), None) == ["1 2"]
