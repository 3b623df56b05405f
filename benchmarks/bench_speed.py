"""Speed of this repository against the seed's way of doing the same work, in one run on one machine.

    python benchmarks/bench_speed.py train     # DiffGen training steps/s: on-the-fly T5 + DiffAE encoder vs pre-encoded
    python benchmarks/bench_speed.py train --model dmae --crop 262144 # DiffAE training steps/s: the library's loss
                                                                       # and PyTorch's default AdamW vs the DMAE's
    python benchmarks/bench_speed.py sample    # text -> audio: seed sampler (DDIM 100+100, unbatched CFG) vs ours
    python benchmarks/bench_speed.py train --device cuda --bf16   # on a GPU, both sides under bf16 autocast
    python benchmarks/bench_speed.py optimizer # one AdamW step: PyTorch's default (a loop) vs ours (fused)

Both use the seed's model sizes (DiffGen 562.6M, DiffAE 185.1M, a t5-base-sized encoder with random weights:
same compute as t5-base, no download). Absolute seconds drift on shared machines; read the ratios. Each bench_*
function prints its figures and returns them; `benchmarks/gpu_check.py` gathers them into one table.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from audio_diffusion_pytorch import DiffusionModel, UNetV0, VDiffusion, VSampler

from main.diffusion import sample as run_sampler
from main.inference.decoding import decode_latent
from main.inference.guidance import guided_velocity_fn
from main.modules import text_conditional_loss
from main.modules.base import adamw
from main.nets.builders import build_diffae, build_diffgen
from main.nets.defaults import DIFFGEN_CONFIG, merged_config

Overrides = Optional[dict[str, Any]]  # model hyper-parameters other than the seed's (smaller models for tests)
T5_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)


def t5_base_sized_encoder(**overrides: int):
    """A T5 encoder with t5-base's dimensions (or `overrides`) and random weights (identical FLOPs to t5-base)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(**{**T5_BASE, **overrides})
    return T5EncoderModel(config).eval().requires_grad_(False)


def seed_diffgen(**overrides: Any) -> DiffusionModel:
    """The seed's DiffGen exactly as its README builds it (einsum attention, no text mask); `overrides` change
    its hyper-parameters."""
    c = merged_config(DIFFGEN_CONFIG, overrides)
    return DiffusionModel(net_t=UNetV0, in_channels=c["in_channels"], channels=c["channels"], factors=c["factors"],
                          items=c["items"], attentions=c["attentions"], cross_attentions=c["cross_attentions"],
                          attention_heads=c["attention_heads"], attention_features=c["attention_features"],
                          diffusion_t=VDiffusion, sampler_t=VSampler, embedding_max_length=c["embedding_max_length"],
                          embedding_features=c["embedding_features"], use_text_conditioning=False,
                          use_embedding_cfg=True)


def synchronize(device: str) -> None:
    """Wait for queued GPU work (timings must include it)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1, device: str = "cpu") -> float:
    """Mean seconds per call after `warmup` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def precision(device: str, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast (as trainer.precision=bf16-mixed) or plain fp32."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def peak_memory_gb(device: str) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident memory of this process (CPU), in GiB."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_memory(device: str) -> str:
    """`peak_memory_gb` in words."""
    return f"peak {'GPU memory' if device.startswith('cuda') else 'RSS'} {peak_memory_gb(device):.1f} GB"


def reset_peak_memory(device: str) -> None:
    """Start a new peak-memory window (CUDA only; RSS peaks cannot be reset)."""
    if device.startswith("cuda"):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def where(device: str, bf16: bool) -> str:
    """The device and precision of a measurement, in words."""
    return f"{device}, {'bf16 autocast' if bf16 else 'fp32'}, {torch.get_num_threads()} CPU threads"


def optimizer_step(loss_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, device: str,
                   bf16: bool) -> Callable[[], None]:
    """One training step: the loss (under autocast with `bf16`), backward, the optimizer's step."""
    def step() -> None:
        with precision(device, bf16):
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def train_result(title: str, device: str, bf16: bool, seed: tuple[str, float, float], our_name: str,
                 our_s: float) -> dict[str, float]:
    """Print a training comparison, the seed's side given as (what it does, seconds per step, peak memory) and ours
    measured last (its peak memory is the current one), and return its figures."""
    seed_name, seed_s, seed_memory = seed
    result = {"seed_s": seed_s, "ours_s": our_s, "seed_memory_gb": seed_memory,
              "ours_memory_gb": peak_memory_gb(device)}
    print(f"{title} ({where(device, bf16)})")
    width = max(len(seed_name), len(our_name)) + 12
    for side, name, seconds, memory in (("seed", seed_name, seed_s, seed_memory),
                                        ("ours", our_name, our_s, result["ours_memory_gb"])):
        print(f"  {side} ({name}):".ljust(width) + f"{1 / seconds:.4f} steps/s  ({seconds:.3f} s/step, "
              f"peak {memory:.1f} GB)")
    print(f"  speed-up: {seed_s / our_s:.2f}x")
    return result


def bench_train(batch_size: int, crop: int, repeats: int, device: str = "cpu", bf16: bool = False,
                diffae: Overrides = None, diffgen: Overrides = None, text: Overrides = None) -> dict[str, float]:
    """DiffGen optimizer steps/s: seed (T5 + DiffAE encoder every step) vs pre-encoded latents/embeddings.
    Returns seconds per step and peak memory (GiB) of each side."""
    torch.manual_seed(0)
    diffgen = diffgen or {}
    tokens_length = int(diffgen.get("embedding_max_length", DIFFGEN_CONFIG["embedding_max_length"]))
    audio = (torch.randn(batch_size, 2, crop).clamp(-1, 1) * 0.3).to(device)
    tokens = torch.randint(0, int((text or {}).get("vocab_size", 32000)), (batch_size, tokens_length), device=device)
    attention = torch.ones(batch_size, tokens_length, dtype=torch.long, device=device)
    attention[:, 35:] = 0  # mean label length in the seed's data

    encoder = build_diffae(**(diffae or {})).encoder.eval().requires_grad_(False).to(device)
    text_encoder = t5_base_sized_encoder(**(text or {})).to(device)
    seed_model = seed_diffgen(**diffgen).to(device)
    optimizer = torch.optim.AdamW(seed_model.parameters(), lr=1e-4)

    def seed_loss() -> torch.Tensor:
        with torch.no_grad():
            latent = encoder(audio)
            embedding = text_encoder(input_ids=tokens, attention_mask=attention).last_hidden_state
        return seed_model(latent, embedding=embedding, embedding_mask_proba=0.1)

    reset_peak_memory(device)
    seed_s = timed(optimizer_step(seed_loss, optimizer, device, bf16), repeats, device=device)
    seed_memory = peak_memory_gb(device)
    with torch.no_grad(), precision(device, bf16):
        latent = encoder(audio).float()
        embedding = text_encoder(input_ids=tokens, attention_mask=attention).last_hidden_state.float()
    seed_model = optimizer = encoder = text_encoder = None  # free the seed setup before building ours
    reset_peak_memory(device)

    ours = build_diffgen(**diffgen).to(device)
    optimizer = adamw(list(ours.parameters()), lr=1e-4)
    cached = embedding.half()  # what main.preencode stores
    mask = attention.bool()

    our_s = timed(optimizer_step(lambda: text_conditional_loss(ours, latent, cached.float(), mask, 0.1), optimizer,
                                 device, bf16), repeats, device=device)
    return train_result(f"DiffGen training, batch {batch_size}, crop {crop} samples", device, bf16,
                        ("T5 + DiffAE encoder on the fly", seed_s, seed_memory), "pre-encoded, masked SDPA", our_s)


def bench_train_dmae(batch_size: int, crop: int, repeats: int, device: str = "cpu", bf16: bool = False,
                     diffae: Overrides = None) -> dict[str, float]:
    """DiffAE optimizer steps/s: the seed's (the library's `DiffusionAE` loss, PyTorch's default AdamW) vs the
    DMAE module's (its `diffusion_loss`, fused AdamW). Both hold their model's EMA copy, as training does; the EMA
    update itself is left out on both sides, as in `bench_train`. Returns seconds per step and peak memory (GiB)."""
    from main.modules import DMAE

    torch.manual_seed(0)
    audio = (torch.randn(batch_size, 2, crop).clamp(-1, 1) * 0.3).to(device)
    reset_peak_memory(device)
    seed_model = build_diffae(**(diffae or {})).to(device)
    seed_ema = build_diffae(**(diffae or {})).requires_grad_(False).to(device)  # ema-pytorch's copy
    optimizer = torch.optim.AdamW(seed_model.parameters(), lr=1e-4)

    seed_s = timed(optimizer_step(lambda: seed_model(audio), optimizer, device, bf16), repeats, device=device)
    seed_memory = peak_memory_gb(device)
    seed_model = seed_ema = optimizer = None
    reset_peak_memory(device)

    module = DMAE(model=diffae or {}).to(device)
    optimizer = adamw([p for p in module.model.parameters() if p.requires_grad], lr=1e-4)
    batch = {"audio": audio}
    our_s = timed(optimizer_step(lambda: module.diffusion_loss(module.model, batch, True), optimizer, device, bf16),
                  repeats, device=device)
    return train_result(f"DiffAE (DMAE) training, batch {batch_size}, crop {crop} samples", device, bf16,
                        ("library loss, default AdamW", seed_s, seed_memory), "DMAE loss, fused AdamW", our_s)


def bench_sample(latent_length: int, batch_size: int, seed_steps: int, our_steps: int, device: str = "cpu",
                 bf16: bool = False, diffae: Overrides = None, diffgen: Overrides = None) -> dict[str, float]:
    """Text embedding -> audio wall time: seed sampler vs ours (batched CFG, SDPA, DDIM and DPM-Solver++).
    Returns the seconds of each, the seconds of audio made and the peak memory (GiB)."""
    torch.manual_seed(0)
    c = merged_config(DIFFGEN_CONFIG, diffgen or {})
    reset_peak_memory(device)
    diffae_model = build_diffae(**(diffae or {})).eval().to(device)
    embedding = torch.randn(batch_size, c["embedding_max_length"], c["embedding_features"], device=device)
    mask = torch.zeros(batch_size, c["embedding_max_length"], dtype=torch.bool, device=device)
    mask[:, :35] = True
    noise = torch.randn(batch_size, c["in_channels"], latent_length, device=device)
    seed_model = seed_diffgen(**(diffgen or {})).eval().to(device)
    warmup = 1 if device.startswith("cuda") else 0  # kernel selection and allocator warm-up on GPUs

    def seed_sample(steps: int) -> Callable[[], None]:
        def run() -> None:
            with precision(device, bf16):
                latent = seed_model.sample(noise, embedding=embedding, embedding_scale=5.0, num_steps=steps)
                diffae_model.decode(latent, num_steps=steps)
        return run

    with torch.no_grad():
        if warmup:
            timed(seed_sample(2), 1, warmup=0, device=device)
        seed_s = timed(seed_sample(seed_steps), 1, warmup=0, device=device)
    ours = build_diffgen(**(diffgen or {})).eval().to(device)
    ours.load_state_dict(seed_model.state_dict())
    seed_model = None
    gc.collect()

    def our_sample(sampler: str, steps: int) -> Callable[[], None]:
        def run() -> None:
            with precision(device, bf16):
                velocity = guided_velocity_fn(ours, embedding, mask, 5.0)
                latent = run_sampler(velocity, noise, steps, sampler)
                decode_latent(diffae_model, latent, steps, sampler)
        return run

    with torch.no_grad():
        if warmup:
            timed(our_sample("dpmpp-2m", 2), 1, warmup=0, device=device)
        ddim_s = timed(our_sample("ddim", seed_steps), 1, warmup=0, device=device)
        dpm_s = timed(our_sample("dpmpp-2m", our_steps), 1, warmup=0, device=device)
    audio_s = latent_length * diffae_model.latent_factor / 32000 * batch_size
    print(f"Text -> audio, batch {batch_size}, latent {latent_length} frames ({audio_s:.1f} s of audio at 32 kHz; "
          f"{where(device, bf16)}); real-time factor = audio seconds per wall second")
    print(f"  seed  DDIM {seed_steps}+{seed_steps}, unbatched CFG: {seed_s:.2f} s  (real-time factor {audio_s / seed_s:.2f})")
    print(f"  ours  DDIM {seed_steps}+{seed_steps}, batched CFG:   {ddim_s:.2f} s  ({seed_s / ddim_s:.2f}x, "
          f"real-time factor {audio_s / ddim_s:.2f})")
    print(f"  ours  DPM-Solver++(2M) {our_steps}+{our_steps}:      {dpm_s:.2f} s  ({seed_s / dpm_s:.2f}x, "
          f"real-time factor {audio_s / dpm_s:.2f})")
    print(f"  {peak_memory(device)}")
    return {"seed_s": seed_s, "ddim_s": ddim_s, "dpm_s": dpm_s, "audio_s": audio_s,
            "memory_gb": peak_memory_gb(device)}


def bench_optimizer(repeats: int, device: str = "cpu") -> None:
    """One AdamW step over the demo DiffGen's and the original-size DiffGen's parameters: PyTorch's default
    (a loop over the parameters on a CPU) against `main.modules.base.adamw` (fused)."""
    from omegaconf import OmegaConf

    from main.demo import compose_experiment

    demo = build_diffgen(**OmegaConf.to_container(compose_experiment(["exp=diffgen_demo"]).model.model))
    models = {"demo DiffGen": demo, "original-size DiffGen": build_diffgen()}
    for name, model in models.items():
        params = [p for p in model.to(device).parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        default = torch.optim.AdamW(params, lr=1e-4)
        ours = adamw(params, lr=1e-4)
        default_s = timed(default.step, repeats, device=device)
        ours_s = timed(ours.step, repeats, device=device)
        print(f"{name} ({sum(p.numel() for p in params) / 1e6:.1f}M parameters, {device}, "
              f"{torch.get_num_threads()} threads): default {default_s * 1000:.1f} ms, fused {ours_s * 1000:.1f} ms "
              f"({default_s / ours_s:.2f}x)")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    train = sub.add_parser("train")
    train.add_argument("--model", choices=("diffgen", "dmae"), default="diffgen",
                       help="DiffGen (text -> latent) or the DiffAE's DMAE training")
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--crop", type=int, default=2**20, help="audio samples per item (the seed's DMAE: 2^18)")
    train.add_argument("--repeats", type=int, default=3)
    sample = sub.add_parser("sample")
    sample.add_argument("--latent-length", type=int, default=64)
    sample.add_argument("--batch-size", type=int, default=1)
    sample.add_argument("--seed-steps", type=int, default=100)
    sample.add_argument("--our-steps", type=int, default=25)
    optimizer = sub.add_parser("optimizer")
    optimizer.add_argument("--repeats", type=int, default=20)
    for sub_parser in (train, sample, optimizer):
        sub_parser.add_argument("--device", default="cpu", help="cpu or cuda")
    for sub_parser in (train, sample):
        sub_parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both sides")
    args = parser.parse_args()
    torch.set_float32_matmul_precision("high")  # as config.yaml's matmul_precision: TF32 on GPUs, no-op on CPU
    if args.what == "train":
        bench = bench_train if args.model == "diffgen" else bench_train_dmae
        bench(args.batch_size, args.crop, args.repeats, args.device, args.bf16)
    elif args.what == "optimizer":
        bench_optimizer(args.repeats, args.device)
    else:
        bench_sample(args.latent_length, args.batch_size, args.seed_steps, args.our_steps, args.device, args.bf16)


if __name__ == "__main__":
    main()
