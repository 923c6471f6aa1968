"""The one training loop (:func:`fit`) and the one prediction function (:func:`predict_logits`).

Data stays on the device as uint8 and is shuffled/augmented there in batches (``DeviceLoader``). The
loop checkpoints after every epoch: model, optimiser, schedule and RNG state, so a killed run resumes
from its last epoch and reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustdiag.data import DeviceLoader
from robustdiag.progress import progress
from robustdiag.train.checkpoints import CheckpointStore
from robustdiag.train.regime import Regime

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training diverged (NaN/inf loss)."""


@dataclass
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean training loss on the trained labels
    acc: float  # running training accuracy (train mode, augmented inputs)
    lr: float
    seconds: float


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when this call started (0: fresh)
    epochs_run: int = 0  # epochs trained by this call
    seconds: float = 0.0  # wall time of this call

    @property
    def epochs(self) -> int:
        return len(self.history)


def fit(
    model: nn.Module,
    images: torch.Tensor,  # (N, C, H, W) uint8
    labels: torch.Tensor,  # (N,) int64 labels to train on (possibly randomised)
    regime: Regime,
    *,
    device: torch.device,
    seed: int,
    store: CheckpointStore | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place under ``regime``, resuming from ``store`` when it holds a checkpoint.

    ``on_epoch`` sees every epoch's statistics as it ends (e.g. a tracker streaming training curves)."""
    start_time = time.perf_counter()
    torch.manual_seed(seed)
    model.to(device)
    if device.type == "cuda" and regime.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = DeviceLoader(
        images,
        labels,
        regime.batch_size,
        shuffle=True,
        drop_last=images.shape[0] > regime.batch_size,
        augment=regime.augment,
        device=device,
        seed=seed,
    )
    if regime.optimizer is None or regime.schedule is None:
        raise ValueError(f"train={regime.name} has no optimizer/schedule: it evaluates only and cannot train")
    schedule = regime.schedule
    optimizer = regime.optimizer(model.parameters())
    total_steps = regime.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step / total_steps))
    result = TrainResult()
    state = store.load() if store is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        result.history = [EpochStats(**row) for row in state["history"]]
        result.resumed_from = int(state["epoch"])
        if state["done"]:
            log.info("loaded trained model from cache (%d epochs)", result.resumed_from)
            result.seconds = time.perf_counter() - start_time
            return result
        log.info("resumed from epoch %d", result.resumed_from)
    adversary_rng = torch.Generator(device=device)
    for epoch in range(result.resumed_from, regime.epochs):
        loader.set_epoch(epoch)
        adversary_rng.manual_seed(seed * 1_000_003 + epoch)
        stats = _train_epoch(model, loader, optimizer, scheduler, regime, epoch, adversary_rng)
        result.history.append(stats)
        result.epochs_run += 1
        reached = _reached_stop_accuracy(model, images, labels, regime, stats)
        done = epoch + 1 == regime.epochs or reached
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.4f  lr %.3g  (%.1fs)",
            stats.epoch, regime.epochs, stats.loss, stats.acc, stats.lr, stats.seconds,
        )  # fmt: skip
        if store is not None:
            store.save(_state(model, optimizer, scheduler, result.history, epoch + 1, done))
        if on_epoch is not None:
            on_epoch(stats)
        if done:
            if reached:
                log.info("train accuracy (eval mode) >= stop_train_acc %.3f: stopping", regime.stop_train_acc)
            break
    result.seconds = time.perf_counter() - start_time
    return result


def _train_epoch(
    model: nn.Module,
    loader: DeviceLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    regime: Regime,
    epoch: int,
    adversary_rng: torch.Generator,
) -> EpochStats:
    """One pass over ``loader``; loss and accuracy are accumulated on the device (one sync per epoch)."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    model.train()
    for x, y in progress(loader, desc=f"epoch {epoch + 1}/{regime.epochs}", total=len(loader), unit="batch"):
        if regime.adversary is not None:
            model.eval()  # attack the model as it will be evaluated (BatchNorm in inference mode)
            x = regime.adversary(model, x, y, generator=adversary_rng)
            model.train()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=_amp(regime, device)):
            logits = model(x)  # (B, K)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=regime.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.argmax(dim=1) == y).sum()
        seen += y.shape[0]
    mean_loss = loss_sum.item() / max(1, seen)
    if not math.isfinite(mean_loss):
        raise NonFiniteLossError(
            f"training loss became {mean_loss} in epoch {epoch + 1} of regime {regime.name!r}. "
            "Lower train.optimizer.lr, add warm-up (train.schedule.warmup), or set train.amp=false; "
            "the last finite checkpoint is kept in the cache"
        )
    return EpochStats(
        epoch=epoch + 1,
        loss=mean_loss,
        acc=correct.item() / max(1, seen),
        lr=optimizer.param_groups[0]["lr"],
        seconds=time.perf_counter() - start,
    )


def _reached_stop_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, regime: Regime, stats: EpochStats
) -> bool:
    """Whether train accuracy on the trained labels, measured as evaluated (eval mode, no
    augmentation), reaches ``regime.stop_train_acc``. Only checked once the running accuracy of the
    epoch has reached it, so it costs one extra pass over the train set near the end of training."""
    if regime.stop_train_acc is None or stats.acc < regime.stop_train_acc:
        return False
    logits = predict_logits(model, images, batch_size=max(256, regime.batch_size))
    accuracy = (logits.argmax(dim=1) == labels.to(logits.device)).float().mean().item()
    log.info("running train accuracy %.4f; in eval mode %.4f", stats.acc, accuracy)
    model.train()
    return accuracy >= regime.stop_train_acc


def _amp(regime: Regime, device: torch.device) -> bool:
    return regime.amp and device.type == "cuda"


def fast_paths(regime: Regime, device: torch.device) -> dict[str, bool]:
    """Which of the training loop's CUDA fast paths a run on ``device`` uses (the record says so)."""
    cuda = device.type == "cuda"
    return {"bf16_autocast": _amp(regime, device), "channels_last": bool(regime.channels_last and cuda)}


def _state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    history: list[EpochStats],
    epoch: int,
    done: bool,
) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "history": [asdict(row) for row in history],
        "epoch": epoch,
        "done": done,
    }


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int) -> torch.Tensor:
    """Logits (N, K) of ``model`` in eval mode for images ``x`` (N, C, H, W), uint8 or float in [0, 1].

    Batches are moved to the model's device; the result stays there (float32).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size].to(device, non_blocking=True)
        if batch.dtype == torch.uint8:
            batch = batch.float().div_(255)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outputs.append(model(batch).float())
    model.train(was_training)
    return torch.cat(outputs)


def accuracy_and_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``logits`` (N, K) against ``labels`` (N,)."""
    labels = labels.to(logits.device)
    acc = (logits.argmax(dim=1) == labels).float().mean().item()
    loss = F.cross_entropy(logits, labels).item()
    return acc, loss
