"""Decoding of real media files into the arrays the datamodules use.

Video is decoded with PyAV (FFmpeg bindings); torchvision and torchaudio do not load beside
this project's torch. Every error names the file, so a corrupt clip is reported as such rather
than as a crash deep in a dataloader worker.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from datamodules.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class MediaError(DataError):
    """A media file that is missing, unreadable or has no usable stream."""


#: What PIL raises for a file that is not a readable image: OSError for most broken or truncated
#: data, SyntaxError or ValueError for some corruptions, DecompressionBombError when oversized.
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


#: Integer modes wider than 8 bits: PIL's 16-bit modes and 32-bit ``I`` (how PIL opens many
#: 16-bit PNG and TIFF files).
WIDE_INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _gray8(values: np.ndarray) -> Image.Image:
    """Pixel values in 0..255 (float) as a mode ``L`` image."""
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _stretch(values: np.ndarray) -> np.ndarray:
    """Float pixels mapped linearly from their finite min..max to 0..255 (a constant image to 0;
    NaN to the minimum, infinities to the nearest end)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.min() == finite.max():
        return np.zeros_like(values)
    lo, hi = finite.min(), finite.max()
    return (np.clip(np.nan_to_num(values, nan=lo), lo, hi) - lo) * (255 / (hi - lo))


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with 8-bit pixels, for ``convert("RGB")`` / ``convert("L")``, which clip rather
    than scale (a 16-bit scan would turn all white, a float one all black).

    Integer images are scaled by their bit depth (16 bits; ``I`` with values beyond 65535 by
    its maximum, negatives to 0), float ones (``F``) by their own min..max. Other modes (8-bit
    ``L``, ``RGB``, ``P``, ...) are returned as they are, the same object."""
    if image.mode == "F":
        return _gray8(_stretch(np.asarray(image, dtype=np.float64)))
    if image.mode in WIDE_INTEGER_MODES:
        values = np.clip(np.asarray(image).astype(np.float64), 0, None)
        return _gray8(values * (255 / max(65535.0, float(values.max(initial=0)))))
    return image


def uniform_positions(total: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``range(total)`` (centres of equal segments);
    repeats indices when the source is shorter than ``count``."""
    if total < 1:
        raise ValueError("cannot sample frames from an empty source")
    return np.minimum(((np.arange(count) + 0.5) * total / count).astype(np.int64), total - 1)


def _resize(image: Image.Image, size: int, grayscale: bool) -> np.ndarray:
    """The whole picture resized to ``size`` x ``size`` as HWC uint8 (C = 1 or 3)."""
    image = to_8bit(image).convert("L" if grayscale else "RGB")
    array = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    return array[..., None] if grayscale else array


def decode_frames(path: str | Path) -> tuple[list[Image.Image], float]:
    """Every frame of the first video stream as a PIL image, and the stream's frame rate.

    Clips in these datasets are seconds long, so decoding all frames once keeps results
    independent of the container's seek accuracy.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video file {path} not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"video file {path} has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            frames = [frame.to_image() for frame in container.decode(video=0)]
    except av.FFmpegError as err:
        raise MediaError(f"video file {path} could not be decoded: {err}") from None
    if not frames:
        raise MediaError(f"video file {path} has no decodable frames")
    return frames, rate


def decode_video(
    path: str | Path, num_frames: int, size: int, grayscale: bool = False
) -> np.ndarray:
    """``num_frames`` frames sampled uniformly over the clip, ``uint8 [T, size, size, C]``."""
    frames, _ = decode_frames(path)
    picks = uniform_positions(len(frames), num_frames)
    return np.stack([_resize(frames[i], size, grayscale) for i in picks])


def read_frame_folder(
    directory: str | Path, num_frames: int, size: int, grayscale: bool = False
) -> np.ndarray:
    """Like :func:`decode_video` for a folder of frame images (sorted by file name)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MediaError(f"frame folder {directory} not found")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"frame folder {directory} has no image files ({IMAGE_SUFFIXES})")
    frames = []
    for i in uniform_positions(len(files), num_frames):
        try:
            with Image.open(files[i]) as image:
                frames.append(_resize(image, size, grayscale))
        except IMAGE_ERRORS as err:
            raise MediaError(f"frame {files[i]} could not be read: {err}") from None
    return np.stack(frames)


def decode_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The first audio stream as mono ``float32 [N]`` at ``sample_rate``: PyAV's resampler
    converts the rate, and mono is the mean of the channels (so levels are kept; FFmpeg's own
    down-mix scales a stereo signal by 1/sqrt(2))."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"audio file {path} not found")
    resampler = av.AudioResampler(format="fltp", rate=sample_rate)
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"media file {path} has no audio stream")
            for frame in container.decode(audio=0):
                chunks += [out.to_ndarray().mean(0) for out in resampler.resample(frame)]
            chunks += [out.to_ndarray().mean(0) for out in resampler.resample(None)]
    except av.FFmpegError as err:
        raise MediaError(f"audio of {path} could not be decoded: {err}") from None
    if not chunks:
        raise MediaError(f"media file {path} has no decodable audio")
    return np.concatenate(chunks).astype(np.float32)


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """``float32 [n_mels, n_fft // 2 + 1]`` triangular filters (peak 1, no area normalisation)
    with centres equally spaced on the HTK mel scale between 0 Hz and the Nyquist frequency.
    Cached (every sample of a dataset uses the same one): do not modify the result."""
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    top = _hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64))
    edges = _mel_to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


@lru_cache(maxsize=8)
def _hann_window(length: int) -> torch.Tensor:
    """Periodic Hann window, cached: building it per sample costs more than the STFT."""
    return torch.hann_window(length, dtype=torch.float64)


def log_mel(
    wave: torch.Tensor, sample_rate: int, n_mels: int, win_length: int, hop_length: int
) -> torch.Tensor:
    """Natural log of mel power + 1e-6: ``[..., N]`` -> ``[..., n_mels, frames]`` with
    ``frames = 1 + (N - win_length) // hop_length`` (Hann window, FFT size = window, no
    centring, so frame ``t`` covers samples ``[t * hop, t * hop + win)``)."""
    if wave.shape[-1] < win_length:
        raise ValueError(f"need at least {win_length} samples, got {wave.shape[-1]}")
    window = _hann_window(win_length).to(wave)
    spectrum = torch.stft(
        wave,
        n_fft=win_length,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=False,
        return_complex=True,
    )
    power = spectrum.real**2 + spectrum.imag**2
    fbank = mel_filterbank(n_mels, win_length, sample_rate).to(power)
    return torch.log(fbank @ power + 1e-6)
