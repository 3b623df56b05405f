"""What BirdNET FAD responds to: known degradations of the real test clips, and reconstructions before and after
simple corrections, each as FAD against the real test clips divided by the real-vs-real floor.

    python benchmarks/fad_sensitivity.py --manifest demo/data/synthetic/<hash>/manifest.csv \
        --reconstructions demo/eval/reconstructions

A degradation that barely moves the ratio is not what keeps generated audio far from the floor; one that moves it
as much as the model's output does is a candidate (BENCHMARKS.md, "Sound fidelity").
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import soundfile as sf
from scipy.signal import butter, istft, sosfilt, stft

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from main.analysis.birdnet import score_files
from main.analysis.fidelity import fad_ratio
from main.data.manifest import read_manifest

Degradation = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def envelope(x: np.ndarray, window: int = 512) -> np.ndarray:
    """RMS envelope over `window` samples."""
    return np.sqrt(np.convolve(x ** 2, np.ones(window) / window, mode="same"))


def pitch_shift(x: np.ndarray, cents: float) -> np.ndarray:
    """Resampled by 2^(cents/1200): pitch and tempo move together (cut or zero-padded to the same length)."""
    ratio = 2 ** (cents / 1200)
    positions = np.arange(len(x)) * ratio
    return np.interp(positions, np.arange(len(x)), x, right=0.0)


def noise_under_syllables(db: float) -> Degradation:
    """White noise following the clip's envelope at `db` below it (the broadband noise a decoder adds)."""
    return lambda x, sr, rng: x + rng.standard_normal(len(x)) * envelope(x) * 10 ** (db / 20)


def images(db: float, spacing_hz: float = 2000.0) -> Degradation:
    """Copies of the clip shifted by +-`spacing_hz`, each at `db` below it: the spectral images a decoder whose
    learned transform hops 16 samples at 32 kHz leaves at +-2 kHz around every tone."""
    def degrade(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        carrier = np.cos(2 * np.pi * spacing_hz * np.arange(len(x)) / sr)
        return x + 2 * 10 ** (db / 20) * x * carrier
    return degrade


def combined(*degradations: Degradation) -> Degradation:
    """The degradations applied one after the other."""
    def degrade(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        for d in degradations:
            x = d(x, sr, rng)
        return x
    return degrade


REAL_DEGRADATIONS: dict[str, Degradation] = {
    "gain x1.6": lambda x, sr, rng: np.clip(x * 1.6, -1, 1),
    "white noise at -60 dBFS": lambda x, sr, rng: x + rng.standard_normal(len(x)) * 1e-3,
    "noise under the syllables, -35 dB": noise_under_syllables(-35),
    "noise under the syllables, -25 dB": noise_under_syllables(-25),
    "pitch +-50 cents (random sign per clip)": lambda x, sr, rng: pitch_shift(x, 50 * rng.choice([-1, 1])),
    "pitch +-100 cents (random sign per clip)": lambda x, sr, rng: pitch_shift(x, 100 * rng.choice([-1, 1])),
    "low-pass 8 kHz": lambda x, sr, rng: sosfilt(butter(8, 8000, fs=sr, output="sos"), x),
    "images at +-2 kHz, -30 dB": images(-30),
    "images at +-2 kHz, -20 dB": images(-20),
    "images -30 dB + noise under the syllables -35 dB + pitch +-50 cents": combined(
        images(-30), noise_under_syllables(-35), lambda x, sr, rng: pitch_shift(x, 50 * rng.choice([-1, 1]))),
}


def swap_phase(magnitude_of: np.ndarray, phase_of: np.ndarray, window: int = 2048) -> np.ndarray:
    """The STFT magnitude of one clip with the STFT phase of another (Hann `window`, hop window / 2): which of the two
    carries a difference."""
    n = len(magnitude_of)
    phase_of = np.pad(phase_of[:n], (0, max(0, n - len(phase_of))))
    _, _, a = stft(magnitude_of, nperseg=window)
    _, _, b = stft(phase_of, nperseg=window)
    _, out = istft(np.abs(a) * np.exp(1j * np.angle(b)), nperseg=window)
    return np.pad(out[:n], (0, max(0, n - len(out))))


def mono(path: str) -> tuple[np.ndarray, int]:
    """The file as mono float64 and its rate."""
    audio, rate = sf.read(path, always_2d=True)
    return audio.mean(1), rate


def write_set(folder: Path, clips: list[tuple[str, np.ndarray, int]]) -> list[str]:
    """Write (name, audio, rate) clips as WAV files under `folder`; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, audio, rate in clips:
        path = folder / f"{name}.wav"
        sf.write(path, np.clip(audio, -1, 1).astype(np.float32), rate)
        paths.append(str(path))
    return paths


def main(argv: Optional[list[str]] = None) -> None:
    """Print FAD / floor for each degradation of the real test clips and each variant of the reconstructions."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="the data set's manifest.csv (test and train splits)")
    parser.add_argument("--reconstructions", help="a `main.analysis reconstruct` folder of the same test split")
    parser.add_argument("--floor-repeats", type=int, default=10,
                        help="train subsets (the test split's species mix and N) behind the floor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    test, train = read_manifest(args.manifest, "test"), read_manifest(args.manifest, "train")
    rng = np.random.default_rng(args.seed)
    originals = {Path(r["path"]).name: mono(r["path"]) for r in test}
    sets: dict[str, list[tuple[str, np.ndarray, int]]] = {}
    for name, degrade in REAL_DEGRADATIONS.items():
        sets[f"real test, {name}"] = [(Path(f).stem, degrade(x, sr, rng), sr) for f, (x, sr) in originals.items()]
    if args.reconstructions:
        folder = Path(args.reconstructions)
        with open(folder / "clips.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        pairs = [(originals[r["source"]], mono(str(folder / r["file"]))) for r in rows if r["source"] in originals]
        if len(pairs) != len(originals):
            raise SystemExit(f"{folder}: {len(pairs)} reconstructions of the {len(originals)} test recordings; "
                             "reconstruct the whole test split")
        sets["reconstructions"] = [(str(i), y, sr) for i, (_, (y, sr)) in enumerate(pairs)]
        sets["reconstructions, RMS matched to the original"] = [
            (str(i), y * np.sqrt((x ** 2).mean() / max((y ** 2).mean(), 1e-12)), sr)
            for i, ((x, _), (y, sr)) in enumerate(pairs)]
        sets["originals' STFT magnitude, reconstructions' phase"] = [
            (str(i), swap_phase(x, y), sr) for i, ((x, _), (y, sr)) in enumerate(pairs)]
        sets["reconstructions' STFT magnitude, originals' phase"] = [
            (str(i), swap_phase(y, x), sr) for i, ((x, _), (y, sr)) in enumerate(pairs)]
        sets["reconstructions, low-pass 12 kHz"] = [
            (str(i), sosfilt(butter(8, 12000, fs=sr, output="sos"), y), sr) for i, (_, (y, sr)) in enumerate(pairs)]

    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: write_set(Path(tmp) / str(i), clips) for i, (name, clips) in enumerate(sets.items())}
        real_test = [r["path"] for r in test]
        reference = [r["path"] for r in train]
        scores = score_files([*real_test, *reference, *(p for ps in paths.values() for p in ps)])
        embedding = dict(zip(scores.paths, scores.embeddings))
    real = np.stack([embedding[p] for p in real_test])
    reference_embeddings = np.stack([embedding[p] for p in reference])
    test_species, reference_species = [r["sci_name"] for r in test], [r["sci_name"] for r in train]
    # The report's FAD / floor (main.analysis.fidelity.fad_ratio): every set holds the test split's species mix.
    results = {name: fad_ratio(np.stack([embedding[p] for p in ps]), test_species, reference_embeddings,
                               reference_species, real, repeats=args.floor_repeats, seed=args.seed)
               for name, ps in paths.items()}
    first = next(iter(results.values()))
    print(f"floor: FAD of {first['n_floor']} real train clips (the test split's species mix) vs the {len(real)} real "
          f"test clips, mean of {first['repeats']} subsets: {first['floor']:.1f}")
    print("| clips | FAD BirdNET | FAD / floor [95% over the floor subsets] |\n|---|---|---|")
    for name, result in results.items():
        low, high = result["ci95"]
        print(f"| {name} | {result['fad']:.1f} | {result['ratio']:.2f} [{low:.2f}, {high:.2f}] |")

if __name__ == "__main__":
    main()
