"""A tiny LightningModule and data for the Lightning and DDP tests (imported by them, not collected)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Tiny(L.LightningModule):
    """A linear regression that logs train_loss every step and val_loss every epoch; raises at step ``fail_at``."""

    def __init__(self, lr: float = 0.1, fail_at: int = -1, arch: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.hparams.fail_at:
            raise RuntimeError(f"failing on purpose at step {self.global_step}")
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def data() -> DataLoader[Any]:
    """32 samples in batches of 8: 4 batches, the same every time."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def trainer(logger: Any, **options: Any) -> L.Trainer:
    """A quiet CPU Trainer: 2 epochs of 4 batches, a row every step."""
    settings: dict[str, Any] = dict(
        max_epochs=2, limit_train_batches=4, limit_val_batches=2, log_every_n_steps=1, accelerator="cpu",
        devices=1, enable_progress_bar=False, enable_model_summary=False, logger=logger,
    )
    settings.update(options)
    return L.Trainer(**settings)


def log_on_a_copy(pickled: bytes) -> None:
    """In a spawned process: load a pickled Trainer, log on its logger's copy and save (no finalize)."""
    import pickle

    trainer = pickle.loads(pickled)
    trainer.logger.log_metrics({"acc": 1.0}, step=1)
    trainer.logger.save()
