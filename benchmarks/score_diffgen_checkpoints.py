"""Score DiffGen training checkpoints offline: EMA and online validation loss, and the latent species probe.

    python benchmarks/score_diffgen_checkpoints.py --preencoded data/preencoded_demo \\
        logs/a/checkpoints/last.ckpt logs/b/checkpoints/last.ckpt

Validation loss: the validation batches (`--batches`) with the validation seeds, as `valid/loss` in training.
Latent probe: `LatentSpeciesCallback` (the training callback's classifier and prompts) on the EMA model.
Used for the EMA-cadence comparison in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from main.callbacks import LatentSpeciesCallback  # noqa: E402
from main.data.latents import LatentDataModule  # noqa: E402
from main.modules import DiffGen  # noqa: E402
from main.nets.removed import drop_removed_from_saved  # noqa: E402


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--preencoded", required=True, help="the pre-encoded data the runs trained on")
    parser.add_argument("--crop-length", type=int, default=32768)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4, help="validation batches (trainer.limit_val_batches)")
    parser.add_argument("--seed", type=int, default=12345, help="the runs' datamodule seed")
    parser.add_argument("--cfg-scales", type=float, nargs="+", default=[1.0, 3.0])
    args = parser.parse_args()
    for path in args.checkpoints:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        saved = drop_removed_from_saved(checkpoint["hyper_parameters"], "diffgen", path, training=True)
        hparams = {k: v for k, v in saved.items() if k != "kind"}
        module = DiffGen(**hparams)
        module.load_state_dict(checkpoint["state_dict"])
        module.eval()
        data = LatentDataModule(preencoded=args.preencoded, sample_rate=hparams["sample_rate"],
                                crop_length=args.crop_length, batch_size=args.batch_size, num_workers=0,
                                seed=args.seed)
        data.setup("fit")
        batches = [b for _, b in zip(range(args.batches), data.val_dataloader())]
        losses = {}
        for name, model in (("ema", module.ema_model), ("online", module.model)):
            values = []
            for i, batch in enumerate(batches):
                with torch.random.fork_rng(), torch.no_grad():
                    torch.manual_seed(module.hparams.validation_seed + i)
                    values.append(module.diffusion_loss(model, batch, training=False).item())
            losses[name] = sum(values) / len(values)
        probe = LatentSpeciesCallback(per_species=3, cfg_scales=tuple(args.cfg_scales), steps=10, max_species=None)
        trainer = types.SimpleNamespace(datamodule=data, global_step=checkpoint["global_step"], loggers=[])
        result = probe.measure(trainer, module, log=False)
        scores = ", ".join(f"CFG {s:g} {result[f'cfg{s:g}']:.2f}" for s in args.cfg_scales)
        print(f"{path}: step {checkpoint['global_step']}, ema_update_every {hparams.get('ema_update_every')}: "
              f"valid loss EMA {losses['ema']:.4f}, online {losses['online']:.4f}; latent top-1 (EMA, "
              f"N = {len(probe._prompts or [])}) {scores}; real {result['real']:.2f}")


if __name__ == "__main__":
    main()
