import numpy as np
import pytest
import torch

from hmmlvd.lvd.images import (PatchContext, encode_patches, feature_correlations, mst_context, neighbour_context,
                               no_context, patch_features)

from .conftest import random_images


def patch_pixels(grid: int, patch: int, size: int = 2) -> tuple[slice, slice]:
    row, column = divmod(patch, grid)
    return slice(row * size, (row + 1) * size), slice(column * size, (column + 1) * size)


def test_masked_out_patches_do_not_change_a_patch_feature(tiny_teacher):
    images = random_images(4)
    visible = torch.tensor([6, 2, 9])                               # patch 6 with patches 2 and 9 visible
    features = tiny_teacher.encode(images, visible.expand(4, 3))
    changed = random_images(4, seed=1)                              # every pixel new ...
    for patch in visible.tolist():                                  # ... except in the visible patches
        rows, columns = patch_pixels(4, patch)
        changed[:, :, rows, columns] = images[:, :, rows, columns]
    assert torch.allclose(tiny_teacher.encode(changed, visible.expand(4, 3)), features, atol=1e-5)
    rows, columns = patch_pixels(4, 9)                              # a visible patch does change it
    changed[:, :, rows, columns] = 255 - changed[:, :, rows, columns]
    assert (tiny_teacher.encode(changed, visible.expand(4, 3))[:, 0] - features[:, 0]).abs().max() > 1e-3


def test_encode_returns_the_token_of_each_visible_patch_whatever_the_order(tiny_teacher):
    images = random_images(2)
    forward = tiny_teacher.encode(images, torch.tensor([[3, 7, 12]] * 2))
    backward = tiny_teacher.encode(images, torch.tensor([[12, 3, 7]] * 2))
    assert torch.allclose(forward, backward[:, [1, 2, 0]], atol=1e-5)
    alone = tiny_teacher.encode(images, torch.tensor([[3]] * 2))
    assert (alone[:, 0] - forward[:, 0]).abs().max() > 1e-3         # context matters


def test_neighbour_context_is_the_clipped_three_by_three_block():
    context = neighbour_context(4)
    assert set(context.visible_sets[0]) == {0, 1, 4, 5}                        # corner
    assert set(context.visible_sets[2]) == {1, 2, 3, 5, 6, 7}                  # top edge
    assert set(context.visible_sets[8]) == {4, 5, 8, 9, 12, 13}                # left edge
    assert set(context.visible_sets[5]) == {0, 1, 2, 4, 5, 6, 8, 9, 10}        # inside
    assert set(context.visible_sets[15]) == {10, 11, 14, 15}                   # corner
    for patch, visible in enumerate(context.visible_sets):                     # brute force, every patch
        assert visible[0] == patch
        assert set(visible) == {other for other in range(16) if abs(other // 4 - patch // 4) <= 1
                                and abs(other % 4 - patch % 4) <= 1}
    assert neighbour_context(1).visible_sets == ((0,),)


def test_feature_correlations_match_numpy_pearson():
    features = torch.randn(50, 4, 3, generator=torch.Generator().manual_seed(0))
    features[:, 1] = features[:, 0] * 2 + 0.1 * features[:, 1]
    features[:, 3, 2] = 7.0                                          # a constant dimension counts as 0
    expected = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            for k in range(3):
                a, b = features[:, i, k].double().numpy(), features[:, j, k].double().numpy()
                if a.std() > 0 and b.std() > 0:
                    expected[i, j] += abs(np.corrcoef(a, b)[0, 1]) / 3
    assert np.allclose(feature_correlations(features).numpy(), expected, atol=1e-5)


def tree_features(parents: list[int], count: int = 4000, dim: int = 6, rho: float = 0.8) -> torch.Tensor:
    """Gaussian features on a tree: x_child = rho·x_parent + noise, so corr(i, j) = rho^distance(i, j) and the
    maximum spanning tree of the correlations is the generating tree."""
    generator = torch.Generator().manual_seed(0)
    features = torch.empty(count, len(parents), dim)
    for node in sorted(range(len(parents)), key=lambda n: depth(parents, n)):
        noise = torch.randn(count, dim, generator=generator)
        parent = parents[node]
        features[:, node] = noise if parent < 0 else rho * features[:, parent] + (1 - rho ** 2) ** 0.5 * noise
    return features * torch.linspace(0.5, 3.0, dim)                   # scales do not matter to Pearson


def depth(parents: list[int], node: int) -> int:
    return 0 if parents[node] < 0 else 1 + depth(parents, parents[node])


def ancestors(parents: list[int], node: int) -> tuple[int, ...]:
    return (node,) if parents[node] < 0 else (node, *ancestors(parents, parents[node]))


def test_mst_context_recovers_a_chain_and_shows_each_patch_its_ancestors():
    chain = [-1, 0, 1, 2, 3, 4]                                      # 0 - 1 - 2 - 3 - 4 - 5
    context = mst_context(tree_features(chain), root=0)
    assert context.parents == tuple(chain)
    assert context.visible_sets == ((0,), (1, 0), (2, 1, 0), (3, 2, 1, 0), (4, 3, 2, 1, 0), (5, 4, 3, 2, 1, 0))
    centred = mst_context(tree_features(chain))                      # default root: the centre (2 or 3)
    assert centred.visible_sets[0] in ((0, 1, 2), (0, 1, 2, 3)) and centred.visible_sets[5] in ((5, 4, 3),
                                                                                                (5, 4, 3, 2))


def test_mst_context_recovers_a_branching_tree():
    parents = [3, 3, -1, 2, 2, 4, 2, 6, 6]                           # root 2; patch 3 has children 0 and 1
    context = mst_context(tree_features(parents), root=2)
    assert context.parents == tuple(parents)
    assert context.visible_sets == tuple(ancestors(parents, node) for node in range(len(parents)))


def test_patch_features_equal_encoding_each_patch_with_its_context_one_by_one(tiny_teacher):
    images = random_images(5)
    for kind in ("none", "neighbours", "mst"):
        result = patch_features(tiny_teacher, images, kind, batch_size=7, correlation_images=4, progress=False)
        assert result.features.shape == (5, 16, 16) and result.features.dtype == torch.float32
        assert result.context.kind == kind
        for patch in range(16):                                      # independent: one query per (image, patch)
            visible = torch.tensor(result.context.visible_sets[patch])
            for image in range(5):
                alone = tiny_teacher.encode(images[image:image + 1], visible[None])[0, 0]
                assert torch.allclose(result.features[image, patch], alone, atol=1e-5)
    assert all(visible == (patch,) for patch, visible in enumerate(patch_features(
        tiny_teacher, images, "none", progress=False).context.visible_sets))


def test_mst_context_is_learnt_from_the_context_free_features_of_a_subsample(tiny_teacher):
    images = random_images(12)
    result = patch_features(tiny_teacher, images, "mst", correlation_images=6, seed=3, progress=False)
    sample = torch.randperm(12, generator=torch.Generator().manual_seed(3))[:6]
    alone = encode_patches(tiny_teacher, images[sample], no_context(16), progress=False)
    reference = mst_context(alone)
    assert (result.context.parents, result.context.visible_sets) == (reference.parents, reference.visible_sets)
    assert torch.allclose(result.context.correlations, feature_correlations(alone))
    again = patch_features(tiny_teacher, random_images(3, seed=5), result.context, progress=False)
    assert again.context is result.context                           # test images reuse the training context


def test_context_round_trips_through_its_dict_form(tiny_teacher):
    context = patch_features(tiny_teacher, random_images(6), "mst", correlation_images=6, progress=False).context
    loaded = PatchContext.from_dict(context.as_dict())
    assert (loaded.kind, loaded.visible_sets, loaded.parents) == (context.kind, context.visible_sets, context.parents)
    assert torch.allclose(loaded.correlations, context.correlations)


def test_bad_feature_inputs_raise_clear_errors(tiny_teacher):
    with pytest.raises(ValueError, match="context must be one of"):
        patch_features(tiny_teacher, random_images(2), "tree", progress=False)
    with pytest.raises(ValueError, match="covers 9 patches"):
        encode_patches(tiny_teacher, random_images(2), neighbour_context(3), progress=False)
    with pytest.raises(ValueError, match="uint8"):
        patch_features(tiny_teacher, random_images(2).float(), "none", progress=False)
    with pytest.raises(ValueError, match="must start with 1"):
        PatchContext("none", ((0,), (0, 1)))
    with pytest.raises(ValueError, match=r"\[n >= 2, P, d\]"):
        feature_correlations(torch.randn(1, 3, 2))
    with pytest.raises(ValueError, match="correlation_images"):
        patch_features(tiny_teacher, random_images(2), "mst", correlation_images=1, progress=False)
