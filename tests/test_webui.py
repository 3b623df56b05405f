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
    app = build_app(model, ["Synthia fluvialis", "Turdus merula"], out_dir=str(tmp_path))
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
            page.wait_for_function("document.querySelector('#prompt textarea').value === 'Turdus merula'")
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
    assert resolve_prompt("Turdus merula; song", "Synthia fluvialis") == "Turdus merula; song"
    with pytest.raises(ValueError, match="pick a species"):
        resolve_prompt("  ", None)
