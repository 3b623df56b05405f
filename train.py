"""Train a DMAE (DiffAE) or DiffGen: `python train.py exp=dmae`, resume with `'+ckpt="path/last.ckpt"'`."""

import hydra
from omegaconf import DictConfig

from main.config import register_resolvers

register_resolvers()


@hydra.main(config_path=".", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from main.training import train

    train(cfg)


if __name__ == "__main__":
    main()
