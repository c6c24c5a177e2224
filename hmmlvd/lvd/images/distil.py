"""Distilling the patch latents: a teacher for the images (:func:`teacher_for`), then its patch features with
context and K-means into Z [N, P] (:func:`distil_latents`).

With a ``directory`` every finished stage is kept there (the trained teacher as a ViT-MAE artefact, the features
and the latents as checked safetensors files keyed by the teacher and the images), so a resumed run recomputes
nothing finished and trusts nothing half-written. Under ``torch.distributed`` each rank encodes its shard of the
images and K-means runs on the shards (all-reduced Lloyd steps); rank 0 alone writes.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ...distributed import concat_shards, is_main_process, shard
from ...io import digest_tensors, load_tensors, save_tensors
from ..kmeans import cluster_positions
from .config import ImageRecipeConfig
from .features import PatchContext, patch_features
from .teacher import MAETeacher, TeacherConfig
from .teachers import PixelTeacher, Teacher
from .training import images_hash, train_teacher

TEACHER_FOLDER, FEATURES_FILE, LATENTS_FILE = "teacher", "features.safetensors", "latents.safetensors"


@dataclass
class Latents:
    """Z LongTensor [N, P] (cluster ids in 0..k-1), the K-means centroids [P, k, d], the context the features
    were computed with, and the seconds of each stage run (stages loaded from a directory take none)."""

    assignments: Tensor
    centroids: Tensor
    context: PatchContext
    seconds: dict[str, float]


def teacher_for(images: Tensor, config: ImageRecipeConfig, patch_size: int, *, directory: str | Path | None = None,
                resume: bool = False) -> Teacher:
    """The built-in teacher of ``config`` for uint8 ``images`` [N, C, H, W]: :class:`PixelTeacher` for
    ``latents="pixels"``; else the ViT-MAE at ``teacher_path``, or one trained (and cached) on a seeded subsample
    of ``teacher_images`` images, sized to the images. With ``directory`` a trained teacher is saved there."""
    if config.latents == "pixels":
        return PixelTeacher(tuple(images.shape[1:]), patch_size)
    folder = Path(directory) / TEACHER_FOLDER if directory is not None else None
    if config.teacher_path is not None:
        teacher = MAETeacher.from_pretrained(config.teacher_path)
        if tuple(teacher.image_shape) != tuple(images.shape[1:]):
            raise ValueError(f"the teacher in {config.teacher_path} encodes images {tuple(teacher.image_shape)} but "
                             f"these are {tuple(images.shape[1:])}: train a teacher on this dataset or drop --teacher")
    elif resume and folder is not None and (folder / "config.json").is_file():
        teacher = MAETeacher.from_pretrained(folder)
    else:
        teacher_config = config.teacher or TeacherConfig(image_size=images.shape[-1], num_channels=images.shape[1],
                                                         patch_size=patch_size, seed=config.seed)
        if config.teacher_epochs is not None:
            teacher_config = replace(teacher_config, epochs=config.teacher_epochs)
        subset = images
        if config.teacher_images is not None and config.teacher_images < len(images):
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed))
            subset = images[order[:config.teacher_images].sort().values]
        teacher = train_teacher(subset, teacher_config, cache_dir=config.cache_dir, progress=config.progress)
        if folder is not None and is_main_process():
            teacher.save_pretrained(folder)
    if teacher.patch_size != patch_size:
        source = f" in {config.teacher_path}" if config.teacher_path is not None else ""
        raise ValueError(f"the teacher{source} works on {teacher.patch_size}-pixel patches but the circuit on "
                         f"{patch_size}; give the same patch size to both")
    return teacher


def distil_latents(teacher: Teacher, images: Tensor, config: ImageRecipeConfig, *,
                   directory: str | Path | None = None, resume: bool = False,
                   log: Callable[[str], None] | None = None) -> Latents:
    """Features with ``config.context`` of every patch of uint8 ``images`` [N, C, H, W] from ``teacher`` (any
    :class:`Teacher`), then K-means into ``config.num_clusters`` latents per patch (shared by every patch when
    ``config.tied``). Finished stages are read back from ``directory`` when ``resume``."""
    log = log or (lambda line: None)
    directory = Path(directory) if directory is not None else None
    name = _describe(teacher)
    key = f"{name}:{config.context}:{config.seed}:{images_hash(images)}"
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    stored = _read_stage(directory, FEATURES_FILE, key, resume)
    if stored is None:
        local = patch_features(teacher, shard(images), config.context, seed=config.seed, progress=config.progress)
        features = concat_shards(local.features, len(images))
        context = local.context
        _write_stage(directory, FEATURES_FILE, key, {"features": features}, context)
        seconds["features"] = time.perf_counter() - start
    else:
        features, context = stored[0]["features"], stored[1]
    _check_features(features, images, teacher)
    key = (f"{key}:k={config.num_clusters}:{config.tied}:{config.kmeans_iterations}:{config.kmeans_restarts}:"
           f"{config.kmeans_backend}")
    stored = _read_stage(directory, LATENTS_FILE, key, resume)
    start = time.perf_counter()
    if stored is None:
        assignments, centroids = cluster_positions(shard(features), config.num_clusters,
                                                   iterations=config.kmeans_iterations,
                                                   restarts=config.kmeans_restarts, seed=config.seed,
                                                   progress=config.progress, shared=config.tied,
                                                   backend=config.kmeans_backend)
        assignments = concat_shards(assignments, len(images))
        _write_stage(directory, LATENTS_FILE, key, {"assignments": assignments, "centroids": centroids}, context)
        seconds["kmeans"] = time.perf_counter() - start
    else:
        assignments, centroids = stored[0]["assignments"], stored[0]["centroids"]
    _check_latents(assignments, centroids, features, config.num_clusters)
    log(f"[latents] {name} features ({context.kind}) {seconds.get('features', 0):.0f} s; K-means "
        f"(k={config.num_clusters}) {seconds.get('kmeans', 0):.1f} s" + ("" if seconds else " (read back)"))
    return Latents(assignments, centroids, context, seconds)


def _describe(teacher: Teacher) -> str:
    """A name for the teacher that changes when its weights do (the cache key of stored features)."""
    if isinstance(teacher, PixelTeacher):
        return f"pixels{teacher.patch_size}"
    if isinstance(teacher, MAETeacher):
        digest = hashlib.sha256()
        digest_tensors(digest, teacher.model.state_dict())
        return f"mae-{digest.hexdigest()[:16]}"
    return f"{type(teacher).__name__}-{teacher.feature_size}"


def _read_stage(directory: Path | None, name: str, key: str, resume: bool):
    """``(tensors, context)`` of a finished stage file with this ``key``, or None (not resuming, absent, or
    written for other inputs)."""
    if directory is None or not resume or not (directory / name).is_file():
        return None
    tensors, metadata = load_tensors(directory / name)
    if metadata.get("key") != key:
        return None
    return tensors, PatchContext.from_dict(json.loads(metadata["context"]))


def _write_stage(directory: Path | None, name: str, key: str, tensors: dict[str, Tensor],
                 context: PatchContext) -> None:
    if directory is not None and is_main_process():
        save_tensors(directory / name, tensors, {"key": key, "context": json.dumps(context.as_dict())})


def _check_features(features: Tensor, images: Tensor, teacher: Teacher) -> None:
    expected = (len(images), features.shape[1], teacher.feature_size)
    if features.dim() != 3 or tuple(features.shape) != expected or not bool(torch.isfinite(features).all()):
        raise ValueError(f"patch features must be finite float [N, P, d] = {expected}, got "
                         f"{tuple(features.shape)}; a stored features file is damaged: delete it to recompute")


def _check_latents(assignments: Tensor, centroids: Tensor, features: Tensor, num_clusters: int) -> None:
    if (tuple(assignments.shape) != tuple(features.shape[:2]) or assignments.dtype != torch.long
            or int(assignments.min()) < 0 or int(assignments.max()) >= num_clusters
            or tuple(centroids.shape) != (features.shape[1], num_clusters, features.shape[2])
            or not bool(torch.isfinite(centroids).all())):
        raise ValueError(f"latents must be cluster ids [N, P] in 0..{num_clusters - 1} with finite centroids "
                         f"[P, {num_clusters}, d]; a stored latents file is damaged: delete it to recompute")
