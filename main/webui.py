"""A web UI for generating bird sounds with trained models (Gradio).

    python -m main.webui --model path/to/save_pretrained_folder --manifest data/xc/manifest.csv
    python -m main.webui --diffae exports/diffae.safetensors --diffgen exports/diffgen.safetensors

Opens on http://127.0.0.1:7860: prompt, species picker (from the training labels), CFG scale, steps, seed and
duration; plays the generated clip and shows its spectrogram.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from main.audio import save_audio, save_spectrogram_png, slug  # noqa: E402
from main.diffusion import SAMPLERS  # noqa: E402
from main.inference.device import resolve_device  # noqa: E402
from main.inference.pipeline import CombinedSampler, get_default_combined_sampler  # noqa: E402


def species_prompts(manifest: Optional[str]) -> dict[str, str]:
    """Each species of a manifest with a prompt to start from: the label of its first training recording (by file
    name; any split when it has none), i.e. the label format the models learned. Empty without a manifest."""
    if not manifest:
        return {}
    from main.data.manifest import read_manifest

    rows = sorted(read_manifest(manifest), key=lambda row: (row.get("split") != "train", str(row["file"])))
    prompts: dict[str, str] = {}
    for row in rows:
        prompts.setdefault(str(row["sci_name"]), str(row.get("label") or row["sci_name"]))
    return dict(sorted(prompts.items()))


def resolve_prompt(prompt: Optional[str], species: Optional[str],
                   prompts: Optional[Mapping[str, str]] = None) -> str:
    """The text to generate from: the prompt, or the picked species' prompt when the prompt is still empty (the
    species picker fills the prompt through its own event, which may not have run when Generate is pressed)."""
    picked = (species or "").strip()
    text = (prompt or "").strip() or (prompts or {}).get(picked, picked)
    if not text:
        raise ValueError("Enter a prompt or pick a species.")
    return text


def generate_clip(model: CombinedSampler, out: Path, prompt: str, species_name: Optional[str], cfg: float,
                  steps: int, seed: int, seconds: float, sampler: str,
                  prompts: Optional[Mapping[str, str]] = None) -> tuple[str, str]:
    """The Generate button: one clip for the prompt (or the picked species' prompt) into `out`; returns its WAV
    and PNG."""
    try:
        prompt = resolve_prompt(prompt, species_name, prompts)
    except ValueError as error:
        raise gr.Error(str(error)) from error
    audio = model.sample([prompt], sampling_steps=int(steps), decoding_steps=int(steps), embedding_scale=cfg,
                         latent_length=model.latent_frames(seconds), sampler=sampler, seed=int(seed))
    clip = audio[0, :, : round(seconds * model.sample_rate)]
    name = f"{slug(prompt)}_{int(seed)}_{int(steps)}_{cfg:g}"
    wav = save_audio(out / f"{name}.wav", clip, model.sample_rate)
    png = save_spectrogram_png(out / f"{name}.png", clip, model.sample_rate, prompt)
    return str(wav), str(png)


def build_app(model: CombinedSampler, species: Union[Mapping[str, str], Sequence[str]] = (),
              out_dir: Optional[str] = None) -> gr.Blocks:
    """The Gradio app around a CombinedSampler; `species` maps each species of the picker to the prompt picking it
    fills in (`species_prompts`), or lists species whose name is the prompt."""
    out = Path(out_dir or tempfile.mkdtemp(prefix="bird-webui-"))
    prompts = dict(species) if isinstance(species, Mapping) else {name: name for name in species}

    def generate(prompt: str, species_name: Optional[str], cfg: float, steps: int, seed: int, seconds: float,
                 sampler: str) -> tuple[str, str]:
        return generate_clip(model, out, prompt, species_name, cfg, steps, seed, seconds, sampler, prompts)

    with gr.Blocks(title="Bird-sound diffusion") as app:
        gr.Markdown("## Bird-sound text-to-audio diffusion")
        with gr.Row():
            with gr.Column():
                species_box = gr.Dropdown(choices=list(prompts), label="Species", elem_id="species")
                prompt = gr.Textbox(label="Prompt", placeholder="Turdus merula; morning; song", elem_id="prompt")
                cfg = gr.Slider(1.0, 15.0, value=5.0, step=0.5, label="CFG scale")
                steps = gr.Slider(2, 200, value=25, step=1, label="Steps", elem_id="steps")
                seed = gr.Number(value=0, precision=0, label="Seed")
                seconds = gr.Slider(0.5, 60.0, value=5.0, step=0.5, label="Duration (s)", elem_id="seconds")
                sampler = gr.Radio(list(SAMPLERS), value="dpmpp-2m", label="Sampler")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                audio = gr.Audio(label="Generated audio", type="filepath", elem_id="audio")
                image = gr.Image(label="Spectrogram", type="filepath", elem_id="spectrogram")
        species_box.change(lambda name: prompts.get(name, name or ""), species_box, prompt)
        button.click(generate, [prompt, species_box, cfg, steps, seed, seconds, sampler], [audio, image])
    return app


def main(argv: Optional[list[str]] = None) -> Any:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="folder written by CombinedSampler.save_pretrained, or a hub repository")
    parser.add_argument("--diffae", help="exported DiffAE (.safetensors) or checkpoint")
    parser.add_argument("--diffgen", help="exported DiffGen (.safetensors) or checkpoint")
    parser.add_argument("--manifest", help="training manifest: fills the species picker, which fills the prompt "
                                           "with a training label of the picked species")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.model:
        model = CombinedSampler.from_pretrained(args.model, device=device)
    elif args.diffae and args.diffgen:
        model = get_default_combined_sampler(args.diffae, args.diffgen, device=device)
    else:
        parser.error("give --model, or both --diffae and --diffgen")
    app = build_app(model, species_prompts(args.manifest))
    app.launch(server_name=args.host, server_port=args.port)
    return app


if __name__ == "__main__":
    main()
