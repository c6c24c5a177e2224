"""A patch circuit together with the image geometry it models: log-likelihoods, bits per dimension, samples and
exact inpainting of uint8 images [N, C, H, W]."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ...data.patches import PatchGrid, patchify, unpatchify
from ...io import atomic_write_json, read_json
from ... import pc
from ...pc import PatchCircuit

IMAGE_FILE = "image.json"


@dataclass
class PatchImageModel:
    """``circuit`` over the ``patch_size`` × ``patch_size`` patches of images of ``image_shape`` (C, H, W)."""

    circuit: PatchCircuit
    image_shape: tuple[int, int, int]
    patch_size: int

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(v) for v in self.image_shape)
        channels, height, width = self.image_shape
        grid = PatchGrid(height, width, self.patch_size)
        config = self.circuit.config
        if (grid.num_patches, channels * self.patch_size ** 2) != (config.num_patches, config.values_per_patch):
            raise ValueError(f"images {self.image_shape} in {self.patch_size}-pixel patches give {grid.num_patches} "
                             f"patches of {channels * self.patch_size ** 2} values, but the circuit models "
                             f"{config.num_patches} patches of {config.values_per_patch}")

    @property
    def num_dimensions(self) -> int:
        return math.prod(self.image_shape)

    def patches(self, images: Tensor, missing: Tensor | None = None) -> Tensor:
        """Pixel ids [N, P, D] of uint8 ``images`` [N, C, H, W]; ``missing`` (bool, broadcastable) becomes -1."""
        if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor [N, {', '.join(map(str, self.image_shape))}], got {got}")
        values = images.long()
        if missing is not None:
            values = values.masked_fill(torch.as_tensor(missing, dtype=torch.bool).expand_as(values), -1)
        return patchify(values, self.patch_size)

    def log_likelihood(self, images: Tensor, batch_size: int = 1024) -> Tensor:
        """``log p(image)`` (nats, float64 [N]), in batches."""
        patches = self.patches(images)
        with torch.no_grad():
            return torch.cat([self.circuit.log_likelihood(patches[i:i + batch_size].to(self.circuit.device))
                              .double().cpu() for i in range(0, len(patches), batch_size)])

    def bits_per_dimension(self, images: Tensor, batch_size: int = 1024) -> float:
        """``−log2 p(x) / (C·H·W)``, averaged over ``images``."""
        return -self.log_likelihood(images, batch_size).mean().item() / (self.num_dimensions * math.log(2))

    def sample(self, num_samples: int, seed: int = 0) -> Tensor:
        """Unconditional samples, uint8 [num_samples, C, H, W]."""
        patches = pc.sample(self.circuit, num_samples, generator=torch.Generator().manual_seed(seed))
        return unpatchify(patches.cpu(), self.image_shape).to(torch.uint8)

    def inpaint(self, images: Tensor, missing: Tensor, seed: int = 0) -> Tensor:
        """Exact conditional samples of the ``missing`` pixels (bool, broadcastable to ``images``) given the rest."""
        patches = self.patches(images, missing).to(self.circuit.device)
        filled = pc.sample(self.circuit, evidence=patches, generator=torch.Generator().manual_seed(seed))
        return unpatchify(filled.cpu(), self.image_shape).to(torch.uint8)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """The circuit's files plus ``image.json`` (image shape and patch size)."""
        self.circuit.save_pretrained(directory)
        atomic_write_json(Path(directory) / IMAGE_FILE, {"image_shape": list(self.image_shape),
                                                         "patch_size": self.patch_size})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> PatchImageModel:
        path = Path(directory) / IMAGE_FILE
        if not path.is_file():
            raise ValueError(f"{directory} holds no {IMAGE_FILE}: it is not an image model saved by "
                             "PatchImageModel.save_pretrained (hmmlvd image train writes one)")
        geometry = read_json(path)
        return cls(PatchCircuit.from_pretrained(directory, device=device), tuple(geometry["image_shape"]),
                   int(geometry["patch_size"]))
