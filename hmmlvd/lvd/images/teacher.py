"""The masked-autoencoder teacher: a small ``transformers`` ViT-MAE over non-overlapping p×p patches.

Patches are numbered row-major over the ``grid_size × grid_size`` grid (patch ``r·grid_size + c`` covers rows
``r·p .. r·p+p-1`` and columns ``c·p .. c·p+p-1``), as in ViT-MAE's own patch embedding. Pixels enter the model
as ``(x / 255 - mean) / std`` per channel, with the mean and standard deviation of the training images.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ...io import atomic_write_json, read_json
from .teachers import check_teacher_images

TEACHER_FILE = "teacher.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TeacherConfig:
    """Sizes and training settings of the teacher. The defaults train on Fashion-MNIST (60,000 images of 28×28,
    4×4 patches) in about 7 minutes on a 2-core CPU (430 s measured). ``mask_ratio_range``: the masked fraction
    of every step is drawn uniformly from it (paper App. B.2). The learning rate warms up linearly over
    ``warmup_fraction`` of the steps, then follows a cosine decay to zero."""

    image_size: int = 28
    num_channels: int = 1
    patch_size: int = 4
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    decoder_hidden_size: int = 64
    decoder_num_layers: int = 2
    decoder_num_heads: int = 4
    decoder_intermediate_size: int = 128
    mask_ratio_range: tuple[float, float] = (0.1, 0.9)
    epochs: int = 6
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask_ratio_range", tuple(float(r) for r in self.mask_ratio_range))
        positive = {name: getattr(self, name) for name in (
            "image_size", "num_channels", "patch_size", "hidden_size", "num_layers", "num_heads",
            "intermediate_size", "decoder_hidden_size", "decoder_num_layers", "decoder_num_heads",
            "decoder_intermediate_size", "epochs", "batch_size")}
        bad = {name: value for name, value in positive.items() if not isinstance(value, int) or value < 1}
        if bad:
            raise ValueError(f"TeacherConfig sizes must be positive integers, got {bad}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}; "
                             "choose a patch size that tiles the image")
        if self.hidden_size % 4 or self.decoder_hidden_size % 4:
            raise ValueError(f"hidden_size and decoder_hidden_size must be multiples of 4 (2D sin-cos position "
                             f"embeddings), got {self.hidden_size}, {self.decoder_hidden_size}")
        if self.hidden_size % self.num_heads or self.decoder_hidden_size % self.decoder_num_heads:
            raise ValueError(f"hidden sizes must be multiples of their head counts, got hidden_size="
                             f"{self.hidden_size}/num_heads={self.num_heads}, decoder_hidden_size="
                             f"{self.decoder_hidden_size}/decoder_num_heads={self.decoder_num_heads}")
        low, high = self.mask_ratio_range if len(self.mask_ratio_range) == 2 else (1.0, 0.0)
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"mask_ratio_range must be (low, high) with 0 < low <= high < 1, got "
                             f"{self.mask_ratio_range}")
        fewest, most = self.masked_counts
        if fewest > most:
            raise ValueError(f"no number of masked patches out of {self.num_patches} has a fraction in "
                             f"{self.mask_ratio_range}; use smaller patches or a wider mask_ratio_range")
        if not self.learning_rate > 0 or self.weight_decay < 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"need learning_rate > 0, weight_decay >= 0 and 0 <= warmup_fraction < 1, got "
                             f"{self.learning_rate}, {self.weight_decay}, {self.warmup_fraction}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def masked_counts(self) -> tuple[int, int]:
        """The fewest and most masked patches whose fraction lies in ``mask_ratio_range``. Training draws the
        number masked at each step uniformly between them (ViT-MAE's own ``mask_ratio`` rounds the kept count
        down, which can push the fraction above the range)."""
        low, high = self.mask_ratio_range
        return math.ceil(low * self.num_patches - 1e-9), math.floor(high * self.num_patches + 1e-9)

    def vit_mae_config(self):
        """The equivalent ``transformers.ViTMAEConfig`` (no dropout, fixed sin-cos position embeddings)."""
        from transformers import ViTMAEConfig

        return ViTMAEConfig(
            image_size=self.image_size, patch_size=self.patch_size, num_channels=self.num_channels,
            hidden_size=self.hidden_size, num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size, decoder_hidden_size=self.decoder_hidden_size,
            decoder_num_hidden_layers=self.decoder_num_layers, decoder_num_attention_heads=self.decoder_num_heads,
            decoder_intermediate_size=self.decoder_intermediate_size, mask_ratio=self.mask_ratio_range[1],
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

    @classmethod
    def from_dict(cls, values: dict) -> TeacherConfig:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)


@dataclass
class TeacherHistory:
    """The training curve: the reconstruction loss (MSE on normalised pixels of the masked patches) and the
    masked fraction of every step, the mean loss of every finished epoch, and the training seconds."""

    step_losses: list[float] = field(default_factory=list)
    mask_ratios: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def from_dict(cls, values: dict) -> TeacherHistory:
        return cls(**{name: values[name] for name in cls.__dataclass_fields__ if name in values})


def sincos_positions(grid_size: int, dim: int) -> Tensor:
    """Fixed 2D position embeddings [1 + grid_size², dim] (row 0, the class token, is zero): for the patch at
    (row, column), dims [0, dim/2) encode the row and [dim/2, dim) the column, each as sines then cosines of
    position · 10000^(-k / (dim/4)), k = 0 .. dim/4 - 1. ``dim`` must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    frequencies = 10000.0 ** (-torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, columns = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")

    def encode(positions: Tensor) -> Tensor:
        angles = positions.reshape(-1, 1).double() * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(rows), encode(columns)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


class MAETeacher:
    """A ViT-MAE (``transformers.ViTMAEForPreTraining``) with its pixel normalisation.

    ``pixel_mean``/``pixel_std`` hold one value per channel, for pixels scaled to [0, 1]. ``config`` and
    ``history`` are ``None`` for a ViT-MAE that was not trained by :func:`train_teacher`.
    """

    @classmethod
    def initialise(cls, config: TeacherConfig, pixel_mean: tuple[float, ...],
                   pixel_std: tuple[float, ...]) -> MAETeacher:
        """A freshly initialised teacher, seeded by ``config.seed`` without touching the global RNG.

        The fixed position embeddings of encoder and decoder are set to 2D sin-cos tables here: a new
        ``ViTMAEForPreTraining`` in transformers 5.x leaves them at zero, which hides every patch's position.
        """
        from transformers import ViTMAEForPreTraining

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = ViTMAEForPreTraining(config.vit_mae_config())
        grid = config.image_size // config.patch_size
        with torch.no_grad():
            model.vit.embeddings.position_embeddings.copy_(sincos_positions(grid, config.hidden_size)[None])
            model.decoder.decoder_pos_embed.copy_(sincos_positions(grid, config.decoder_hidden_size)[None])
        return cls(model, pixel_mean, pixel_std, config, TeacherHistory())

    def __init__(self, model, pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...],
                 config: TeacherConfig | None = None, history: TeacherHistory | None = None):
        vit = model.config
        size, patch = vit.image_size, vit.patch_size
        if not isinstance(size, int) or not isinstance(patch, int) or size % patch:
            raise ValueError(f"the teacher needs square images tiled by square patches, got image_size={size}, "
                             f"patch_size={patch}")
        if len(pixel_mean) != vit.num_channels or len(pixel_std) != vit.num_channels or min(pixel_std) <= 0:
            raise ValueError(f"pixel_mean and pixel_std need {vit.num_channels} values (std > 0), got "
                             f"{pixel_mean}, {pixel_std}")
        if not model.vit.embeddings.position_embeddings.detach().any():
            warnings.warn("this ViT-MAE's position embeddings are all zero (a fresh transformers 5.x model?), so it "
                          "cannot tell patches apart by position; build new teachers with MAETeacher.initialise",
                          RuntimeWarning, stacklevel=2)
        self.model = model.eval()
        self.pixel_mean = tuple(float(m) for m in pixel_mean)
        self.pixel_std = tuple(float(s) for s in pixel_std)
        self.config = config
        self.history = history

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it encodes (the :class:`~hmmlvd.lvd.images.teachers.Teacher` protocol)."""
        return self.num_channels, self.image_size, self.image_size

    @property
    def num_channels(self) -> int:
        return int(self.model.config.num_channels)

    @property
    def patch_size(self) -> int:
        return int(self.model.config.patch_size)

    @property
    def grid_size(self) -> int:
        """Patches per row (and per column)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @property
    def feature_size(self) -> int:
        """d, the size of one patch feature (the encoder's hidden size)."""
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> MAETeacher:
        self.model.to(device)
        return self

    def check_images(self, images: Tensor) -> None:
        """Raise a ValueError unless ``images`` is a uint8 tensor [N, C, H, W] of this teacher's shape."""
        check_teacher_images(self, images)

    def normalize(self, images: Tensor) -> Tensor:
        """Model input [N, C, H, W] float32 on the teacher's device from uint8 ``images`` [N, C, H, W]."""
        mean = torch.tensor(self.pixel_mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.pixel_std, device=self.device).view(1, -1, 1, 1)
        return (images.to(self.device, torch.float32) / 255.0 - mean) / std

    @contextlib.contextmanager
    def keeping(self, num_visible: int):
        """Within the block the encoder keeps exactly the ``num_visible`` patches of lowest ``noise``.

        ViT-MAE keeps ``int(P · (1 - config.mask_ratio))`` patches; the ratio is set to ``1 - (num_visible +
        ½) / P`` (far from the rounding edges) and restored on exit.
        """
        if not 1 <= num_visible <= self.num_patches:
            raise ValueError(f"num_visible must be in 1..{self.num_patches}, got {num_visible}")
        previous = self.model.config.mask_ratio
        self.model.config.mask_ratio = 1.0 - (num_visible + 0.5) / self.num_patches
        try:
            yield
        finally:
            self.model.config.mask_ratio = previous

    def encode(self, images: Tensor, visible: Tensor) -> Tensor:
        """The encoder's output tokens when only the patches ``visible`` are shown.

        images: uint8 [B, C, H, W]; visible: LongTensor [B, s] of distinct patch indices per row.
        Returns float32 [B, s, d] on CPU: token ``j`` of row ``b`` is patch ``visible[b, j]``'s output. Every other
        patch is dropped before the encoder, so it cannot influence the result.
        """
        self.check_images(images)
        if visible.dim() != 2 or len(visible) != len(images) or visible.shape[1] < 1:
            raise ValueError(f"visible must be a LongTensor [B={len(images)}, s>=1] of patch indices, got shape "
                             f"{tuple(visible.shape)}")
        if visible.min() < 0 or visible.max() >= self.num_patches:
            raise ValueError(f"visible patch indices must be in 0..{self.num_patches - 1}")
        num_visible = visible.shape[1]
        visible = visible.to(self.device)
        noise = torch.ones(len(images), self.num_patches, device=self.device)
        order = torch.arange(num_visible, device=self.device, dtype=noise.dtype).expand_as(visible)
        noise.scatter_(1, visible, order - num_visible)        # visible patches first, in the given order
        if (noise < 0).sum(1).min() < num_visible:
            raise ValueError("each row of visible must hold distinct patch indices")
        with torch.inference_mode(), self.keeping(num_visible):
            hidden = self.model.vit(self.normalize(images), noise=noise).last_hidden_state
        return hidden[:, 1:].float().cpu()                      # drop the class token

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the ViT-MAE folder (``config.json`` + ``model.safetensors``) plus ``teacher.json``."""
        path = Path(path)
        self.model.save_pretrained(path, safe_serialization=True)
        atomic_write_json(path / TEACHER_FILE, {
            "model_type": "hmmlvd-mae-teacher", "format_version": FORMAT_VERSION,
            "pixel_mean": list(self.pixel_mean), "pixel_std": list(self.pixel_std),
            "config": asdict(self.config) if self.config is not None else None,
            "history": asdict(self.history) if self.history is not None else None})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, pixel_mean: tuple[float, ...] | None = None,
                        pixel_std: tuple[float, ...] | None = None, *,
                        device: str | torch.device = "cpu") -> MAETeacher:
        """Load a folder written by :meth:`save_pretrained`, or any ViT-MAE ``save_pretrained`` folder.

        The normalisation comes from, in order: the arguments, ``teacher.json``, a ``preprocessor_config.json``
        (``image_mean``/``image_std``), or mean 0.5 and std 0.5 per channel.
        """
        from transformers import ViTMAEConfig, ViTMAEForPreTraining

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a saved ViT-MAE folder: config.json is missing")
        model_type = read_json(path / "config.json").get("model_type")
        if model_type != ViTMAEConfig.model_type:
            raise ValueError(f"{path} holds a {model_type!r} model; the teacher must be a ViT-MAE "
                             f"(model_type {ViTMAEConfig.model_type!r})")
        try:
            model = ViTMAEForPreTraining.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load the ViT-MAE in {path}: {error}") from None
        meta = read_json(path / TEACHER_FILE) if (path / TEACHER_FILE).is_file() else {}
        processor = read_json(path / "preprocessor_config.json") \
            if (path / "preprocessor_config.json").is_file() else {}
        channels = model.config.num_channels
        mean = pixel_mean or meta.get("pixel_mean") or processor.get("image_mean") or [0.5] * channels
        std = pixel_std or meta.get("pixel_std") or processor.get("image_std") or [0.5] * channels
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in [*mean, *std]):
            raise ValueError(f"{path}: the pixel normalisation must be finite numbers, got mean {mean}, std {std}")
        for name, values in model.state_dict().items():
            if values.is_floating_point() and not bool(torch.isfinite(values).all()):
                raise ValueError(f"{path}: the weights {name} contain NaN or infinite values; the file is damaged")
        config = TeacherConfig.from_dict(meta["config"]) if meta.get("config") else None
        history = TeacherHistory.from_dict(meta["history"]) if meta.get("history") else None
        return cls(model, tuple(mean), tuple(std), config, history).to(device)
