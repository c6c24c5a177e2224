"""The image recipe's configuration: :class:`ImageRecipeConfig`, validated on construction, with its named
presets beside it."""
from __future__ import annotations

from dataclasses import dataclass

from ... import em
from ..kmeans import BACKENDS, KMEANS_ITERATIONS, KMEANS_RESTARTS
from .features import CONTEXTS
from .teacher import TeacherConfig

MODELS = ("lvd", "em", "hclt")
LATENT_SOURCES = ("mae", "pixels")
PATCH_STATES = ("bins", "random")
# Named sizes for ``hmmlvd image train --preset`` (:meth:`ImageRecipeConfig.preset`), as ImageRecipeConfig fields;
# both are tied circuits of the H = 4 family, where LVD's margin over EM alone grows fastest with size
# (bench/RESULTS.md). quick: the 15-minute CPU job on 10k images, LVD 3 + 1 + 5 epochs against 6 for the baselines
# (pixel latents: LVD 3.4361 against EM alone 3.4790 test bpd, +0.043); full: every image, k = 128, the budget of
# the measured run (LVD 3 + 1 + 2 against 3, one K-means run: +0.057 bpd).
PRESETS = {
    "quick": {"train_size": 10_000, "teacher_images": 10_000, "teacher_epochs": 3, "num_clusters": 64,
              "hidden_size": 4, "tied": True, "lvd_epochs": 3, "latent_epochs": 1, "finetune_epochs": 5,
              "em_epochs": 6},
    "full": {"train_size": None, "teacher_images": None, "teacher_epochs": None, "num_clusters": 128,
             "hidden_size": 4, "tied": True, "lvd_epochs": 3, "latent_epochs": 1, "finetune_epochs": 2,
             "em_epochs": 3, "kmeans_restarts": 1},
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
    ``latents`` chooses the built-in teacher whose features K-means clusters into Z: ``"pixels"`` (the default) the
    patch values themselves, ``"mae"`` a ViT-MAE's patch features with context (the paper's recipe). The pixels are
    the default because they won on valid wherever both were measured (all 55,000 Fashion-MNIST training images,
    valid bpd after the latent step: 3.5868 against the MAE's 3.6063 at k=4/H=16, 3.5014 against 3.5322 at k=8,
    3.4384 against 3.5014 at k=16; bench/RESULTS.md), and they cost no teacher training or feature pass.
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
    ``train_size`` keeps the first N training images (None: all of them).
    ``kmeans_backend="torch"`` always uses the torch K-means, which every run under torchrun uses, so that one and
    several processes give the same latents ("auto": faiss in a single process when installed).
    K-means keeps the best of ``kmeans_restarts`` runs of ``kmeans_iterations`` Lloyd steps. Five runs, as in the
    paper's public code, cost five times one run's seconds (the least of the stages) and matter where a few
    clusters split the data: at k=4, H=16 on Fashion-MNIST pixels, over three seeds, LVD reached 3.5465 test bpd
    on average with one run and 3.5390 with five (EM alone 3.5358; bench/RESULTS.md).
    """

    num_clusters: int = 16
    hidden_size: int = 4
    train_size: int | None = None
    tied: bool = False
    patch_size: int | None = None
    context: str = "mst"
    latents: str = "pixels"
    teacher: TeacherConfig | None = None
    teacher_path: str | None = None
    teacher_images: int | None = None
    teacher_epochs: int | None = None
    kmeans_iterations: int = KMEANS_ITERATIONS
    kmeans_restarts: int = KMEANS_RESTARTS
    kmeans_backend: str = "auto"
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
        if self.kmeans_backend not in BACKENDS:
            raise ValueError(f"kmeans_backend must be one of {BACKENDS}, got {self.kmeans_backend!r}")
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
        for name in ("patch_size", "train_size", "teacher_images", "teacher_epochs", "hclt_latents", "em_epochs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> ImageRecipeConfig:
        """The named size of :data:`PRESETS` with ``overrides`` (any field) applied on top."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def budget_epochs(self) -> int:
        """Epochs over the training images of LVD's three stages together."""
        return self.lvd_epochs + self.latent_epochs + self.finetune_epochs

    @property
    def needs_latents(self) -> bool:
        """Whether the run distils latents: LVD starts from them, and the trees of the patch circuit that LVD and EM
        alone share are learnt from them (so ``em`` trains the same circuit whether or not ``lvd`` runs too)."""
        return "lvd" in self.models or "em" in self.models

    @property
    def baseline_epochs(self) -> int:
        """EM epochs on x of each baseline: ``em_epochs``, else :attr:`budget_epochs`."""
        return self.em_epochs or self.budget_epochs

    def schedule(self, epochs: int) -> em.LinearAnneal:
        return em.LinearAnneal(self.step_start, self.step_end, epochs)

    def finetune_schedule(self) -> em.LinearAnneal:
        start = self.finetune_step_start or (0.3 if self.tied else 0.1)
        return em.LinearAnneal(start, start / 10, self.finetune_epochs)
