"""Non-overlapping square patches of images, and the geometry of the patch grid.

A patch's values are flattened channel-major, all channels of the patch together: index
``c·p·p + row·p + col``. Patches are numbered row-major over the grid.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


def default_patch_size(image_size: int) -> int:
    """The paper's patch side for a square image: 4 for 28 and 32 px (and other sizes below 64), 8 from 64 px."""
    patch_size = 8 if image_size >= 64 else 4
    if image_size % patch_size:
        raise ValueError(f"no default patch size for {image_size} px images ({image_size} is not divisible by "
                         f"{patch_size}); pass the patch size explicitly")
    return patch_size


@dataclass(frozen=True)
class PatchGrid:
    """The grid of ``patch_size``-sided patches over ``height`` × ``width`` images."""

    height: int
    width: int
    patch_size: int

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {self.patch_size}")
        if self.height % self.patch_size or self.width % self.patch_size:
            raise ValueError(f"images of {self.height}x{self.width} px cannot be cut into {self.patch_size}x"
                             f"{self.patch_size} patches: height and width must be divisible by the patch size")

    @property
    def rows(self) -> int:
        return self.height // self.patch_size

    @property
    def cols(self) -> int:
        return self.width // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.rows * self.cols

    def position(self, patch: int) -> tuple[int, int]:
        """``(row, col)`` of patch number ``patch`` in the grid."""
        if not 0 <= patch < self.num_patches:
            raise ValueError(f"patch index {patch} outside 0..{self.num_patches - 1}")
        return divmod(patch, self.cols)

    def neighbourhood(self, patch: int) -> list[int]:
        """The patches of the 3×3 block centred on ``patch`` (itself included, clipped at the border), ascending."""
        row, col = self.position(patch)
        return [r * self.cols + c for r in range(max(row - 1, 0), min(row + 2, self.rows))
                for c in range(max(col - 1, 0), min(col + 2, self.cols))]


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``images`` [N, C, H, W] -> patches [N, P, C·p·p], P = (H/p)·(W/p) in row-major grid order."""
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {list(images.shape)}")
    num_images, channels, height, width = images.shape
    grid = PatchGrid(height, width, patch_size)
    p = patch_size
    blocks = images.reshape(num_images, channels, grid.rows, p, grid.cols, p)
    return blocks.permute(0, 2, 4, 1, 3, 5).reshape(num_images, grid.num_patches, channels * p * p)


def unpatchify(patches: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
    """The inverse of ``patchify``: patches [N, P, C·p·p] -> images [N, C, H, W] for ``image_shape`` (C, H, W)."""
    channels, height, width = image_shape
    if patches.dim() != 3:
        raise ValueError(f"patches must be [N, P, C*p*p], got shape {list(patches.shape)}")
    num_images, num_patches, patch_values = patches.shape
    side_squared, remainder = divmod(patch_values, channels)
    p = round(side_squared ** 0.5)
    if remainder or p * p != side_squared:
        raise ValueError(f"{patch_values} values per patch is not {channels} channels of a square patch")
    grid = PatchGrid(height, width, p)
    if num_patches != grid.num_patches:
        raise ValueError(f"{num_patches} patches do not tile {height}x{width} images with {p}x{p} patches "
                         f"({grid.num_patches} expected)")
    blocks = patches.reshape(num_images, grid.rows, grid.cols, channels, p, p)
    return blocks.permute(0, 3, 1, 4, 2, 5).reshape(num_images, channels, height, width)
