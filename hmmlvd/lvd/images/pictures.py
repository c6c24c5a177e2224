"""Pictures people look at: a grid of samples and of exact inpaintings, written as a PNG."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ...io import atomic_write_png
from .model import PatchImageModel

MASKS = ("bottom", "top", "left", "right", "centre")


def region_mask(name: str, height: int, width: int) -> Tensor:
    """A boolean [H, W] mask, True where pixels are hidden: half of the image, or its centre square."""
    if name not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {name!r}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    if name == "bottom":
        mask[height // 2:] = True
    elif name == "top":
        mask[:height // 2] = True
    elif name == "left":
        mask[:, :width // 2] = True
    elif name == "right":
        mask[:, width // 2:] = True
    else:
        mask[height // 4:height - height // 4, width // 4:width - width // 4] = True
    return mask


def sample_grid(model: PatchImageModel, images: Tensor, path: str | os.PathLike, *, num_samples: int = 16,
                mask: str = "bottom", num_inpaintings: int = 3, seed: int = 0) -> Path:
    """Write a PNG: a row of unconditional samples, then for each of ``images`` [n, C, H, W] (uint8) the original,
    the masked input and ``num_inpaintings`` exact conditional samples of the hidden region."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels, height, width = model.image_shape
    hidden = region_mask(mask, height, width)
    samples = model.sample(num_samples, seed=seed)
    columns = max(num_samples, 2 + num_inpaintings)
    rows = 1 + len(images)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.95), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for column, sample in enumerate(samples):
        _show(axes[0, column], sample)
    axes[0, 0].set_title("samples", fontsize=7, loc="left")
    for row, image in enumerate(images, start=1):
        fills = model.inpaint(image.expand(num_inpaintings, -1, -1, -1), hidden, seed=seed + row)
        masked = image.clone()
        masked[:, hidden] = 0
        for column, picture in enumerate([image, masked, *fills]):
            _show(axes[row, column], picture)
    if len(images):
        axes[1, 0].set_title("original", fontsize=7)
        axes[1, 1].set_title(f"{mask} hidden", fontsize=7)
        axes[1, 2].set_title("exact inpaintings", fontsize=7, loc="left")
    figure.tight_layout()
    atomic_write_png(path, figure)
    plt.close(figure)
    return Path(path)


def _show(axis, image: Tensor) -> None:
    picture = image.permute(1, 2, 0).numpy()
    if picture.shape[2] == 1:
        axis.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=255)
    else:
        axis.imshow(picture)
