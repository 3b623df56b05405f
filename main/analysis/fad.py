"""Fréchet audio distance between two sets of embeddings, each summarised by a Gaussian (mean, covariance).

    FD = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))

computed in float64 from symmetric eigendecompositions (Tr sqrtm(S1 S2) = Tr sqrtm(A S1 A) with A = sqrtm(S2)),
which is exact for covariances, singular ones included, and several times faster than `scipy.linalg.sqrtm`. Two
embeddings: BirdNET's 1024-d clip embedding (mean over 3 s chunks, one vector per clip) and a weight-free
log-mel embedding (every STFT frame's 64 log-mel energies is one vector). Always report the N behind a figure:
with fewer vectors than dimensions the covariance is singular and the distance depends strongly on N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from main.files import PathLike


@dataclass
class GaussianStats:
    """Mean, covariance and the number of vectors (and of clips) they were computed from."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    n_clips: int

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.mu.shape[0])


class RunningStats:
    """Streaming mean and covariance (float64, shifted by the first batch's mean for accuracy)."""

    def __init__(self) -> None:
        self.n = 0
        self.n_clips = 0
        self.shift: Optional[np.ndarray] = None
        self.sum: Optional[np.ndarray] = None
        self.outer: Optional[np.ndarray] = None

    def update(self, vectors: np.ndarray, clips: int = 1) -> None:
        """Add vectors [n, dim] (from `clips` clips)."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected [n, dim] vectors, got shape {x.shape}")
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.sum = np.zeros(x.shape[1])
            self.outer = np.zeros((x.shape[1], x.shape[1]))
        assert self.sum is not None and self.outer is not None
        centred = x - self.shift
        self.sum += centred.sum(axis=0)
        self.outer += centred.T @ centred
        self.n += x.shape[0]
        self.n_clips += clips

    def stats(self) -> GaussianStats:
        """The unbiased mean and covariance of everything added."""
        if self.n < 2 or self.shift is None or self.sum is None or self.outer is None:
            raise ValueError(f"need at least 2 vectors for a covariance, got {self.n}")
        mean_centred = self.sum / self.n
        sigma = (self.outer - self.n * np.outer(mean_centred, mean_centred)) / (self.n - 1)
        return GaussianStats(self.shift + mean_centred, sigma, self.n, self.n_clips)


def gaussian_stats(vectors: np.ndarray, n_clips: Optional[int] = None) -> GaussianStats:
    """Mean and (unbiased) covariance of vectors [n, dim] in float64."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need [n >= 2, dim] vectors for a covariance, got shape {x.shape}")
    return GaussianStats(x.mean(axis=0), np.cov(x, rowvar=False), x.shape[0], x.shape[0] if n_clips is None
                         else n_clips)


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (eigendecomposition; rounding's tiny negative eigenvalues -> 0)."""
    values, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma: np.ndarray, sqrt_other: np.ndarray) -> float:
    """Tr sqrtm(S1 S2) from S1 and A = sqrtm(S2): S1 S2 is similar to A S1 A, which is symmetric PSD, so the trace is
    the sum of the square roots of its eigenvalues (`eigvalsh`: exact and several times faster than scipy's sqrtm)."""
    inner = sqrt_other @ sigma @ sqrt_other
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    trace_sqrt = trace_sqrt_product(sigma1, psd_sqrt(sigma2))
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


class FrechetToReference:
    """Fréchet distances of many sets to one reference Gaussian: the reference's square root is computed once."""

    def __init__(self, reference: GaussianStats):
        self.reference = reference
        self.sqrt_sigma = psd_sqrt(reference.sigma)

    def distance(self, stats: GaussianStats) -> float:
        """Fréchet distance of `stats` to the reference."""
        diff = stats.mu - self.reference.mu
        trace_sqrt = trace_sqrt_product(stats.sigma, self.sqrt_sigma)
        return float(diff @ diff + np.trace(stats.sigma) + np.trace(self.reference.sigma) - 2.0 * trace_sqrt)


def fad_from_stats(a: GaussianStats, b: GaussianStats) -> dict[str, Any]:
    """The distance between two summarised sets, with the N behind it."""
    return {"fad": frechet_distance(a.mu, a.sigma, b.mu, b.sigma), "n_a": a.n, "n_b": b.n,
            "clips_a": a.n_clips, "clips_b": b.n_clips, "dim": a.dim, "singular": min(a.n, b.n) <= a.dim}


def fad_from_embeddings(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Fréchet distance between two embedding sets [n, dim] (one vector per clip), with the N behind it."""
    return fad_from_stats(gaussian_stats(a), gaussian_stats(b))


class LogMelEmbedder:
    """Weight-free embedding: log-mel energies (dB) of each STFT frame of the mono audio at a fixed rate.

    The filterbank is torchaudio's (`melscale_fbanks`, as in `MelSpectrogram`); the STFT (Hann window, centred,
    reflect padding) runs in NumPy, single-threaded, which on a shared CPU is much faster than torch's threads.
    """

    def __init__(self, sample_rate: int = 32000, n_fft: int = 1024, hop_length: int = 512, n_mels: int = 64,
                 f_min: float = 50.0, f_max: Optional[float] = 15000.0, floor_db: float = -100.0):
        import torchaudio

        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        f_max = min(f_max or sample_rate / 2, sample_rate / 2)
        self.fbank = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate).numpy().astype(np.float64)  # [freqs, n_mels]
        self.window = np.hanning(n_fft + 1)[:-1]  # periodic Hann, as torch.hann_window
        self.floor = 10.0 ** (floor_db / 10.0)
        self.config = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min,
                           f_max=f_max, floor_db=floor_db)

    def frames(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel frames [frames, n_mels] (float32) of mono audio at `sample_rate`."""
        x = np.asarray(audio, dtype=np.float64)
        pad = self.n_fft // 2
        x = np.pad(x, pad, mode="reflect" if len(x) > pad else "constant")
        if len(x) < self.n_fft:
            x = np.pad(x, (0, self.n_fft - len(x)))
        windows = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop_length]
        power = np.abs(np.fft.rfft(windows * self.window, axis=-1)) ** 2
        return (10.0 * np.log10(power @ self.fbank + self.floor)).astype(np.float32)

    def embed_file(self, path: PathLike) -> np.ndarray:
        """Log-mel frames of an audio file (channel mean, resampled)."""
        from main.analysis.clips import load_audio

        audio, _ = load_audio(path, self.sample_rate)
        return self.frames(audio)

    def stats(self, paths: Iterable[PathLike], desc: str = "log-mel", show_progress: bool = True) -> GaussianStats:
        """Mean and covariance over all frames of all `paths` (streamed, so any number of files fits)."""
        paths = list(paths)
        running = RunningStats()
        for path in tqdm(paths, desc=desc, disable=not show_progress or len(paths) < 50, leave=False):
            running.update(self.embed_file(path))
        return running.stats()


def logmel_fad(paths_a: Sequence[PathLike], paths_b: Sequence[PathLike],
               embedder: Optional[LogMelEmbedder] = None) -> dict[str, Any]:
    """Log-mel Fréchet distance between two sets of files (N = frames; clips also reported)."""
    embedder = embedder or LogMelEmbedder()
    return fad_from_stats(embedder.stats(paths_a), embedder.stats(paths_b))
