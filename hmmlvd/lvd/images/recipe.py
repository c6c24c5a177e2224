"""The end-to-end image recipe (paper Sections 3–5), the same shape as the text recipe: a config
(:class:`ImageRecipeConfig` with its presets, in :mod:`.config`) and ``train(images, config)`` returning a result.

LVD: a teacher (the patch values by default, a masked autoencoder, any :class:`Teacher`) → patch features with
context → K-means per patch (Z [N, P]) → a patch circuit whose trees come from the data → the patch models fitted
in closed form on binned hidden states → Lemma 1 (each p(X_i | Z_i = c) fitted on its cluster's patches, p(Z) on
the assignments) → the latent-distribution step (p(Z) refitted on every image's cluster log-likelihoods) →
mini-batch EM on x alone. The baselines get the same EM
budget, counted in epochs over the training images: ``em`` is the same patch circuit from random parameters trained
by EM alone, ``hclt`` a pixel-level HCLT of comparable size. Every stage is kept and resumes exactly
(:mod:`.distil`, :mod:`.stages`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ... import pc
from ...data.patches import default_patch_size, patchify
from ...distributed import is_main_process, rank_and_world_size
from ...io import atomic_write_json
from .config import MODELS, PRESETS, ImageRecipeConfig
from .distil import distil_latents, teacher_for
from .model import PatchImageModel
from .stages import Run, TrainedModel, bits_per_dimension, model_bits_per_dimension, train_lvd, train_pixel_hclt
from .teachers import Teacher

RESULTS_FILE = "results.json"
MAX_HCLT_LATENTS = 64
__all__ = ["MODELS", "PRESETS", "ImageRecipeConfig", "ImageRecipeResult", "TrainedModel", "bits_per_dimension",
           "model_bits_per_dimension", "pixel_hclt_latents", "train"]


@dataclass
class ImageRecipeResult:
    """The trained models by name, the teacher used (None when latents were given), Z, and the stage seconds."""

    models: dict[str, TrainedModel]
    teacher: Teacher | None
    assignments: Tensor | None                 # Z [N, P] of the training images (LVD only)
    stage_seconds: dict[str, float]

    def as_dict(self) -> dict:
        return {"models": [m.row() for m in self.models.values()], "stage_seconds": self.stage_seconds}

    def save(self, directory: str | os.PathLike, description: dict | None = None) -> None:
        """Every trained model in ``directory/<name>``, then :meth:`write_results`."""
        for name, trained in self.models.items():
            trained.model.save_pretrained(Path(directory) / name)
        self.write_results(directory, description)

    def write_results(self, directory: str | os.PathLike, description: dict | None = None) -> None:
        """``directory/results.json``: ``description``, the world size and backend of the run, and :meth:`as_dict`."""
        world_size = rank_and_world_size()[1]
        atomic_write_json(Path(directory) / RESULTS_FILE, {
            **(description or {}), "world_size": world_size,
            "backend": torch.distributed.get_backend() if world_size > 1 else None, **self.as_dict()})


def pixel_hclt_latents(num_parameters: int, num_pixels: int, num_categories: int) -> int:
    """The HCLT hidden size whose parameter count (≈ pixels · (k · categories + k²)) is closest to
    ``num_parameters``, capped at ``MAX_HCLT_LATENTS`` (a CPU-sized pixel HCLT)."""
    def size(k: int) -> int:
        return num_pixels * (k * num_categories + k * k)
    return min(range(1, MAX_HCLT_LATENTS + 1), key=lambda k: abs(size(k) - num_parameters))


def train(train_images: Tensor, valid_images: Tensor, config: ImageRecipeConfig, *,
          test_images: Tensor | None = None, num_categories: int = 256, teacher: Teacher | None = None,
          assignments: Tensor | None = None, directory: str | os.PathLike | None = None, resume: bool = False,
          log: Callable[[str], None] | None = None, description: dict | None = None) -> ImageRecipeResult:
    """Train every model of ``config.models`` on uint8 images [N, C, H, W] and measure bits per dimension.

    ``teacher`` (any :class:`Teacher`) replaces the built-in one of :func:`teacher_for`; ``assignments`` (Z
    LongTensor [N, P] in 0..k-1) skips distillation: latents made elsewhere, e.g. the codes of a VQ-VAE (paper
    App. E.1).

    With ``directory`` every finished stage is kept there and every trained model is saved in
    ``directory/<model>``: the teacher, features and latents (see :func:`distil_latents`), the LVD circuit after
    each of its stages (``stages/``), EM checkpoints within a stage (``checkpoints/<stage>``) and each baseline.
    ``resume=True`` continues from what is there, recomputing nothing finished. The results go to
    ``directory/results.json`` with ``description`` (e.g. the dataset). ``log`` receives one line per stage.
    """
    log = log or (lambda line: None)
    _check_images(train_images, valid_images, test_images, num_categories)
    train_images = train_images[:config.train_size] if config.train_size else train_images
    image_shape = tuple(train_images.shape[1:])
    patch_size = config.patch_size or default_patch_size(image_shape[1])
    x_train, x_valid = patchify(train_images.long(), patch_size), patchify(valid_images.long(), patch_size)
    run = Run(config, Path(directory) if directory is not None else None, resume, valid_images, test_images, log)
    circuit_config = pc.PatchCircuitConfig(x_train.shape[1], x_train.shape[2], config.num_clusters,
                                           config.hidden_size, num_categories=num_categories, tied=config.tied)
    if assignments is not None:
        circuit_config.check_assignments(assignments, len(x_train))
    models, stage_seconds = {}, {}
    if config.needs_latents and assignments is None:
        teacher = teacher if teacher is not None else teacher_for(train_images, config, patch_size,
                                                                  directory=run.directory, resume=resume)
        latents = distil_latents(teacher, train_images, config, directory=run.directory, resume=resume, log=log)
        assignments, stage_seconds = latents.assignments, dict(latents.seconds)
    if config.needs_latents:
        circuit_config = _with_trees(circuit_config, x_train, assignments, config.seed)
        log(f"[patch circuit] {circuit_config.num_patches} patches of {circuit_config.values_per_patch} values, "
            f"k={config.num_clusters}, H={config.hidden_size}, tied={config.tied}: "
            f"{circuit_config.num_parameters:,} parameters")
    for name, seed in (("lvd", config.seed), ("em", config.seed + 1)):
        if name in config.models:
            start = PatchImageModel(pc.PatchCircuit(circuit_config, seed=seed, device=run.device), image_shape,
                                    patch_size)
            models[name] = (train_lvd(run, start, x_train, assignments, x_valid) if name == "lvd" else
                            run.baseline("em", start, x_train, x_valid))
    if "lvd" in models:
        stage_seconds.update(models["lvd"].seconds)
    if "hclt" in config.models:
        latents = config.hclt_latents or pixel_hclt_latents(circuit_config.num_parameters, math.prod(image_shape),
                                                            num_categories)
        models["hclt"] = train_pixel_hclt(run, train_images, valid_images, latents, num_categories)
    for trained in models.values():
        test = f", test {trained.test_bpd:.4f}" if trained.test_bpd is not None else ""
        log(f"[{trained.name}] {trained.num_parameters:,} parameters: valid {trained.valid_bpd:.4f}{test} bpd")
    result = ImageRecipeResult(models, teacher if config.needs_latents else None, assignments, stage_seconds)
    if run.directory is not None and is_main_process():
        result.write_results(run.directory, description)        # the models are in place: each stage kept its own
    return result


def _with_trees(circuit_config: pc.PatchCircuitConfig, x_train: Tensor, assignments: Tensor,
                seed: int) -> pc.PatchCircuitConfig:
    """The config with value and latent trees learnt from the patches and their latents."""
    value_parents, latent_parents = pc.structures.patch_trees(x_train, assignments, circuit_config.num_clusters,
                                                              num_categories=circuit_config.num_categories, seed=seed)
    return replace(circuit_config, value_parents=tuple(value_parents), latent_parents=tuple(latent_parents))


def _check_images(train_images: Tensor, valid_images: Tensor, test_images: Tensor | None, num_categories: int) -> None:
    for name, images in (("train", train_images), ("valid", valid_images), ("test", test_images)):
        if images is None and name == "test":
            continue
        if not isinstance(images, Tensor) or images.dim() != 4 or len(images) == 0:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"{name} images must be a non-empty tensor [N, C, H, W], got {got}")
        if images.shape[1:] != train_images.shape[1:]:
            raise ValueError(f"{name} images are {tuple(images.shape[1:])} but train images are "
                             f"{tuple(train_images.shape[1:])}")
        if images.dtype != torch.uint8 or int(images.max()) >= num_categories:
            raise ValueError(f"{name} images must be uint8 pixel values below num_categories={num_categories}")
