"""The web UI end to end in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import shutil
import socket

import pytest
import soundfile as sf

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NEEDS_CHROMIUM = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (.ci/run installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@NEEDS_CHROMIUM
def test_webui_generates_audio_and_spectrogram(tmp_path, tiny_exports):
    from playwright.sync_api import sync_playwright

    from main.models import get_default_combined_sampler
    from main.webui import build_app

    model = get_default_combined_sampler(tiny_exports["diffae"], tiny_exports["diffgen"], device="cpu")
    prompts = {"Synthia fluvialis": "Synthia fluvialis; morning; song", "Turdus merula": "Turdus merula; evening; song"}
    app = build_app(model, prompts, out_dir=str(tmp_path))
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                "--disable-background-networking", "--disable-component-update"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.click("#species input")
            page.get_by_role("option", name="Turdus merula").click()
            # picking a species fills the prompt with its training label, the format the models learned
            page.wait_for_function("document.querySelector('#prompt textarea').value === 'Turdus merula; evening; song'")
            page.fill("#seconds input[type=number]", "1")
            page.press("#seconds input[type=number]", "Enter")
            page.fill("#steps input[type=number]", "3")
            page.press("#steps input[type=number]", "Enter")
            page.click("#generate")
            page.wait_for_selector("#spectrogram img", timeout=120_000)
            page.wait_for_function("document.querySelector('#spectrogram img').naturalWidth > 0")
            player = page.wait_for_selector("#audio audio[src]", state="attached")
            duration = player.evaluate("a => a.readyState >= 1 ? a.duration : new Promise(done => "
                                       "a.addEventListener('loadedmetadata', () => done(a.duration)))")
            browser.close()
    finally:
        app.close()
    assert abs(duration - 1.0) < 0.05  # the browser decoded one second of audio
    wavs = list(tmp_path.glob("*.wav"))
    assert len(wavs) == 1 and wavs[0].name.startswith("Turdus_merula")
    info = sf.info(str(wavs[0]))
    assert info.samplerate == 16000 and info.channels == 2 and info.frames == 16000
    assert wavs[0].with_suffix(".png").is_file()


def test_generate_uses_the_picked_species_when_the_prompt_is_empty():
    from main.webui import resolve_prompt

    assert resolve_prompt("", "Turdus merula") == "Turdus merula"  # Generate pressed before the prompt filled
    label = "Turdus merula; morning; week 20; 2020; Spain; 30.0 seconds; 5 of 5; song"
    assert resolve_prompt(" ", "Turdus merula", {"Turdus merula": label}) == label
    assert resolve_prompt("Turdus merula; song", "Synthia fluvialis") == "Turdus merula; song"
    with pytest.raises(ValueError, match="pick a species"):
        resolve_prompt("  ", None)


def test_species_prompts_are_training_labels(tmp_path_factory):
    """The picker's prompt for each species is the label of its first training recording."""
    from main.data.manifest import read_manifest
    from main.webui import species_prompts
    from tests.data_helpers import small_synthetic_manifest

    manifest = small_synthetic_manifest(tmp_path_factory)
    rows = read_manifest(manifest)
    prompts = species_prompts(str(manifest))
    assert list(prompts) == sorted({r["sci_name"] for r in rows})
    for name, prompt in prompts.items():
        first = min((r for r in rows if r["sci_name"] == name and r["split"] == "train"), key=lambda r: r["file"])
        assert prompt == first["label"] and prompt.startswith(name)
    assert species_prompts(None) == {}
