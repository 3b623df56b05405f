"""The real-bird DiffAE shipped in `pretrained/`: it loads, records the command that made it, and its `trained_on`
list is exactly the training split of the pinned packaged recordings under the recorded split settings, so the
recordings its figures are measured on (docs/real_birds.md) were held out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from main.data.splits import assign_splits
from main.models import decode_latent, load_model
from tests.conftest import ROOT

WEIGHTS = ROOT / "pretrained" / "diffae_real_birds.safetensors"
PINS = json.loads((ROOT / "main/data/sources/packaged_recordings.json").read_text())["recordings"]


def recording_id(pin: dict) -> str:
    """The manifest id `prepare --packaged` gives a pinned recording: `<package>_<file stem>`."""
    return f"{pin['package']}_{Path(pin['path']).stem}"


def test_trained_on_is_the_training_split_of_the_pinned_recordings():
    config = json.loads(WEIGHTS.with_suffix(".json").read_text())
    command = config["provenance"]["command"]
    assert "train.py exp=dmae_real_birds" in command
    fractions = [float(x) for x in re.search(r"--splits ([\d.]+) ([\d.]+) ([\d.]+)", command).groups()]
    seed = int(re.search(r"--seed (\d+)", command).group(1))
    splits = assign_splits([recording_id(p) for p in PINS], [p["sci_name"] for p in PINS], fractions, seed)
    train = {p["sha256"]: p for p, split in zip(PINS, splits) if split == "train"}
    trained_on = config["trained_on"]
    assert {item["sha256"] for item in trained_on} == set(train)
    for item in trained_on:
        assert item["sci_name"] == train[item["sha256"]]["sci_name"]
        assert item["file"] == f"audio/{recording_id(train[item['sha256']])}{Path(train[item['sha256']]['path']).suffix}"
    held_out = [p for p, split in zip(PINS, splits) if split != "train"]
    assert len(trained_on) == 17 and len(held_out) == 13


def test_real_bird_diffae_reconstructs_a_note_at_its_pitch():
    """A 4 kHz note (a great tit's register) comes back with its energy peak within 250 Hz of 4 kHz."""
    model, config = load_model(WEIGHTS, "diffae")
    assert config["dtype"] == "float16" and config["sample_rate"] == 32000 and WEIGHTS.stat().st_size <= 25 * 2**20
    rate, length = 32000, 16384
    audio = (0.3 * torch.sin(2 * torch.pi * 4000 * torch.arange(length) / rate)).expand(1, model.in_channels, -1)
    with torch.no_grad():
        out = decode_latent(model.eval(), model.encode(audio), 12, "dpmpp-2m",
                            generator=torch.Generator().manual_seed(0))
    assert out.shape == audio.shape and torch.isfinite(out).all()
    spectrum = torch.fft.rfft(out[0].mean(0) * torch.hann_window(length)).abs()
    peak_hz = float(spectrum.argmax()) * rate / length
    assert abs(peak_hz - 4000) < 250, peak_hz
