"""Built-in talking clips (determinism, cache, audio-mouth synchrony, distinct word sounds),
the audio-visual datamodule's batch contract, log-mel and audio decoding, and the LRS reader."""

from __future__ import annotations

import pickle
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile
import torch

from datamodules.audio_visual import AudioVisualDataConfig, AudioVisualDataModule
from datamodules.embedded import talking
from datamodules.embedded.talking import (
    AUDIO_SCALE,
    VOCAB,
    WORDS,
    TalkingConfig,
    generate_split,
    speakers,
    word_sound,
)
from datamodules.formats import read_lrs
from datamodules.media import MediaError, decode_audio, log_mel, mel_filterbank
from datamodules.storage import cache_root
from modules.registry import DATAMODULES
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import setup_with_words

TINY = dict(num_train=40, num_val=12, num_test=12)
SR, FPS, T, MARGIN = 8000, 20, 16, 4
SPF = SR // FPS


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def clips() -> tuple[np.ndarray, np.ndarray, dict]:
    return generate_split(TalkingConfig(num_val=60), "val")


# ------------------------------------------------------------------ generator


def test_generation_is_deterministic_and_seeded():
    cfg = TalkingConfig(**TINY)
    frames, audio, record = generate_split(cfg, "test")
    frames2, audio2, record2 = generate_split(cfg, "test")
    assert frames.shape == (12, T + 2 * MARGIN, 32, 32) and frames.dtype == np.uint8
    assert audio.shape == (12, (T + 2 * MARGIN) * SPF) and audio.dtype == np.int16
    assert np.array_equal(frames, frames2) and np.array_equal(audio, audio2)
    assert record == record2
    other_frames, _, other = generate_split(replace(cfg, seed=1), "test")
    assert not np.array_equal(frames, other_frames) and record["words"] != other["words"]
    assert cfg.key() == TalkingConfig(**TINY).key() != replace(cfg, seed=1).key()
    assert all(2 <= len(w) <= 4 for w in record["words"])
    assert len(set(record["speaker"])) > 3 and len(WORDS) == len(VOCAB) == 20


def test_words_lie_inside_the_window_and_margins_are_silent(clips):
    _, audio, record = clips
    lo, hi = MARGIN * SPF, (MARGIN + T) * SPF
    for spans in record["spans"]:
        assert lo <= spans[0][0] and spans[-1][1] <= hi
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # gaps
    wave = audio / AUDIO_SCALE
    assert np.abs(wave[:, :lo]).max() < 0.06 < np.abs(wave[:, lo:hi]).max()


def test_cache_is_written_once_and_reused(cache, monkeypatch):
    cfg = TalkingConfig(**TINY)
    path = talking.ensure_talking(cfg, cache)
    assert path == cache / "data" / f"talking-{cfg.key()}"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    mtimes = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(talking, "generate_split", fail)
    assert talking.ensure_talking(cfg, cache) == path
    dm = AudioVisualDataModule(AudioVisualDataConfig(**TINY))  # cache root from ALIGNLAB_CACHE
    dm.prepare_data()
    setup_with_words(dm)
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == mtimes
    assert isinstance(talking.load_split(path, "train").frames, np.memmap)
    with pytest.raises(AssertionError, match="regenerated"):
        talking.ensure_talking(replace(cfg, seed=3), cache)


def _opening(frames: np.ndarray) -> np.ndarray:
    """Mouth opening per frame from the pixels: darkening against the clip's first (silent,
    closed-mouth) frame."""
    f = frames.astype(np.float64)
    return np.clip(f[:, :1] - f, 0, None).sum(axis=(2, 3))


def _loudness(audio: np.ndarray) -> np.ndarray:
    """RMS of the waveform in each video frame's samples."""
    wave = audio.astype(np.float64) / AUDIO_SCALE
    return np.sqrt((wave.reshape(len(wave), -1, SPF) ** 2).mean(-1))


def test_mouth_opening_follows_the_audio_envelope(clips):
    frames, audio, _ = clips
    mouth, loud = _opening(frames), _loudness(audio)

    def corr(shift: int) -> float:
        m, a = mouth[:, MARGIN + shift : MARGIN + shift + T], loud[:, MARGIN : MARGIN + T]
        return float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(m, a, strict=True)]))

    sync = corr(0)
    assert sync > 0.8, sync
    for shift in (-3, -2, 2, 3):
        assert corr(shift) < sync - 0.3, (shift, corr(shift), sync)


def _word_feature(wave: np.ndarray) -> np.ndarray:
    """Time-averaged log-mel, mean removed, unit norm."""
    mel = log_mel(torch.from_numpy(wave).float(), SR, 40, 200, 80).mean(-1).numpy()
    mel = mel - mel.mean()
    return mel / np.linalg.norm(mel)


def test_each_word_has_a_distinct_sound():
    """Nearest-template classification of single words across speakers and durations."""
    cfg = TalkingConfig()
    voices = speakers(cfg)
    neutral = replace(voices[0], f0=160.0, timbre=1.0)
    templates = np.stack([_word_feature(word_sound(w, neutral, 1040, SR)) for w in WORDS])
    rng = np.random.default_rng(0)
    right = total = 0
    for k, word in enumerate(WORDS):
        for voice in voices:
            n = int(rng.uniform(0.10, 0.16) * SR)
            wave = word_sound(word, voice, n, SR) + rng.normal(0, 0.01, n)
            right += int(np.argmax(templates @ _word_feature(wave)) == k)
            total += 1
    assert right / total >= 0.95, right / total
    sims = templates @ templates.T
    assert (sims[~np.eye(len(WORDS), dtype=bool)] < 0.95).all()


# ------------------------------------------------------------------ datamodule


def _dm(**kwargs) -> AudioVisualDataModule:
    module = AudioVisualDataModule(
        AudioVisualDataConfig(**{**TINY, "batch_size": 8, "eval_batch_size": 12, **kwargs})
    )
    module.prepare_data()
    setup_with_words(module)
    return module


def test_registered_and_config_validated():
    entry = DATAMODULES.get("audio_visual")
    assert entry.cls is AudioVisualDataModule and entry.config is AudioVisualDataConfig
    for kwargs, key in (
        ({"format": "avi"}, "data.format"),
        ({"format": "lrs"}, "data.format 'lrs' needs data.root"),
        ({"min_shift": 0}, "data.min_shift"),
        ({"min_shift": 5, "max_shift": 4}, "data.min_shift"),
        ({"hop_length": 75}, "data.sample_rate"),
        ({"win_length": 50}, "data.win_length"),
        ({"mouth_box": [0.5, 0.5, 0.4, 1.0]}, "data.mouth_box"),
    ):
        with pytest.raises(ValueError, match=key):
            AudioVisualDataConfig(**kwargs)


def test_batches_follow_the_contract(cache):
    dm = _dm()
    assert dm.modalities == ("audio", "video") and dm.zero_shot_tasks == {}
    assert dm.choice_tasks == {
        "sync": ("video_shifted", "video"),
        "active_speaker": ("video_distractor", "video"),
    }
    assert dm.tower_context() == {
        "image_size": 32,
        "in_channels": 1,
        "num_frames": T,
        "n_mels": 40,
        "audio_frames": 80,
        "max_text_len": 16,
    }
    batches = list(dm.train_dataloader())
    assert len(batches) == 40 // 8
    b = batches[0]
    assert set(b) == {
        "audio",
        "video",
        "video_shifted",
        "video_distractor",
        "words",
        "text_ids",
        "text_mask",
        "index",
        "item_id",
        "label/offset",
        "label/speaker",
        "skipped",
    }
    assert b["audio"].shape == (8, 40, 80) and b["audio"].dtype == torch.float32
    for key in ("video", "video_shifted", "video_distractor"):
        assert b[key].shape == (8, T, 1, 32, 32) and b[key].dtype == torch.float32
        assert -1.0 <= b[key].min() and b[key].max() <= 1.0
    assert b["words"].shape == (8, 8) and b["words"].dtype == torch.long
    for key in ("index", "item_id", "label/offset", "label/speaker"):
        assert b[key].dtype == torch.long and b[key].shape == (8,)
    assert torch.equal(b["index"], b["item_id"])
    _check_samples(dm, "train", torch.cat([x["item_id"] for x in batches]), batches)


def _check_samples(dm: AudioVisualDataModule, split: str, items: torch.Tensor, batches) -> None:
    """Every sample against the stored clip: audio, video, shift, distractor, words."""
    data = talking.load_split(talking.talking_dir(dm.source.generator, cache_root()), split)
    window = np.asarray(data.frames[:, MARGIN : MARGIN + T], dtype=np.float32) / 127.5 - 1
    offsets = torch.cat([x["label/offset"] for x in batches])
    assert ((offsets.abs() >= 2) & (offsets.abs() <= 4)).all()
    assert (offsets > 0).any() and (offsets < 0).any()
    get = lambda key: torch.cat([x[key] for x in batches])  # noqa: E731
    video, shifted, distractor = get("video"), get("video_shifted"), get("video_distractor")
    audio, words, speaker = get("audio"), get("words"), get("label/speaker")
    for k, (i, off) in enumerate(zip(items.tolist(), offsets.tolist(), strict=True)):
        frames = torch.tensor(np.asarray(data.frames[i], dtype=np.float32) / 127.5 - 1)
        assert torch.allclose(video[k, :, 0], frames[MARGIN : MARGIN + T])
        assert torch.allclose(shifted[k, :, 0], frames[MARGIN + off : MARGIN + off + T])
        wave = torch.tensor(data.audio[i] / AUDIO_SCALE, dtype=torch.float32)
        segment = wave[MARGIN * SPF - 60 : (MARGIN + T) * SPF + 60]  # (win - hop) / 2 each side
        assert torch.allclose(audio[k], log_mel(segment, SR, 40, 200, 80), atol=1e-4)
        match = np.flatnonzero(
            (np.abs(window - distractor[k, :, 0].numpy()) < 1e-6).all(axis=(1, 2, 3))
        )
        assert len(match) >= 1 and data.speaker[match[0]] != data.speaker[i] == speaker[k]
        assert data.words[match[0]] != data.words[i]
        n = len(data.words[i])
        assert words[k, :n].tolist() == data.words[i] and (words[k, n:] == -1).all()


def test_eval_is_fixed_and_reproducible_training_varies(cache):
    dm = _dm()
    batches = list(dm.val_dataloader())
    items = torch.cat([b["item_id"] for b in batches])
    assert torch.equal(items, torch.arange(12))
    _check_samples(dm, "val", items, batches)
    again = list(_dm().val_dataloader())
    for a, b in zip(batches, again, strict=True):
        assert a.keys() == b.keys() and a.pop("skipped") == b.pop("skipped") == []
        assert all(torch.equal(a[key], b[key]) for key in a)
    texts = dm.datasets["val"].captions.all_texts()
    data = talking.load_split(talking.talking_dir(dm.source.generator, cache), "val")
    assert texts == [data.transcript(i) for i in range(12)]
    train = dm.datasets["train"]
    draws = {
        (s["label/offset"], float(s["video_distractor"].sum()))
        for s in map(train.__getitem__, [0] * 10)
    }
    assert len(draws) > 1
    assert "train 40 clips, val 12 clips, test 12 clips" in dm.describe()


def test_dataset_pickles_small(cache):
    dataset = _dm().datasets["val"]
    blob = pickle.dumps(dataset)
    assert len(blob) < 12 * 24 * 32 * 32 / 2  # the arrays travel as their paths
    a, b = dataset[3], pickle.loads(blob)[3]
    assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a if k != "text")


# ------------------------------------------------------------------ log-mel and decoding


def _reference_filterbank(n_mels: int, n_fft: int, sr: int) -> np.ndarray:
    """HTK triangles, written out per filter and per bin."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    points = [hz(mel(sr / 2) * k / (n_mels + 1)) for k in range(n_mels + 2)]
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, mid, hi = points[m : m + 3]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo < f <= mid:
                out[m, k] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                out[m, k] = (hi - f) / (hi - mid)
    return out


def _reference_log_mel(wave: np.ndarray, sr: int, n_mels: int, win: int, hop: int) -> np.ndarray:
    """Direct DFT of Hann-windowed frames, mel filterbank, log."""
    n = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(win // 2 + 1), n) / win)
    frames = [wave[t : t + win] * hann for t in range(0, len(wave) - win + 1, hop)]
    power = np.abs(dft @ np.stack(frames, axis=1)) ** 2
    return np.log(_reference_filterbank(n_mels, win, sr) @ power + 1e-6)


@pytest.mark.parametrize(
    ("sr", "n_mels", "win", "hop"), [(8000, 40, 200, 80), (16000, 24, 256, 100)]
)
def test_log_mel_matches_a_direct_dft(sr, n_mels, win, hop):
    rng = np.random.default_rng(1)
    t = np.arange(3000) / sr
    wave = 0.5 * np.sin(2 * np.pi * 700 * t) + rng.normal(0, 0.05, len(t))
    ours = log_mel(torch.tensor(wave, dtype=torch.float64), sr, n_mels, win, hop).numpy()
    ref = _reference_log_mel(wave, sr, n_mels, win, hop)
    assert ours.shape == ref.shape == (n_mels, 1 + (3000 - win) // hop)
    assert np.allclose(ours, ref, atol=1e-6)
    batch = log_mel(torch.tensor(np.stack([wave, wave]), dtype=torch.float32), sr, n_mels, win, hop)
    assert batch.shape == (2, *ref.shape) and np.allclose(batch[1].numpy(), ref, atol=1e-3)
    silent = log_mel(torch.zeros(1000), sr, n_mels, win, hop)
    assert torch.allclose(silent, torch.full_like(silent, float(np.log(1e-6))))
    with pytest.raises(ValueError, match="at least"):
        log_mel(torch.zeros(win - 1), sr, n_mels, win, hop)


def test_mel_filterbank_properties():
    fb = mel_filterbank(40, 200, 8000).numpy()
    assert fb.shape == (40, 101) and fb.dtype == np.float32
    assert np.allclose(fb, _reference_filterbank(40, 200, 8000), atol=1e-6)
    assert (fb >= 0).all() and (fb <= 1).all() and (fb.sum(1) > 0).all()
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > 90  # ordered, reaching Nyquist
    for row in fb:  # one contiguous triangle each
        support = np.flatnonzero(row > 0)
        assert (np.diff(support) == 1).all()
    widths = (fb > 0).sum(1)
    assert widths[-1] > 3 * widths[5]  # wider at high frequencies (mel spacing)
    mel_top = 2595 * np.log10(1 + 4000 / 700)
    first, last = (700 * (10 ** (mel_top * k / 41 / 2595) - 1) for k in (1, 40))
    inside = (np.arange(101) * 40 > first) & (np.arange(101) * 40 < last)
    assert np.allclose(fb[:, inside].sum(0), 1, atol=1e-5)  # neighbours sum to 1 between


def test_decode_audio_round_trip(tmp_path):
    sr = 16000
    t = np.arange(sr // 2) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    soundfile.write(tmp_path / "tone.wav", np.stack([tone, tone], 1), sr)  # stereo
    wave = decode_audio(tmp_path / "tone.wav", 8000)
    assert wave.dtype == np.float32 and wave.ndim == 1 and abs(len(wave) - 4000) <= 64
    spectrum = np.abs(np.fft.rfft(wave[500:3500]))
    assert abs(np.argmax(spectrum) * 8000 / 3000 - 440) < 5
    assert 0.45 < np.abs(wave[500:3500]).max() < 0.55
    with pytest.raises(MediaError, match="missing.wav"):
        decode_audio(tmp_path / "missing.wav", 8000)
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(MediaError, match="junk.wav"):
        decode_audio(tmp_path / "junk.wav", 8000)


# ------------------------------------------------------------------ LRS reader

LRS_FPS, LRS_SR, LRS_FRAMES = 20, 16000, 30


def _write_clip(path, level: int, frames: int = LRS_FRAMES) -> None:
    """An mp4 (mpeg4 video + aac audio): the lower middle (mouth box) brightens frame by frame
    from ``level``, the rest is white; the audio is a 300 Hz tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=LRS_FPS)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        video.options = {"qscale": "1"}
        audio = out.add_stream("aac", rate=LRS_SR)
        audio.layout = "mono"
        for i in range(frames):
            image = np.full((64, 64, 3), 250, np.uint8)
            image[26:, 10:54] = level + 5 * i  # beyond the mouth box
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        t = np.arange(frames * LRS_SR // LRS_FPS) / LRS_SR
        tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024], format="flt", layout="mono"
            )
            chunk.sample_rate, chunk.pts = LRS_SR, start
            chunk.time_base = Fraction(1, LRS_SR)
            for packet in audio.encode(chunk):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)


LRS_CLIPS = {"spk1/00001": 20, "spk1/00002": 60, "spk2/00001": 100, "spk3/00007": 40}
TRANSCRIPTS = {
    "spk1/00001": "HELLO THERE",
    "spk1/00002": "GOOD MORNING",
    "spk2/00001": "HELLO WORLD",
    "spk3/00007": "NEW WORDS HERE",
}


@pytest.fixture(scope="module")
def lrs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lrs")
    for clip, level in LRS_CLIPS.items():
        _write_clip(root / "main" / f"{clip}.mp4", level)
        (root / "main" / f"{clip}.txt").write_text(
            f"Text:  {TRANSCRIPTS[clip]}\nConf:  4\n\nWORD START END ASDSCORE\n"
        )
    (root / "train.txt").write_text("spk1/00001 NF\n\nspk1/00002\nspk2/00001 NF\n")
    (root / "val.txt").write_text("spk3/00007\nspk1/00001\n")
    return root


def _lrs_cfg(root, **kwargs) -> AudioVisualDataConfig:
    return AudioVisualDataConfig(
        **{
            "format": "lrs",
            "root": str(root),
            "train_clips": "main",
            "val_clips": "main",
            "fps": LRS_FPS,
            "sample_rate": 8000,
            "num_frames": 8,
            "min_shift": 1,
            "max_shift": 2,
            "frame_size": 16,
            "batch_size": 2,
            "eval_batch_size": 2,
            **kwargs,
        }
    )


def test_lrs_reader_and_loader(lrs_root):
    files = read_lrs(lrs_root / "train.txt", lrs_root / "main")
    assert [k.decode() for k in files.keys] == ["spk1/00001", "spk1/00002", "spk2/00001"]
    assert files.captions.all_texts() == ["hello there", "good morning", "hello world"]
    dm = AudioVisualDataModule(_lrs_cfg(lrs_root))
    setup_with_words(dm, "validate")  # reads train too: tokenizer and word vocabulary
    assert dm.word_vocab == ["<unk>", "good", "hello", "morning", "there", "world"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["video"].shape == (2, 8, 1, 16, 16) and batch["audio"].shape == (2, 40, 40)
    assert batch["words"][0].tolist() == [0, 0, 0, -1, -1, -1, -1, -1]  # unknown words
    assert batch["words"][1].tolist()[:2] == [2, 4]
    assert batch["label/speaker"].tolist() == [1, 0]
    start = (LRS_FRAMES - 8) // 2
    for k, clip in enumerate(["spk3/00007", "spk1/00001"]):
        level = (LRS_CLIPS[clip] + 5 * (start + np.arange(8))) / 127.5 - 1  # mouth box only
        mean = batch["video"][k, :, 0].mean((1, 2)).numpy()
        assert np.allclose(mean, level, atol=0.05), (mean, level)
        off = int(batch["label/offset"][k])
        assert 1 <= abs(off) <= 2
        shifted = batch["video_shifted"][k, :, 0].mean((1, 2)).numpy()
        assert np.allclose(shifted, level + 5 * off / 127.5, atol=0.05)
        other = ["spk1/00001", "spk3/00007"][k]  # the one val clip of another speaker
        level = (LRS_CLIPS[other] + 5 * (start + np.arange(8))) / 127.5 - 1
        assert np.allclose(batch["video_distractor"][k, :, 0].mean((1, 2)), level, atol=0.05)
    tone = batch["audio"][0].mean(1)  # 300 Hz sits in a low mel band
    assert tone.argmax() < 10 and tone.max() > tone.median() + 5
    assert "lrs at" in dm.describe() and "val 2 clips" in dm.describe()


def test_lrs_list_errors_name_the_place(lrs_root, tmp_path):
    main = lrs_root / "main"
    bad = tmp_path / "bad.txt"
    bad.write_text("spk1/00001\nspk9/00001 NF\n")
    with pytest.raises(FileNotFoundError, match=r"bad\.txt:2: clip file .*spk9/00001\.mp4"):
        read_lrs(bad, main)
    (tmp_path / "c" / "x").mkdir(parents=True)
    _write_clip(tmp_path / "c" / "x" / "1.mp4", 10, frames=5)
    bad.write_text("\nx/1\n")
    with pytest.raises(FileNotFoundError, match=r"bad\.txt:2: transcript file .*x/1\.txt"):
        read_lrs(bad, tmp_path / "c")
    (tmp_path / "c" / "x" / "1.txt").write_text("Conf: 3\nText: late\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: transcript file .*1\.txt.*'Text:'"):
        read_lrs(bad, tmp_path / "c")
    (tmp_path / "c" / "x" / "1.txt").write_text("Text:   \n")
    with pytest.raises(ValueError, match="empty 'Text:'"):
        read_lrs(bad, tmp_path / "c")
    bad.write_text("\n\n")
    with pytest.raises(ValueError, match="no entries"):
        read_lrs(bad, main)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_lrs(tmp_path / "nope.txt", main)


def test_lrs_corrupt_or_short_clip_is_a_media_error(lrs_root, tmp_path):
    root = tmp_path / "r"
    for clip, text in (("a/1", "SOME WORDS"), ("b/1", "OTHER WORDS")):
        (root / "main" / clip).parent.mkdir(parents=True, exist_ok=True)
        (root / "main" / f"{clip}.txt").write_text(f"Text:  {text}\n")
    (root / "main" / "a" / "1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken" * 20)
    _write_clip(root / "main" / "b" / "1.mp4", 30, frames=6)  # shorter than 8 + 2 * 2
    for split in ("train", "val"):
        (root / f"{split}.txt").write_text("a/1\nb/1\n")
    dm = AudioVisualDataModule(_lrs_cfg(root), tokenizer=WordTokenizer.build(["some other words"]))
    setup_with_words(dm, "fit")  # the list is valid; the media are checked when decoded
    clips = dm.datasets["train"].load.clips
    with pytest.raises(MediaError, match=r"a/1\.mp4"):
        clips(0)
    with pytest.raises(MediaError, match=r"b/1\.mp4 has 6 frames, fewer than"):
        clips(1)
    with pytest.raises(MediaError, match=r"a/1\.mp4"):
        dm.datasets["train"][0]  # through the dataset as a loader worker sees it
    with pytest.raises(MediaError, match=r"00001\.mp4 has 20 frames/s, expected fps 25"):
        dm = AudioVisualDataModule(_lrs_cfg(lrs_root, fps=25))
        setup_with_words(dm, "fit")
        dm.datasets["train"].load.clips(0)


def test_same_speaker_distractors_differ_only_in_what_is_said(cache):
    dm = _dm(distractor="same", num_speakers=2)
    data = talking.load_split(talking.talking_dir(dm.source.generator, cache_root()), "val")
    window = np.asarray(data.frames[:, MARGIN : MARGIN + T], dtype=np.float32) / 127.5 - 1
    batch = next(iter(dm.val_dataloader()))
    for k, item in enumerate(batch["item_id"].tolist()):
        distractor = batch["video_distractor"][k, :, 0].numpy()
        match = np.flatnonzero((np.abs(window - distractor) < 1e-6).all(axis=(1, 2, 3)))
        assert len(match) >= 1 and data.speaker[match[0]] == data.speaker[item]
        assert data.words[match[0]] != data.words[item]
    with pytest.raises(ValueError, match="data.distractor must be one of"):
        AudioVisualDataConfig(distractor="nobody")
