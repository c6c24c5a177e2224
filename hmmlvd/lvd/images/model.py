"""A patch circuit together with the image geometry it models: log-likelihoods, bits per dimension, samples and
exact inpainting of uint8 images [N, C, H, W]."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ... import pc
from ...data.patches import PatchGrid, patchify, unpatchify
from ...distributed import concat_shards, shard
from ...io import CONFIG_FILE, read_json, read_model_type
from ...pc import PatchCircuit

MODEL_TYPE = "patch_image_model"
LEGACY_IMAGE_FILE = "image.json"     # the geometry beside a patch_circuit folder, as hmmlvd 0.1 wrote it


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
        """``−log2 p(x) / (C·H·W)``, averaged over ``images`` (each process of a ``torch.distributed`` run scores
        its shard; every process gets the same mean)."""
        log_likelihoods = concat_shards(self.log_likelihood(shard(images), batch_size), len(images))   # [N] float64
        return -log_likelihoods.mean().item() / (self.num_dimensions * math.log(2))

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
        """One artefact: ``config.json`` (model_type ``patch_image_model``: the circuit's fields plus
        ``image_shape`` and ``patch_size``) and ``model.safetensors``. ``hmmlvd.load`` opens it."""
        geometry = {"image_shape": list(self.image_shape), "patch_size": self.patch_size}
        self.circuit.save_pretrained(directory, model_type=MODEL_TYPE, extra_fields=geometry)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> PatchImageModel:
        """Load a folder written by :meth:`save_pretrained`, or by hmmlvd 0.1's image recipe (a ``patch_circuit``
        folder with the geometry in ``image.json``), checking the geometry and every parameter."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise ValueError(f"{directory} holds no {CONFIG_FILE} (nor the {LEGACY_IMAGE_FILE} of hmmlvd 0.1): it is "
                             "not an image model; 'hmmlvd image train' and PatchImageModel.save_pretrained write one")
        model_type, config = read_model_type(directory)
        if model_type == MODEL_TYPE:
            geometry, source = config, directory / CONFIG_FILE
        elif model_type == "patch_circuit" and (directory / LEGACY_IMAGE_FILE).is_file():
            geometry, source = read_json(directory / LEGACY_IMAGE_FILE), directory / LEGACY_IMAGE_FILE
        else:
            raise ValueError(f"{directory} is not an image model (model_type {model_type!r}, no {LEGACY_IMAGE_FILE}); "
                             "'hmmlvd image train' and PatchImageModel.save_pretrained write one")
        image_shape, patch_size = _checked_geometry(geometry, source)
        return cls(PatchCircuit.from_pretrained(directory, device=device), image_shape, patch_size)


def _checked_geometry(geometry, source: Path) -> tuple[tuple[int, int, int], int]:
    """``(image_shape, patch_size)`` read from ``geometry`` after checking their types and values."""
    shape = geometry.get("image_shape") if isinstance(geometry, dict) else None
    patch_size = geometry.get("patch_size") if isinstance(geometry, dict) else None
    if (not isinstance(shape, list) or len(shape) != 3 or not all(type(v) is int and v > 0 for v in shape)
            or type(patch_size) is not int or patch_size < 1):
        raise ValueError(f"{source}: image_shape must be three positive integers [C, H, W] and patch_size a positive "
                         f"integer, got {shape!r} and {patch_size!r}")
    return (shape[0], shape[1], shape[2]), patch_size
