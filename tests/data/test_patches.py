"""Patches: a hand-checked example, a loop reference, round trips and the grid geometry."""
import pytest
import torch

from hmmlvd.data import PatchGrid, default_patch_size, patchify, unpatchify


def test_hand_checked_two_channel_example():
    grey = torch.arange(16).reshape(4, 4)
    images = torch.stack([grey, grey + 100])[None]                          # [1, 2, 4, 4]
    assert patchify(images, 2)[0].tolist() == [
        [0, 1, 4, 5, 100, 101, 104, 105],
        [2, 3, 6, 7, 102, 103, 106, 107],
        [8, 9, 12, 13, 108, 109, 112, 113],
        [10, 11, 14, 15, 110, 111, 114, 115]]


def test_patchify_matches_a_loop_and_round_trips():
    images = torch.randint(0, 256, (3, 3, 12, 8), dtype=torch.uint8)
    p = 4
    patches = patchify(images, p)
    assert patches.shape == (3, 6, 48) and patches.dtype == torch.uint8
    for n in range(3):
        for index in range(6):
            row, col = divmod(index, 2)
            expected = [int(images[n, c, row * p + y, col * p + x])
                        for c in range(3) for y in range(p) for x in range(p)]
            assert patches[n, index].tolist() == expected
    assert torch.equal(unpatchify(patches, (3, 12, 8)), images)


def test_shape_errors():
    with pytest.raises(ValueError, match="divisible by the patch size"):
        patchify(torch.zeros(1, 1, 28, 30), 4)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        patchify(torch.zeros(28, 28), 4)
    with pytest.raises(ValueError, match="square patch"):
        unpatchify(torch.zeros(1, 4, 12), (1, 4, 4))
    with pytest.raises(ValueError, match="4 expected"):
        unpatchify(torch.zeros(1, 3, 4), (1, 4, 4))


def test_default_patch_sizes():
    assert [default_patch_size(s) for s in (8, 28, 32, 64)] == [4, 4, 4, 8]
    with pytest.raises(ValueError, match="pass the patch size"):
        default_patch_size(30)


def test_grid_geometry_and_neighbourhoods():
    grid = PatchGrid(28, 28, 4)
    assert (grid.rows, grid.cols, grid.num_patches) == (7, 7, 49)
    assert grid.position(10) == (1, 3)
    assert grid.neighbourhood(0) == [0, 1, 7, 8]                             # corner: 2x2
    assert grid.neighbourhood(3) == [2, 3, 4, 9, 10, 11]                     # top edge: 2x3
    assert grid.neighbourhood(24) == [16, 17, 18, 23, 24, 25, 30, 31, 32]   # centre: 3x3
    brute = [[j for j in range(49) if max(abs(j // 7 - i // 7), abs(j % 7 - i % 7)) <= 1] for i in range(49)]
    assert [grid.neighbourhood(i) for i in range(49)] == brute
    with pytest.raises(ValueError, match="outside"):
        grid.position(49)
