"""Analysis metrics without BirdNET: AP / top-k by hand, kNN, Fréchet distance vs independent implementations,
log-mel embedding vs torchaudio, log-mel FAD on synthetic birds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from main.analysis.fad import LogMelEmbedder, RunningStats, frechet_distance, gaussian_stats, logmel_fad
from main.analysis.knn import knn_classify
from main.analysis.metrics import coverage, macro_average_precision, species_metrics

LABELS = ["Turdus merula", "Erithacus rubecula", "Parus major", "Other bird"]
CONFIDENCES = np.array([
    [0.9, 0.1, 0.2, 0.0],  # Turdus merula
    [0.4, 0.5, 0.1, 0.0],  # Turdus merula
    [0.6, 0.7, 0.3, 0.0],  # Erithacus rubecula
    [0.3, 0.2, 0.8, 0.9],  # Parus major
    [0.9, 0.9, 0.9, 0.9],  # Synthia fluvialis: not a BirdNET label, left out
])
SPECIES = ["Turdus merula", "Turdus merula", "Erithacus rubecula", "Parus major", "Synthia fluvialis"]


def test_average_precision_by_hand_and_sklearn():
    from sklearn.metrics import average_precision_score

    value, per_species = macro_average_precision(CONFIDENCES, SPECIES, LABELS)
    # Turdus merula ranked by its confidence over the 4 known clips: 0.9 (+), 0.6 (-), 0.4 (+), 0.3 (-):
    # precision 1/1 at the first positive, 2/3 at the second -> AP = (1 + 2/3) / 2 = 5/6.
    assert per_species["Turdus merula"] == pytest.approx(5 / 6)
    assert per_species["Erithacus rubecula"] == pytest.approx(1.0)  # its clip has the highest score
    assert per_species["Parus major"] == pytest.approx(1.0)
    assert value == pytest.approx((5 / 6 + 1 + 1) / 3)
    sk = average_precision_score([1, 1, 0, 0], CONFIDENCES[:4, 0])
    assert per_species["Turdus merula"] == pytest.approx(sk)


def test_species_metrics_top_k_detection_and_coverage():
    m = species_metrics(CONFIDENCES, SPECIES, LABELS, threshold=0.5)
    # best label: clip 0 Turdus (right), clip 1 Erithacus (wrong), clip 2 Erithacus (right), clip 3 Other (wrong)
    assert m["top1"] == pytest.approx(0.5)
    assert m["top5"] == pytest.approx(1.0)
    assert m["detection_rate"] == pytest.approx(0.75)  # 0.9, 0.4, 0.7, 0.8 against 0.5
    assert m["n_clips"] == 5 and m["n_clips_known"] == 4 and m["n_species_ap"] == 3
    assert m["coverage"]["species_known"] == 3 and m["coverage"]["species_fraction"] == pytest.approx(0.75)
    assert m["per_species"]["Synthia fluvialis"] == {"n": 1, "known": False}
    assert m["per_species"]["Turdus merula"]["top1"] == pytest.approx(0.5)
    # Silence (all labels tied at the floor) must not count as a correct top-1.
    silent = species_metrics(np.full((1, 4), 3e-7), ["Parus major"], LABELS)
    assert silent["top1"] == 0.0
    assert coverage(["parus  MAJOR"], LABELS)["species_known"] == 1  # case/space-insensitive names


def test_knn_confusion_and_per_species():
    ref = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=float)
    query = np.array([[1, 0.05], [0.05, 1], [0.95, 0.0]])
    result = knn_classify(ref, ["a", "a", "b", "b"], query, ["a", "b", "b"], k=1)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.species == ["a", "b"]
    assert result.confusion.tolist() == [[1, 0], [1, 1]]
    assert result.per_species["b"]["accuracy"] == pytest.approx(0.5)
    assert result.to_dict()["n_reference"] == 4


def _independent_fd(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 sum(sqrt(eigvals(S1 S2)))  (no matrix square root)."""
    eig = np.linalg.eigvals(s1 @ s2).astype(complex)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).real.sum())


@pytest.mark.parametrize("n,dim", [(200, 16), (12, 48)])  # full-rank and singular (N < dim) covariances
def test_frechet_distance_matches_independent_implementations(n, dim):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.3
    b = rng.normal(0.2, 1.3, size=(n + 5, dim))
    sa, sb = gaussian_stats(a), gaussian_stats(b)
    ours = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert ours == pytest.approx(_independent_fd(sa.mu, sa.sigma, sb.mu, sb.sigma), rel=1e-5, abs=1e-6)
    try:  # torchmetrics comes with pytorch-lightning; its FID formula is eigenvalue-based too
        from torchmetrics.image.fid import _compute_fid
    except ImportError:
        _compute_fid = None
    if _compute_fid is not None:
        tm = float(_compute_fid(*(torch.from_numpy(v) for v in (sa.mu, sa.sigma, sb.mu, sb.sigma))))
        assert ours == pytest.approx(tm, rel=1e-5, abs=1e-6)
    assert frechet_distance(sa.mu, sa.sigma, sa.mu, sa.sigma) == pytest.approx(0.0, abs=1e-6 * np.trace(sa.sigma))


def test_running_stats_equal_batch_stats():
    x = np.random.default_rng(1).normal(5.0, 2.0, size=(300, 8))
    running = RunningStats()
    for chunk in np.array_split(x, 7):
        running.update(chunk)
    stats, direct = running.stats(), gaussian_stats(x)
    np.testing.assert_allclose(stats.mu, direct.mu, rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, direct.sigma, rtol=1e-10, atol=1e-12)
    assert stats.n == 300 and stats.n_clips == 7


def test_logmel_frames_match_torchaudio_melspectrogram():
    import torchaudio

    audio = np.random.default_rng(2).normal(0, 0.1, 32000).astype(np.float32)
    ours = LogMelEmbedder().frames(audio)
    mel = torchaudio.transforms.MelSpectrogram(32000, n_fft=1024, hop_length=512, n_mels=64, f_min=50.0,
                                               f_max=15000.0).double()(torch.from_numpy(audio).double())
    reference = (10 * torch.log10(mel + 1e-10)).T.numpy()
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-2)


def test_logmel_fad_same_species_far_below_different_species(tmp_path):
    from main.analysis.clips import clips_from_manifest
    from main.data.synthetic import generate_synthetic_dataset

    draw_a = clips_from_manifest(generate_synthetic_dataset(tmp_path / "a", clips_per_species=3, duration_s=3.0,
                                                            sample_rate=32000, seed=0), None)
    draw_b = clips_from_manifest(generate_synthetic_dataset(tmp_path / "b", clips_per_species=3, duration_s=3.0,
                                                            sample_rate=32000, seed=1), None)
    first = sorted(set(draw_a.species))[:5]
    a = [p for p, s in zip(draw_a.paths, draw_a.species) if s in first]
    a_prime = [p for p, s in zip(draw_b.paths, draw_b.species) if s in first]
    b = [p for p, s in zip(draw_b.paths, draw_b.species) if s not in first]
    same, different = logmel_fad(a, a_prime), logmel_fad(a, b)
    assert same["clips_a"] == same["clips_b"] == 15 and same["n_a"] > 15 * 100  # N = frames, reported
    assert same["fad"] < 0.2 * different["fad"]  # measured: 374 vs 6936
