"""Small media files written by the reader tests: a test tone as a 16-bit mono WAV."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def write_tone_wav(path: Path, seconds: float = 0.5, rate: int = 8000) -> None:
    """A 440 Hz tone of ``seconds`` at ``rate`` Hz, int16 mono, at ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
