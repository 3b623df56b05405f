"""Train a DMAE (DiffAE) or DiffGen: `python train.py exp=dmae`, resume with `'+ckpt="path/last.ckpt"'`."""

import sys

import hydra
from omegaconf import DictConfig

from main.config import register_resolvers

register_resolvers()


@hydra.main(config_path=".", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from main.config import ConfigError
    from main.training import train

    try:
        train(cfg)
    except ConfigError as error:  # one clear line, not a traceback
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
