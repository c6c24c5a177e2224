"""The teacher protocol: what latent variable distillation needs of a neural network that describes patches.

A teacher sees uint8 images [N, C, H, W] cut into ``patch_size`` patches (row-major, as
:func:`hmmlvd.data.patches.patchify`) and returns one feature vector per visible patch. The ViT-MAE of
:mod:`.teacher` (the paper's teacher) implements it, :class:`PixelTeacher` (the patch values themselves) does too,
and so can any user encoder: a VQ-VAE, a timm ViT or a CNN wrapped in a dozen lines.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ...data.patches import PatchGrid, patchify


@runtime_checkable
class Teacher(Protocol):
    """``image_shape`` (C, H, W), ``patch_size`` and ``feature_size`` d, and ``encode``:

    ``encode(images uint8 [B, C, H, W], visible LongTensor [B, s]) -> float32 [B, s, d]``, the feature of patch
    ``visible[b, j]`` when only the patches ``visible[b]`` are shown (token 0 is the patch being described; the
    others are its context). Only the first token of every row is used for distillation."""

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    def patch_size(self) -> int: ...

    @property
    def feature_size(self) -> int: ...

    def encode(self, images: Tensor, visible: Tensor) -> Tensor: ...


def teacher_grid(teacher: Teacher) -> PatchGrid:
    """The patch grid of the teacher's images."""
    _, height, width = teacher.image_shape
    return PatchGrid(height, width, teacher.patch_size)


def check_teacher_images(teacher: Teacher, images: Tensor) -> None:
    """Raise a ValueError unless ``images`` is a uint8 tensor [N, C, H, W] of the teacher's image shape."""
    expected = tuple(teacher.image_shape)
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or tuple(images.shape[1:]) != expected:
        got = (images.dtype, tuple(images.shape)) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a uint8 tensor [N, {expected[0]}, {expected[1]}, {expected[2]}] "
                         f"(pixel values 0..255) for this teacher, got {got}")


class PixelTeacher:
    """The patch values themselves as features (d = C·p·p, context ignored): K-means then clusters patches by
    their pixels, with no network (``--latents pixels``)."""

    def __init__(self, image_shape: tuple[int, int, int], patch_size: int):
        self.image_shape = tuple(int(v) for v in image_shape)
        self.patch_size = int(patch_size)
        teacher_grid(self)                                     # checks that the patches tile the images

    @property
    def feature_size(self) -> int:
        return self.image_shape[0] * self.patch_size ** 2

    def encode(self, images: Tensor, visible: Tensor) -> Tensor:
        """Pixel values (float32) of the visible patches: [B, s, C·p·p] for ``visible`` [B, s]."""
        check_teacher_images(self, images)
        patches = patchify(images.long(), self.patch_size).float()                     # [B, P, D]
        return torch.gather(patches, 1, visible[..., None].expand(-1, -1, patches.shape[2]))
