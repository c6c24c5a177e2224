"""A tiny ViT-MAE teacher (8×8 single-channel images, 2×2 patches: a 4×4 grid of 16 patches)."""
from __future__ import annotations

import pytest
import torch

from hmmlvd.lvd.images import MAETeacher, TeacherConfig


def tiny_config(**changes) -> TeacherConfig:
    values = dict(image_size=8, num_channels=1, patch_size=2, hidden_size=16, num_layers=1, num_heads=2,
                  intermediate_size=32, decoder_hidden_size=16, decoder_num_layers=1, decoder_num_heads=2,
                  decoder_intermediate_size=32, epochs=2, batch_size=16, learning_rate=3e-3, warmup_fraction=0.0)
    values.update(changes)
    return TeacherConfig(**values)


def random_images(count: int, seed: int = 0, size: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def tiny_teacher() -> MAETeacher:
    """An untrained (seeded) tiny teacher: enough to test which patches the encoder sees."""
    return MAETeacher.initialise(tiny_config(num_layers=2), (0.5,), (0.25,))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and do not stall when another process holds the other core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
