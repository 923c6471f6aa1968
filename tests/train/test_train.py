import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from robustdiag.data import Augment
from robustdiag.train import CheckpointStore, NonFiniteLossError, Regime, corrupt_labels, fit, predict_logits
from robustdiag.train.schedules import Constant, Cosine, OneCycle


def _data(n: int = 96, k: int = 4, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % k
    images = torch.randint(0, 60, (n, 1, size, size), generator=g, dtype=torch.uint8)
    images[:, :, : size // 2] += (labels * 60).view(-1, 1, 1, 1).to(torch.uint8)  # class signal
    return images, labels


def _model(k: int = 4, size: int = 6) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(size * size, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, k)
    )


def _regime(epochs: int = 4, lr: float = 0.3, **kw) -> Regime:
    return Regime(
        name="test",
        epochs=epochs,
        batch_size=16,
        optimizer=functools.partial(torch.optim.SGD, lr=lr, momentum=0.9),
        schedule=Cosine(warmup=0.1),
        augment=Augment(crop_padding=1, flip=True),
        **kw,
    )


def test_corrupt_labels_fraction_and_seed() -> None:
    labels = torch.arange(1000) % 10
    assert torch.equal(corrupt_labels(labels, q=0.0, num_classes=10, seed=0), labels)
    noisy = corrupt_labels(labels, q=0.5, num_classes=10, seed=3)
    changed = (noisy != labels).float().mean().item()
    assert 0.5 * 0.9 - 0.05 < changed < 0.5 * 0.9 + 0.05  # redrawn uniformly: 1/K keep their class
    assert torch.equal(noisy, corrupt_labels(labels, q=0.5, num_classes=10, seed=3))
    assert not torch.equal(noisy, corrupt_labels(labels, q=0.5, num_classes=10, seed=4))
    with pytest.raises(ValueError, match="train.q"):
        corrupt_labels(labels, q=1.5, num_classes=10, seed=0)


@pytest.mark.parametrize("schedule", [Constant(warmup=0.1), Cosine(warmup=0.1), OneCycle()])
def test_schedules_are_bounded_multipliers(schedule) -> None:
    values = [schedule(i / 100) for i in range(101)]
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in values)
    assert max(values) == pytest.approx(1.0, abs=0.02)


def test_fit_learns_and_caches(tmp_path) -> None:
    images, labels = _data()
    model = _model()
    store = CheckpointStore(tmp_path / "ck")
    result = fit(model, images, labels, _regime(epochs=10), device=torch.device("cpu"), seed=0, store=store)
    assert result.epochs == 10 and result.epochs_run == 10
    acc = (predict_logits(model, images, batch_size=32).argmax(1) == labels).float().mean()
    assert acc > 0.9
    again = _model()
    cached = fit(again, images, labels, _regime(epochs=10), device=torch.device("cpu"), seed=0, store=store)
    assert cached.epochs_run == 0 and cached.resumed_from == 10  # loaded, not retrained
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_resume_after_interruption_gives_identical_weights(tmp_path) -> None:
    images, labels = _data()
    torch.manual_seed(1)
    straight = _model()
    fit(
        straight,
        images,
        labels,
        _regime(epochs=4),
        device=torch.device("cpu"),
        seed=7,
        store=CheckpointStore(tmp_path / "a"),
    )

    class Kill(Exception):
        pass

    store = CheckpointStore(tmp_path / "b")
    torch.manual_seed(1)  # the same initial weights, as a rerun of the same config would build
    killed = _model()
    original_save = store.save

    def save_then_die(state):
        original_save(state)
        if state["epoch"] == 2:
            raise Kill

    store.save = save_then_die
    with pytest.raises(Kill):
        fit(killed, images, labels, _regime(epochs=4), device=torch.device("cpu"), seed=7, store=store)
    store.save = original_save
    resumed = _model()  # a fresh process: new weights, state comes from the checkpoint
    result = fit(resumed, images, labels, _regime(epochs=4), device=torch.device("cpu"), seed=7, store=store)
    assert result.resumed_from == 2 and result.epochs_run == 2
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_corrupt_checkpoint_warns_and_retrains(tmp_path) -> None:
    images, labels = _data()
    store = CheckpointStore(tmp_path / "ck")
    store.root.mkdir(parents=True)
    store.path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        result = fit(
            _model(), images, labels, _regime(epochs=2), device=torch.device("cpu"), seed=0, store=store
        )
    assert result.resumed_from == 0 and result.epochs_run == 2
    assert (store.root / "last.corrupt").exists()
    assert store.load() is not None  # a good checkpoint replaced it


def test_memorise_stops_at_train_accuracy_threshold() -> None:
    images, labels = _data(n=32)
    random = corrupt_labels(labels, q=1.0, num_classes=4, seed=0)
    regime = Regime(
        name="memorise", epochs=300, batch_size=32, q=1.0, stop_train_acc=1.0,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-2), schedule=Constant(),
    )  # fmt: skip
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 256), nn.ReLU(), nn.Linear(256, 4))
    result = fit(model, images, random, regime, device=torch.device("cpu"), seed=0)
    assert result.epochs < 300 and result.history[-1].acc == 1.0


def test_nan_loss_stops_with_clear_error() -> None:
    images, labels = _data()
    with pytest.raises(NonFiniteLossError, match="lr"):
        fit(_model(), images, labels, _regime(epochs=3, lr=1e30), device=torch.device("cpu"), seed=0)


def test_adversarial_regime_trains_on_attacked_batches_in_eval_mode() -> None:
    """The loop hands every batch to the adversary with the model in eval mode, then trains on x_adv."""
    images, labels = _data()
    seen: list[tuple[bool, int]] = []

    def adversary(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator
    ) -> torch.Tensor:
        seen.append((model.training, x.shape[0]))
        return (x + 0.01 * torch.randn(x.shape, generator=generator)).clamp(0, 1)

    model = _model()
    result = fit(
        model, images, labels, _regime(epochs=2, adversary=adversary), device=torch.device("cpu"), seed=0
    )
    assert result.epochs == 2
    assert len(seen) == 2 * (images.shape[0] // 16) and not any(training for training, _ in seen)
    assert model.training  # back in train mode after each attack


def test_pgd_adversarial_training_gives_a_more_robust_model() -> None:
    """PGD-AT through the real loop and attack: robust accuracy at eps rises over standard training."""
    from robustdiag.attacks import PGD, evaluate_attack

    g = torch.Generator().manual_seed(0)
    n = 256
    labels = torch.arange(n) % 2
    sign = labels.view(-1, 1, 1, 1).float() * 2 - 1  # (N, 1, 1, 1) in {-1, +1}
    # 15 noisy pixels carry a robust signal (means 0.35 vs 0.65); pixel 0 a perfectly predictive but
    # tiny one (0.48 vs 0.52) that an eps=0.06 attack can flip: standard training leans on it.
    images = 127.5 + 38 * sign + 64 * torch.randn(n, 1, 4, 4, generator=g)
    images[:, :, 0, 0] = 127.5 + 5 * sign.view(-1, 1)
    images = images.clamp(0, 255).round().to(torch.uint8)
    x, y = images.float() / 255, labels
    attack = PGD(norm="linf", eps=0.06, step_size=0.015, steps=10)
    accuracies = {}
    for name, adversary in (("standard", None), ("adversarial", attack)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 2))
        regime = Regime(
            name=name, epochs=15, batch_size=32, adversary=adversary,
            optimizer=functools.partial(torch.optim.Adam, lr=3e-3), schedule=Constant(),
        )  # fmt: skip
        fit(model, images, labels, regime, device=torch.device("cpu"), seed=0)
        accuracies[name] = evaluate_attack(attack, model.eval(), x, y, batch_size=256, seed=0).acc
    assert accuracies["adversarial"] > accuracies["standard"] + 0.05, accuracies


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    from robustdiag.errors import describe
    from robustdiag.train import checkpoints
    from robustdiag.train.checkpoints import CheckpointStore, CheckpointWriteError

    store = CheckpointStore(tmp_path / "ckpt")
    store.save({"model": {"w": torch.ones(2)}, "epoch": 1})
    good = store.path.read_bytes()

    def full_disk_save(state, path):  # what torch does when the disk fills: half a file, then an error
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(checkpoints.torch, "save", full_disk_save)
    monkeypatch.setattr(checkpoints, "_disk_full", lambda root, err: True)
    with pytest.raises(CheckpointWriteError) as err:
        store.save({"model": {"w": torch.zeros(2)}, "epoch": 2})
    message = describe(err.value)
    assert (
        "the disk is full" in message
        and "the previous checkpoint is kept" in message
        and "cache_dir" in message
    )
    assert store.path.read_bytes() == good  # the previous checkpoint survives
    assert sorted(p.name for p in store.root.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_two_processes_on_one_configuration_take_turns(tmp_path) -> None:
    import threading
    import time

    from robustdiag.train.checkpoints import CheckpointStore

    events: list[str] = []
    first_holds = threading.Event()

    def train(name: str, hold: float) -> None:
        with CheckpointStore(tmp_path / "ckpt").exclusive():  # a separate lock file handle, like a process
            events.append(f"{name} start")
            first_holds.set()
            time.sleep(hold)
            events.append(f"{name} end")

    first = threading.Thread(target=train, args=("first", 0.5))
    first.start()
    first_holds.wait()
    second = threading.Thread(target=train, args=("second", 0.0))
    second.start()
    first.join()
    second.join()
    assert events == ["first start", "first end", "second start", "second end"]
