"""Evaluate a model trained elsewhere, as a new user would: a plain PyTorch CIFAR-style ResNet-18 with its
own class definition and a saved state dict, through the CLI with ``train=none``; and a sweep over a
folder of checkpoints that ``robustdiag-analyze`` ranks."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from robustdiag.config import PACKAGE_CONFIG_DIR

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

# The classic CIFAR ResNet-18 (3x3 stem, no max-pool), as found in countless training scripts.
MY_MODELS = textwrap.dedent(
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))


    class ResNet18(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.in_planes = 64
            self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.layer1 = self._make_layer(64, 2, 1)
            self.layer2 = self._make_layer(128, 2, 2)
            self.layer3 = self._make_layer(256, 2, 2)
            self.layer4 = self._make_layer(512, 2, 2)
            self.linear = nn.Linear(512, num_classes)

        def _make_layer(self, planes, blocks, stride):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(self.in_planes, planes, s))
                self.in_planes = planes
            return nn.Sequential(*layers)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
            out = F.adaptive_avg_pool2d(out, 1).flatten(1)
            return self.linear(out)
    """
)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
DATA = ("data=synthetic", "data.n_train=200", "data.n_test=100")


def write_user_model(folder: Path):
    """The user's own file, imported the way their training script would."""
    path = folder / "my_models.py"
    path.write_text(MY_MODELS)
    spec = importlib.util.spec_from_file_location("user_models_direct", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trained_elsewhere(module, seed: int) -> torch.nn.Module:
    """A ResNet-18 'trained elsewhere': random weights plus non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = module.ResNet18(num_classes=10)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(16, 3, 32, 32))  # moves the running statistics away from their defaults
    return net.eval()


def cli(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ROBUSTDIAG_CACHE": str(cwd / "cache"),
        "ROBUSTDIAG_PROGRESS": "0",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    env.pop("ROBUSTDIAG_CONFIG_DIR", None)
    return subprocess.run(
        [str(BIN / "robustdiag"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_plain_pytorch_resnet18_state_dict_through_the_cli(tmp_path: Path) -> None:
    module = write_user_model(tmp_path)
    net = trained_elsewhere(module, seed=0)
    weights = tmp_path / "resnet18_cifar.pt"
    # saved from a DataParallel training script, inside a training-state dict
    torch.save({"epoch": 200, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, weights)

    run_dir = tmp_path / "run"
    out = cli(
        tmp_path,
        "train=none", "model=custom", "model._target_=my_models.ResNet18", "model.imports=[my_models.py]",
        f"model.checkpoint={weights.name}", f"model.mean={list(CIFAR_MEAN)}", f"model.std={list(CIFAR_STD)}",
        *DATA, "eval.n_samples=20", "eval.batch_size=20",
        "attack=pgd_linf", "attack.pgd_linf.steps=3", "metric=[fisher,path_separation,baselines]",
        "shift=gaussian_noise", "shift.severities=[3]", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "complete" and record["train/epochs"] == 0 and record["regime"] == "none"
    assert record["model/source"] == "factory" and record["model/architecture"] == "my_models.ResNet18"
    assert record["model/checkpoint"] == str(weights.resolve())
    assert record["model/checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["model/input_norm"] == "config" and record["model"] == "my_models.ResNet18@resnet18_cifar"
    for key in (
        "attack/pgd_linf/acc",
        "metric/fisher/mean",
        "metric/path_separation/excess",
        "shift/gaussian_noise/3/acc",
    ):
        assert isinstance(record.get(key), float), (key, record.get(key))

    # its logits equal a direct load's: the same test images, the user's own normalisation
    cfg = OmegaConf.load(Path(PACKAGE_CONFIG_DIR) / "data" / "synthetic.yaml")
    cfg.n_train, cfg.n_test = 200, 100
    bundle = instantiate(cfg).load(tmp_path / "cache")
    table = pd.read_csv(run_dir / "per_sample.csv")
    x = bundle.test.images[torch.as_tensor(table["index"].to_numpy().copy())].float() / 255
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        direct = net((x - mean) / std)  # (20, 10)
    assert np.array_equal(table["pred"].to_numpy(), direct.argmax(1).numpy())
    msp = 1 - torch.softmax(direct.double(), 1).max(1).values.numpy()
    np.testing.assert_allclose(table["metric/baselines/msp"].to_numpy(), msp, atol=1e-5)


def test_sweep_over_a_folder_of_checkpoints_is_ranked(tmp_path: Path) -> None:
    """One multirun over checkpoints (the shell lists the folder); the analysis ranks them like trained runs."""
    module = write_user_model(tmp_path)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for seed in range(3):
        torch.save(trained_elsewhere(module, seed).state_dict(), folder / f"run{seed}.pt")
    files = ",".join(str(p) for p in sorted(folder.glob("*.pt")))
    sweep = tmp_path / "sweep"
    out = cli(
        tmp_path,
        "-m", "train=none", "model=custom", "model._target_=my_models.ResNet18", "model.imports=[my_models.py]",
        f"model.checkpoint={files}", *DATA, "eval.n_samples=20", "eval.batch_size=20",
        "attack=fgsm", "metric=[baselines]", f"hydra.sweep.dir={sweep}", "threads=1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(3)]
    assert sorted(r["model"] for r in records) == [f"my_models.ResNet18@run{s}" for s in range(3)]
    assert len({r["model/checkpoint_sha256"] for r in records}) == 3
    ranking = pd.read_csv(sweep / "analysis" / "ranking.csv")
    assert set(ranking["model"]) == {r["model"] for r in records}
