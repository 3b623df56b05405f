"""The latent species probe: classifier, Wilson intervals, per-species selection, and that text conditioning is
real (a DiffGen trained on a few prompts generates latents of the prompted class; an empty prompt does not)."""

from __future__ import annotations

import pytest
import torch

from main.analysis.latent_species import (
    LatentSpeciesClassifier,
    pooled_latent_features,
    select_per_species,
    wilson_interval,
)

CLASSES = ["Alpha avis", "Beta avis", "Gamma avis"]


def class_latents(index: torch.Tensor, frames: int = 16, channels: int = 8, seed: int = 0) -> torch.Tensor:
    """Latents [N, channels, frames] whose class sets the sign pattern of the channel means (and the tempo)."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.tensor([[1, -1, 1, -1, 1, -1, 1, -1], [1, 1, -1, -1, 1, 1, -1, -1],
                             [-1, -1, -1, -1, 1, 1, 1, 1]], dtype=torch.float32)[:, :channels] * 0.6
    noise = 0.15 * torch.randn(len(index), channels, frames, generator=generator)
    return patterns[index][..., None] + noise


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(100, 100)
    assert high == 1.0 and low == pytest.approx(0.9630, abs=1e-4)


def test_pooled_features_are_mean_std_and_frame_change():
    latent = torch.tensor([[[0.0, 1.0, 0.0, 1.0]]])
    features = pooled_latent_features(latent)
    torch.testing.assert_close(features, torch.tensor([[0.5, 0.5, 1.0]]))
    with pytest.raises(ValueError, match="batch, channels, frames"):
        pooled_latent_features(torch.zeros(4, 8))
    # over blocks of 2 frames the alternation averages out: constant 0.5, no spread, no change
    torch.testing.assert_close(pooled_latent_features(latent, pool_frames=2), torch.tensor([[0.5, 0.0, 0.0]]))


def test_probe_ignores_jitter_within_its_pooling_blocks():
    """Generated latents with the right code plus frame-level jitter (as DiffGen with patch_size 4 makes them)
    are read as their species once statistics are taken over 4-frame blocks, not over single frames."""
    index = torch.arange(60) % 3
    clean = class_latents(index)
    jitter = torch.tensor([1.0, -1.0, 1.0, -1.0]).repeat(clean.shape[-1] // 4) * 1.2
    test_index = torch.arange(30) % 3
    jittered = class_latents(test_index, seed=1) + jitter * (torch.arange(30) % 2 * 2 - 1)[:, None, None]
    names = [CLASSES[i] for i in test_index]
    pooled = LatentSpeciesClassifier.fit(clean, [CLASSES[i] for i in index])
    raw = LatentSpeciesClassifier.fit(clean, [CLASSES[i] for i in index], pool_frames=1)
    assert pooled.pool_frames == 4 and pooled.evaluate(jittered, names)["accuracy"] == 1.0
    assert raw.evaluate(jittered, names)["accuracy"] < 0.7
    restored = LatentSpeciesClassifier.from_state_dict(pooled.state_dict())
    assert restored.pool_frames == 4 and restored.predict(jittered) == pooled.predict(jittered)


@pytest.mark.parametrize("method", ["ridge", "centroid"])
def test_classifier_separates_classes_and_round_trips(method):
    index = torch.arange(60) % 3
    classifier = LatentSpeciesClassifier.fit(class_latents(index), [CLASSES[i] for i in index], method)
    test_index = torch.arange(30) % 3
    result = classifier.evaluate(class_latents(test_index, seed=1), [CLASSES[i] for i in test_index])
    assert result["accuracy"] == 1.0 and result["n"] == 30 and result["chance"] == pytest.approx(1 / 3)
    assert result["ci95"][0] > 0.88 and set(result["per_species"]) == set(CLASSES)
    again = LatentSpeciesClassifier.from_state_dict(classifier.state_dict())
    assert again.predict(class_latents(test_index, seed=2)) == classifier.predict(class_latents(test_index, seed=2))
    with pytest.raises(ValueError, match="at least 2 species"):
        LatentSpeciesClassifier.fit(class_latents(index[:3] * 0), ["x"] * 3)


def test_select_per_species_is_seeded_and_keeps_the_most_frequent():
    names = ["a"] * 5 + ["b"] * 3 + ["c"] * 1
    chosen = select_per_species(names, 2, seed=0)
    assert chosen == select_per_species(names, 2, seed=0)
    assert [names[i] for i in chosen] == ["a", "a", "b", "b", "c"]
    assert {names[i] for i in select_per_species(names, 2, max_species=2)} == {"a", "b"}


def test_text_conditioning_is_real(tiny_diffgen_config, text_encoder_path):
    """A tiny DiffGen trained on three prompts generates latents the probe assigns to the prompted class far above
    chance; at CFG 1 the empty prompt gives latents that do not follow the (arbitrary) prompts of that test."""
    from main.models import build_diffgen, generate_latent
    from main.modules import text_conditional_loss
    from main.text import FrozenTextEncoder

    torch.manual_seed(0)
    text = FrozenTextEncoder(text_encoder_path, 32)
    prompts = [f"{name}; morning; song" for name in CLASSES]
    embedding, mask = text(prompts)
    model = build_diffgen(**tiny_diffgen_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(150):
        index = torch.randint(0, 3, (24,))
        loss = text_conditional_loss(model, class_latents(index, seed=step + 10), embedding[index], mask[index],
                                     cfg_mask_proba=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    reference = torch.arange(90) % 3
    classifier = LatentSpeciesClassifier.fit(class_latents(reference, seed=3), [CLASSES[i] for i in reference])
    targets = torch.arange(30) % 3
    noise = torch.randn(30, 8, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        prompted = generate_latent(model, embedding[targets], mask[targets], noise, 10, 1.0, "dpmpp-2m")
        empty_embedding, empty_mask = text([""] * 30)
        unprompted = generate_latent(model, empty_embedding, empty_mask, noise, 10, 1.0, "dpmpp-2m")
    names = [CLASSES[i] for i in targets]
    assert classifier.evaluate(prompted, names)["accuracy"] >= 0.9
    assert classifier.evaluate(unprompted, names)["accuracy"] <= 0.6
