"""Checkpoints in the layout of the original bird-diffusion code (Max-Wurthmann/audiodiffusion), made with tiny
models: LightningModules with the same attributes as its `train/main/models.py` (`model`, an ema-pytorch `EMA`
with the library's defaults, and for the DiffGen a frozen T5 `text_encoder` and the `diffae`), trained for a few
steps by Lightning and saved as Lightning saves them. Written from a reading of that module, not copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from audio_diffusion_pytorch import DiffusionModel, UNetV0, VDiffusion, VSampler
from ema_pytorch import EMA
from torch import Tensor, nn

from main.models import build_diffae

ORIGINAL_OPTIMIZER = dict(lr=1e-4, betas=(0.95, 0.999), eps=1e-6, weight_decay=1e-3)


class OldStyleHparams:
    """Stands for the Python objects old Lightning versions pickled into checkpoints (e.g. an hparams class)."""

    lr = 1e-4


def original_diffgen_unet(config: dict[str, Any]) -> DiffusionModel:
    """A DiffGen built as the original's `get_default_diffgen` builds it: the library's own attention, no mask."""
    return DiffusionModel(
        net_t=UNetV0, in_channels=config["in_channels"], channels=config["channels"], factors=config["factors"],
        items=config["items"], attentions=config["attentions"], cross_attentions=config["cross_attentions"],
        attention_heads=config["attention_heads"], attention_features=config["attention_features"],
        diffusion_t=VDiffusion, sampler_t=VSampler, embedding_max_length=config["embedding_max_length"],
        embedding_features=config["embedding_features"], use_text_conditioning=False, use_embedding_cfg=True,
    )


def tiny_t5_folder(folder: Path, d_model: int = 384) -> Path:
    """A one-layer T5 with a byte-level tokenizer (no vocabulary file), saved as a Hugging Face folder."""
    from transformers import ByT5Tokenizer, T5Config, T5Model

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config = T5Config(vocab_size=384, d_model=d_model, d_kv=32, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5Model(config).save_pretrained(folder)
    ByT5Tokenizer().save_pretrained(folder)
    return folder


class OriginalStyleDMAE(pl.LightningModule):
    """The original's DMAE: `model` (a DiffusionAE) and its `ema`, AdamW over `self.parameters()`."""

    def __init__(self, diffae_config: dict[str, Any]):
        super().__init__()
        self.model = build_diffae(**diffae_config)
        self.ema = EMA(self.model, beta=0.995, power=0.7)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(list(self.parameters()), **ORIGINAL_OPTIMIZER)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.model(batch["audio"])
        self.ema.update()
        return loss


class OriginalStyleDiffGen(pl.LightningModule):
    """The original's DiffGen: `model`, `ema`, a frozen T5 `text_encoder` (the encoder stack) and the `diffae`;
    its text embeddings keep the padding tokens, AdamW over `self.model.parameters()`."""

    def __init__(self, diffgen_config: dict[str, Any], diffae: nn.Module, t5_folder: Path, max_length: int):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.model = original_diffgen_unet(diffgen_config)
        self.ema = EMA(self.model, beta=0.995, power=0.7)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(t5_folder, model_max_length=max_length)
        self.text_encoder = AutoModel.from_pretrained(t5_folder).encoder.eval()
        self.diffae = diffae.eval()

    @torch.no_grad()
    def get_text_embeddings(self, texts: list[str]) -> Tensor:
        tokens = self.tokenizer(texts, return_tensors="pt", padding="max_length", max_length=self.max_length,
                                truncation=True)
        return self.text_encoder(input_ids=tokens["input_ids"],
                                 attention_mask=tokens["attention_mask"]).last_hidden_state

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(list(self.model.parameters()), **ORIGINAL_OPTIMIZER)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        with torch.no_grad():
            latent = self.diffae.encode(batch["audio"])
        loss = self.model(latent, embedding=self.get_text_embeddings(batch["text"]), embedding_mask_proba=0.1)
        self.ema.update()
        return loss


def train_and_save(module: pl.LightningModule, loader: Any, path: Path, steps: int = 3) -> Path:
    """A few optimizer steps, then the checkpoint Lightning writes; the EMA copy is then moved away from the
    online weights (as after a long run) so that tests can tell which of the two a loader picked."""
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    with torch.no_grad():
        for p in module.ema.ema_model.parameters():
            p.add_(0.01)
    trainer.save_checkpoint(path)
    return path
