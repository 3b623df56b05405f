"""Lightning modules: `DMAE` trains the DiffAE, `DiffGen` the text-conditional latent diffusion model.

Both share `EMADiffusionModule` (`main.modules.base`); DiffGen's loss is `main.modules.losses`. Configs and
checkpoints name the classes by these paths (`main.modules.DMAE`, `main.modules.DiffGen`).
"""

from __future__ import annotations

from main.modules.base import LR_SCHEDULES, EMADiffusionModule, lr_factor, plain
from main.modules.diffgen import DiffGen
from main.modules.dmae import DMAE
from main.modules.losses import text_conditional_loss

__all__ = ["DMAE", "LR_SCHEDULES", "DiffGen", "EMADiffusionModule", "lr_factor", "plain", "text_conditional_loss"]
