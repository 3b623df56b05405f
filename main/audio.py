"""Small audio helpers shared by training previews, sampling and analysis: write WAVs and spectrogram PNGs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from main.files import PathLike


def slug(text: str, limit: int = 60, fallback: str = "clip") -> str:
    """A file-name-safe version of a text (prompt, label)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or fallback


def limit_peak(audio: Tensor, peak: float) -> Tensor:
    """`audio` [batch, channels, samples] with each clip whose peak exceeds `peak` scaled down to peak there (the
    waveform's shape and its noise floor below the syllables are kept; nothing is clipped)."""
    if not 0.0 < peak <= 1.0:
        raise ValueError(f"peak must be in (0, 1], got {peak}")
    peaks = audio.detach().abs().amax(dim=tuple(range(1, audio.ndim)), keepdim=True)
    return audio * torch.clamp(peak / peaks.clamp(min=1e-12), max=1.0)


def save_audio(path: PathLike, audio: Tensor, sample_rate: int) -> Path:
    """Write `audio` [channels, samples] (float, about [-1, 1]) as 16-bit PCM WAV; values are clipped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = audio.detach().float().cpu().clamp(-1.0, 1.0).numpy().T
    sf.write(str(path), data, sample_rate, subtype="PCM_16")
    return path


def log_spectrogram(audio: Tensor, n_fft: int = 1024, hop_length: int = 256) -> Tensor:
    """Log-magnitude (dB) spectrogram [freq, frames] of the channel mean of `audio` [channels, samples]."""
    mono = audio.detach().float().cpu().mean(0)
    window = torch.hann_window(n_fft)
    spec = torch.stft(mono, n_fft, hop_length, window=window, return_complex=True).abs()
    return 20 * torch.log10(spec.clamp(min=1e-5))


def save_spectrogram_png(
    path: PathLike, audio: Tensor, sample_rate: int, title: Optional[str] = None
) -> Path:
    """Render the spectrogram of `audio` [channels, samples] to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = log_spectrogram(audio).numpy()
    duration = audio.shape[-1] / sample_rate
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=float(np.max(spec)) - 80,
              extent=(0.0, duration, 0.0, sample_rate / 2000))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
