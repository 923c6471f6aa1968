"""CPU and CUDA give the same corrupted images under the same seed (random numbers are drawn on the CPU)."""

from __future__ import annotations

import pytest
import torch
from shift_images import natural_images

from robustdiag.shifts import CORRUPTIONS, AdversarialShift, apply_shift

pytestmark = pytest.mark.gpu

# JPEG rounds to 8-bit levels, so a float difference at a rounding boundary moves a value by one level.
TOLERANCE = {"jpeg_compression": 1.01 / 255}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("size", [32, 64])
def test_cuda_matches_cpu(name: str, size: int) -> None:
    x = natural_images(6, 3, size, seed=4).float()
    shift = CORRUPTIONS[name]()
    for severity in (1, 3, 5):
        cpu = apply_shift(shift, x, severity, seed=0, batch_size=4)
        cuda = apply_shift(shift, x.cuda(), severity, seed=0, batch_size=4)
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, atol=TOLERANCE.get(name, 1e-4), rtol=0, msg=name)


def test_cuda_generator_on_the_device_works() -> None:
    x = natural_images(4, 3, 32).float().cuda()
    for name, cls in CORRUPTIONS.items():
        out = apply_shift(cls(), x, 3, seed=0, batch_size=4, generator_device=None)
        assert out.device == x.device and out.shape == x.shape, name


def test_adversarial_shift_gets_a_cuda_generator() -> None:
    received: list[torch.device] = []

    def attack(
        model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        assert generator is not None
        received.append(generator.device)
        return x

    x = torch.rand(2, 3, 8, 8, device="cuda")
    apply_shift(
        AdversarialShift(attack),
        x,
        1,
        seed=0,
        batch_size=2,
        y=torch.zeros(2, dtype=torch.long),
        model=torch.nn.Identity(),
    )
    assert received[0].type == "cuda"
