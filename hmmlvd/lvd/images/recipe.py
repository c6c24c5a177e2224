"""The end-to-end image recipe (paper Sections 3–5), the same shape as the text recipe: a config and
``train(data, config)``.

LVD: a masked-autoencoder teacher → patch features with context → K-means per patch (Z [N, P]) → a patch circuit
whose trees come from the data → the patch models fitted in closed form on binned hidden states → Lemma 1 (each
p(X_i | Z_i = c) fitted on its cluster's patches, p(Z) on the assignments) → the latent-distribution step (p(Z)
refitted on every image's cluster log-likelihoods) → mini-batch EM on x alone. The baselines get the same EM
budget, counted in epochs over the training images: ``em`` is the same patch circuit from random parameters trained
by EM alone, ``hclt`` a pixel-level HCLT of comparable size. Every EM stage is checkpointed and resumes exactly.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ... import em, pc
from ...data.patches import default_patch_size, patchify
from .features import CONTEXTS, patch_features
from .latents import KMEANS_ITERATIONS, KMEANS_RESTARTS, assign_latents
from .model import PatchImageModel
from .teacher import Teacher, TeacherConfig
from .training import train_teacher

MODELS = ("lvd", "em", "hclt")
LATENT_SOURCES = ("mae", "pixels")
PATCH_STATES = ("bins", "random")
# Named sizes for ``hmmlvd image train --preset``: ``train_size`` training images (None = all), the rest are
# ImageRecipeConfig fields. Both are tied circuits compared at equal measured time (LVD 3 + 1 + 5 epochs, the
# baselines 6; bench/RESULTS.md). quick: the 15-minute CPU job on 10k images; full: every image, the default
# teacher, and the largest size measured on the CPU.
PRESETS = {
    "quick": {"train_size": 10_000, "teacher_images": 10_000, "teacher_epochs": 3, "num_clusters": 16,
              "hidden_size": 16, "tied": True, "lvd_epochs": 3, "latent_epochs": 1, "finetune_epochs": 5,
              "em_epochs": 6},
    "full": {"train_size": None, "teacher_images": None, "teacher_epochs": None, "num_clusters": 64,
             "hidden_size": 16, "tied": True, "lvd_epochs": 3, "latent_epochs": 1, "finetune_epochs": 5,
             "em_epochs": 6},
}
MAX_HCLT_LATENTS = 64


@dataclass(frozen=True)
class ImageRecipeConfig:
    """Everything :func:`train` needs besides the images.

    The patch circuit has ``num_clusters`` (k) latent categories per patch and pixel HCLTs of hidden size
    ``hidden_size``, one per (patch, cluster) or, with ``tied``, one per cluster shared by every patch. The teacher
    is loaded from ``teacher_path`` (any saved ViT-MAE folder) or trained on the training images (``teacher``:
    its config; None sizes the default to the images, trained for ``teacher_epochs`` when set), on a seeded
    subsample of ``teacher_images`` when set.
    ``latents`` chooses what is clustered into Z: ``"mae"`` the teacher's patch features with context (the paper),
    ``"pixels"`` the patch values themselves (no teacher; on Fashion-MNIST these clusters are the better start, see
    bench/RESULTS.md).
    LVD runs ``lvd_epochs`` (Lemma 1) + ``latent_epochs`` + ``finetune_epochs``; each baseline gets ``em_epochs`` of
    EM on x, by default as many epochs as LVD's three stages together. A Lemma-1 epoch evaluates each patch under
    its own cluster only and the latent step fits p(Z) on cached cluster log-likelihoods, so at larger k both cost
    a fraction of a full EM epoch: set ``em_epochs`` to compare at equal measured time instead (``seconds`` of each
    result). Step sizes anneal linearly from ``step_start`` to ``step_end`` in every stage but LVD's fine-tuning,
    which starts from a fitted circuit and anneals from ``finetune_step_start`` to a tenth of it.
    Its default (None) is 0.1 for untied circuits, whose per-(patch, cluster) models are data-starved and lose the
    distilled fit to a large step (10k Fashion-MNIST images, k=16/H=4: η = 0.5 took the valid bpd from 3.91 back
    to 4.06, η = 0.1 down to 3.76), and 0.3 for tied ones (k=16/H=16: test bpd 3.4916 at η 0.1, 3.4724 at 0.3,
    3.4735 at 0.5). The best start depends on the size: on all 55,000 images a large circuit's distilled start is
    worth keeping (k=64/H=16: 3.3153 at η 0.1 against 3.3354 at 0.3), smaller ones' are not (k=16/H=16: 3.3887 against
    3.3852; k=4/H=16: 3.5436 against 3.5377).
    ``patch_states`` is where Lemma 1 starts the patch models: ``"bins"`` (default) fits them in closed form with
    their hidden states observed as per-cluster quantile bins of the pixel values (:func:`pc.fit_patch_states`:
    distillation one level down, a few seconds), ``"random"`` from random parameters (the paper's Lemma 1). On all
    55,000 Fashion-MNIST training images the bins took LVD from 0.003 bpd behind EM alone to 0.004 ahead at k=4,
    H=16 (three seeds) and from +0.009 to +0.017 at k=8, H=16; with H=4 they cost 0.001-0.002 (bench/RESULTS.md).
    K-means keeps the best of ``kmeans_restarts`` runs of ``kmeans_iterations`` Lloyd steps. Five runs, as in the
    paper's public code, cost five times one run's seconds (the least of the stages) and matter where a few
    clusters split the data: at k=4, H=16 on Fashion-MNIST pixels, over three seeds, LVD reached 3.5465 test bpd
    on average with one run and 3.5390 with five (EM alone 3.5358; bench/RESULTS.md).
    """

    num_clusters: int = 16
    hidden_size: int = 4
    tied: bool = False
    patch_size: int | None = None
    context: str = "mst"
    latents: str = "mae"
    teacher: TeacherConfig | None = None
    teacher_path: str | None = None
    teacher_images: int | None = None
    teacher_epochs: int | None = None
    kmeans_iterations: int = KMEANS_ITERATIONS
    kmeans_restarts: int = KMEANS_RESTARTS
    patch_states: str = "bins"
    lvd_epochs: int = 3
    latent_epochs: int = 1
    finetune_epochs: int = 2
    step_start: float = 0.5
    step_end: float = 0.05
    finetune_step_start: float | None = None
    em_epochs: int | None = None
    batch_size: int = 256
    pseudocount: float = 0.1
    models: tuple[str, ...] = ("lvd",)
    hclt_latents: int | None = None
    seed: int = 0
    device: str | None = None
    cache_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("num_clusters", "hidden_size", "kmeans_iterations", "kmeans_restarts", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lvd_epochs", "latent_epochs", "finetune_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.budget_epochs < 1:
            raise ValueError("the EM budget is zero: give lvd_epochs, latent_epochs or finetune_epochs")
        if self.latents not in LATENT_SOURCES:
            raise ValueError(f"latents must be one of {LATENT_SOURCES}, got {self.latents!r}")
        if self.latents == "pixels" and (self.teacher is not None or self.teacher_path is not None):
            raise ValueError("latents='pixels' clusters the patch values and uses no teacher; drop the teacher "
                             "settings or use latents='mae'")
        if self.patch_states not in PATCH_STATES:
            raise ValueError(f"patch_states must be one of {PATCH_STATES}, got {self.patch_states!r}")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if not 0 < self.step_end <= self.step_start <= 1:
            raise ValueError(f"need 0 < step_end <= step_start <= 1, got {self.step_start}, {self.step_end}")
        if self.finetune_step_start is not None and not 0 < self.finetune_step_start <= 1:
            raise ValueError(f"finetune_step_start must be in (0, 1] or None, got {self.finetune_step_start}")
        if self.pseudocount < 0:
            raise ValueError(f"pseudocount must be >= 0, got {self.pseudocount}")
        if not self.models or any(model not in MODELS for model in self.models):
            raise ValueError(f"models must be a non-empty subset of {MODELS}, got {self.models!r}")
        for name in ("patch_size", "teacher_images", "teacher_epochs", "hclt_latents", "em_epochs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")

    @property
    def budget_epochs(self) -> int:
        """Epochs over the training images of LVD's three stages together."""
        return self.lvd_epochs + self.latent_epochs + self.finetune_epochs

    @property
    def baseline_epochs(self) -> int:
        """EM epochs on x of each baseline: ``em_epochs``, else :attr:`budget_epochs`."""
        return self.em_epochs or self.budget_epochs

    def schedule(self, epochs: int) -> em.LinearAnneal:
        return em.LinearAnneal(self.step_start, self.step_end, epochs)

    def finetune_schedule(self) -> em.LinearAnneal:
        start = self.finetune_step_start or (0.3 if self.tied else 0.1)
        return em.LinearAnneal(start, start / 10, self.finetune_epochs)


@dataclass
class TrainedModel:
    """One trained model of the comparison and what it measured (bits per dimension: −log2 p(x) / (C·H·W))."""

    name: str
    model: PatchImageModel | pc.Circuit
    num_parameters: int
    valid_bpd: float
    test_bpd: float | None
    valid_curve: list[float]                   # valid bpd after each stage or epoch, in order
    seconds: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict:
        return {"model": self.name, "num_parameters": self.num_parameters, "valid_bpd": self.valid_bpd,
                "test_bpd": self.test_bpd, "valid_curve": self.valid_curve, "seconds": self.seconds}


@dataclass
class ImageRecipeResult:
    models: dict[str, TrainedModel]
    teacher: Teacher | None
    assignments: Tensor | None                 # Z [N, P] of the training images (LVD only)
    stage_seconds: dict[str, float]

    def as_dict(self) -> dict:
        return {"models": [m.row() for m in self.models.values()], "stage_seconds": self.stage_seconds}


def bits_per_dimension(log_likelihood: float, num_dimensions: int) -> float:
    """``−log2 p(x) / num_dimensions`` of a mean log-likelihood in nats."""
    return -log_likelihood / (num_dimensions * math.log(2))


def pixel_hclt_latents(num_parameters: int, num_pixels: int, num_categories: int) -> int:
    """The HCLT hidden size whose parameter count (≈ pixels · (k · categories + k²)) is closest to
    ``num_parameters``, capped at ``MAX_HCLT_LATENTS`` (a CPU-sized pixel HCLT)."""
    def size(k: int) -> int:
        return num_pixels * (k * num_categories + k * k)
    return min(range(1, MAX_HCLT_LATENTS + 1), key=lambda k: abs(size(k) - num_parameters))


def train(train_images: Tensor, valid_images: Tensor, config: ImageRecipeConfig, *,
          test_images: Tensor | None = None, num_categories: int = 256, assignments: Tensor | None = None,
          directory: str | os.PathLike | None = None, resume: bool = False,
          log: Callable[[str], None] | None = None) -> ImageRecipeResult:
    """Train every model of ``config.models`` on uint8 images [N, C, H, W] and measure bits per dimension.

    ``assignments`` (Z LongTensor [N, P] in 0..k-1) skips the teacher: latents distilled elsewhere, e.g. the codes
    of a VQ-VAE (paper App. E.1) or features computed once for several cluster counts.

    With ``directory``, EM checkpoints go to ``directory/checkpoints/<stage>`` and ``resume=True`` continues them;
    the teacher is cached by its config and data hash (``config.cache_dir``). ``log`` receives one line per stage.
    """
    log = log or (lambda line: None)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _check_images(train_images, valid_images, test_images, num_categories)
    image_shape = tuple(train_images.shape[1:])
    patch_size = config.patch_size or default_patch_size(image_shape[1])
    x_train, x_valid = patchify(train_images.long(), patch_size), patchify(valid_images.long(), patch_size)
    checkpoints = Path(directory) / "checkpoints" if directory is not None else None

    def fit_options(stage: str) -> dict:
        return dict(batch_size=config.batch_size, pseudocount=config.pseudocount, seed=config.seed,
                    progress=config.progress, resume=resume and checkpoints is not None,
                    checkpoint_dir=checkpoints / stage if checkpoints is not None else None, device=device)

    def evaluate(model) -> tuple[float, float | None]:
        valid = model_bits_per_dimension(model, valid_images)
        return valid, (model_bits_per_dimension(model, test_images) if test_images is not None else None)

    models, stage_seconds, teacher = {}, {}, None
    circuit_config = pc.PatchCircuitConfig(x_train.shape[1], x_train.shape[2], config.num_clusters,
                                           config.hidden_size, num_categories=num_categories, tied=config.tied)
    if assignments is not None and (assignments.shape != x_train.shape[:2] or int(assignments.min()) < 0
                                    or int(assignments.max()) >= config.num_clusters):
        raise ValueError(f"assignments must be a LongTensor {list(x_train.shape[:2])} of cluster ids in "
                         f"[0, {config.num_clusters})")
    if "lvd" in config.models or "em" in config.models:
        if "lvd" in config.models:
            if assignments is None:
                teacher, assignments, stage_seconds = _distil_latents(train_images, x_train, config,
                                                                      patch_size, log)
            value_parents, latent_parents = pc.structures.patch_trees(x_train, assignments, config.num_clusters,
                                                                      num_categories=num_categories, seed=config.seed)
        else:
            value_parents, latent_parents = pc.structures.patch_trees(
                x_train, torch.zeros(x_train.shape[:2], dtype=torch.long), 1, num_categories=num_categories,
                seed=config.seed)
        circuit_config = replace(circuit_config, value_parents=tuple(value_parents),
                                 latent_parents=tuple(latent_parents))
        log(f"[patch circuit] {circuit_config.num_patches} patches of {circuit_config.values_per_patch} values, "
            f"k={config.num_clusters}, H={config.hidden_size}, tied={config.tied}: "
            f"{circuit_config.num_parameters:,} parameters")
        if "lvd" in config.models:
            image_model = PatchImageModel(pc.PatchCircuit(circuit_config, seed=config.seed, device=device),
                                          image_shape, patch_size)
            curve, seconds = _train_lvd(image_model, x_train, assignments, x_valid, valid_images, config,
                                        fit_options, log)
            stage_seconds.update(seconds)
            models["lvd"] = TrainedModel("lvd", image_model, circuit_config.num_parameters, *evaluate(image_model),
                                         curve, seconds)
        if "em" in config.models:
            circuit = pc.PatchCircuit(circuit_config, seed=config.seed + 1, device=device)
            image_model = PatchImageModel(circuit, image_shape, patch_size)
            start = time.perf_counter()
            history = em.fit(circuit, x_train, config.schedule(config.baseline_epochs), valid=x_valid,
                             **fit_options("em"))
            curve = [bits_per_dimension(ll, image_model.num_dimensions) for ll in history.valid_log_likelihood]
            models["em"] = TrainedModel("em", image_model, circuit.num_parameters, *evaluate(image_model), curve,
                                        {"em": time.perf_counter() - start})
    if "hclt" in config.models:
        latents = config.hclt_latents or pixel_hclt_latents(circuit_config.num_parameters, math.prod(image_shape),
                                                            num_categories)
        pixels = train_images.flatten(1).long()
        start = time.perf_counter()
        circuit = pc.Circuit(pc.structures.hclt(pixels, latents, num_categories, num_bins=8), seed=config.seed,
                             device=device)
        history = em.fit(circuit, pixels, config.schedule(config.baseline_epochs),
                         valid=valid_images.flatten(1).long(), **fit_options("hclt"))
        curve = [bits_per_dimension(ll, math.prod(image_shape)) for ll in history.valid_log_likelihood]
        models["hclt"] = TrainedModel("hclt", circuit, circuit.num_parameters, *evaluate(circuit), curve,
                                      {"em": time.perf_counter() - start, "num_latents": latents})
    for trained in models.values():
        test = f", test {trained.test_bpd:.4f}" if trained.test_bpd is not None else ""
        log(f"[{trained.name}] {trained.num_parameters:,} parameters: valid {trained.valid_bpd:.4f}{test} bpd")
    return ImageRecipeResult(models, teacher, assignments, stage_seconds)


def _distil_latents(images: Tensor, patches: Tensor, config: ImageRecipeConfig, patch_size: int, log) -> tuple:
    """K-means of every patch into Z [N, P], on the teacher's patch features with context (the teacher loaded or
    trained, cached) or, with ``config.latents == "pixels"``, on the patch values ``patches`` [N, P, D] themselves,
    with no teacher. Returns (teacher or None, Z, seconds of each stage)."""
    teacher, seconds = None, {}
    if config.latents == "pixels":
        features, described = patches.float(), "patch pixels"
    else:
        start = time.perf_counter()
        teacher = _teacher(images, config, patch_size)
        seconds["teacher"] = time.perf_counter() - start
        start = time.perf_counter()
        features = patch_features(teacher, images, config.context, seed=config.seed,
                                  progress=config.progress).features
        seconds["features"] = time.perf_counter() - start
        described = (f"teacher {seconds['teacher']:.0f} s; features ({config.context}) "
                     f"{seconds['features']:.0f} s")
    start = time.perf_counter()
    assignments, _ = assign_latents(features, config.num_clusters, iterations=config.kmeans_iterations,
                                    restarts=config.kmeans_restarts, seed=config.seed, progress=config.progress,
                                    shared=config.tied)
    seconds["kmeans"] = time.perf_counter() - start
    log(f"[latents] {described}; K-means (k={config.num_clusters}) {seconds['kmeans']:.1f} s")
    return teacher, assignments, seconds


def _teacher(images: Tensor, config: ImageRecipeConfig, patch_size: int) -> Teacher:
    """The teacher of ``config``: loaded from ``teacher_path``, else trained on (a seeded subsample of) the images."""
    if config.teacher_path is not None:
        teacher = Teacher.from_pretrained(config.teacher_path)
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
    if teacher.patch_size != patch_size:
        raise ValueError(f"the teacher works on {teacher.patch_size}-pixel patches but the circuit on {patch_size}; "
                         "give the same patch size to both")
    return teacher


def _train_lvd(model: PatchImageModel, x_train: Tensor, assignments: Tensor, x_valid: Tensor, valid_images: Tensor,
               config: ImageRecipeConfig, fit_options, log) -> tuple[list[float], dict[str, float]]:
    """The patch models' start (``config.patch_states``) and Lemma 1, then the latent-distribution step, then EM
    on x: the valid bpd after every stage, and the seconds of each."""
    circuit = model.circuit
    seconds, curve = {}, []
    start = time.perf_counter()
    if config.patch_states == "bins":
        pc.fit_patch_states(circuit, x_train, assignments, pseudocount=config.pseudocount)
    if config.lvd_epochs:
        pc.fit_lvd(circuit, x_train, assignments, config.schedule(config.lvd_epochs), **fit_options("lvd_fit"))
        curve.append(model_bits_per_dimension(model, valid_images))
        log(f"[lvd] Lemma 1 fit: valid {curve[-1]:.4f} bpd ({time.perf_counter() - start:.0f} s)")
    seconds["lvd_fit"] = time.perf_counter() - start
    start = time.perf_counter()
    if config.latent_epochs:
        pc.fit_latent_distribution(circuit, x_train, config.schedule(config.latent_epochs),
                                   **fit_options("latent"))
        curve.append(model_bits_per_dimension(model, valid_images))
        log(f"[lvd] latent distribution: valid {curve[-1]:.4f} bpd ({time.perf_counter() - start:.0f} s)")
    seconds["latent"] = time.perf_counter() - start
    start = time.perf_counter()
    if config.finetune_epochs:
        history = em.fit(circuit, x_train, config.finetune_schedule(), valid=x_valid, **fit_options("finetune"))
        curve += [bits_per_dimension(ll, model.num_dimensions) for ll in history.valid_log_likelihood]
    seconds["finetune"] = time.perf_counter() - start
    return curve, seconds


def model_bits_per_dimension(model: PatchImageModel | pc.Circuit, images: Tensor) -> float:
    """Mean bits per dimension of uint8 ``images`` [N, C, H, W] under a patch-image model or a pixel circuit."""
    if isinstance(model, PatchImageModel):
        return model.bits_per_dimension(images)
    pixels = images.flatten(1).long()
    return bits_per_dimension(em.mean_log_likelihood(model, pixels, 1024, model.device), pixels.shape[1])


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
