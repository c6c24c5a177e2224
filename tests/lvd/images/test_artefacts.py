"""Image models and teachers are artefacts like every other: hmmlvd.load opens them, folders of hmmlvd 0.1 still
load, and a file whose numbers were changed or damaged is refused with the file and the group named. A user's
own teacher plugs into the recipe through the Teacher protocol."""
import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

import hmmlvd
from hmmlvd import pc
from hmmlvd.data import load_images
from hmmlvd.data.patches import patchify
from hmmlvd.io import atomic_write_json
from hmmlvd.lvd.images import (ImageRecipeConfig, MAETeacher, PatchImageModel, PixelTeacher, Teacher,
                               assign_latents, distil_latents)
from hmmlvd.lvd.images.recipe import train
from tests.lvd.images.conftest import tiny_config


def small_model(seed: int = 0) -> PatchImageModel:
    config = pc.PatchCircuitConfig(num_patches=4, values_per_patch=16, num_clusters=3, hidden_size=2,
                                   num_categories=17, tied=True)
    return PatchImageModel(pc.PatchCircuit(config, seed=seed, dtype=torch.float64), (1, 8, 8), 4)


def images(count: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 17, (count, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_an_image_model_is_one_artefact_that_hmmlvd_load_opens(tmp_path):
    model = small_model()
    model.save_pretrained(tmp_path / "model")
    stored = json.loads((tmp_path / "model" / "config.json").read_text())
    assert stored["model_type"] == "patch_image_model" and stored["image_shape"] == [1, 8, 8]
    assert not (tmp_path / "model" / "image.json").exists()
    loaded = hmmlvd.load(tmp_path / "model")
    assert isinstance(loaded, PatchImageModel) and loaded.image_shape == (1, 8, 8) and loaded.patch_size == 4
    x = images()
    torch.testing.assert_close(loaded.log_likelihood(x), model.log_likelihood(x), rtol=1e-6, atol=0)
    # the circuit inside opens on its own too
    assert isinstance(pc.PatchCircuit.from_pretrained(tmp_path / "model"), pc.PatchCircuit)


def test_an_image_model_folder_of_hmmlvd_0_1_still_loads(tmp_path):
    model = small_model()
    model.circuit.save_pretrained(tmp_path / "old")                               # patch_circuit config.json ...
    atomic_write_json(tmp_path / "old" / "image.json", {"image_shape": [1, 8, 8], "patch_size": 4})  # ... + geometry
    for loaded in (hmmlvd.load(tmp_path / "old"), PatchImageModel.from_pretrained(tmp_path / "old")):
        assert isinstance(loaded, PatchImageModel) and loaded.image_shape == (1, 8, 8)
    (tmp_path / "old" / "image.json").write_text('{"image_shape": [1, 8], "patch_size": 4}')
    with pytest.raises(ValueError, match=r"image\.json: image_shape must be three positive integers"):
        PatchImageModel.from_pretrained(tmp_path / "old")


def test_geometry_that_does_not_fit_the_circuit_is_refused(tmp_path):
    small_model().save_pretrained(tmp_path / "model")
    stored = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**stored, "image_shape": [3, 8, 8]}))
    with pytest.raises(ValueError, match="patches of 48 values, but the circuit models 4 patches of 16"):
        hmmlvd.load(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text(json.dumps({**stored, "patch_size": "4"}))
    with pytest.raises(ValueError, match="config.json: image_shape must be"):
        hmmlvd.load(tmp_path / "model")


@pytest.mark.parametrize("damage, group, message", [
    (lambda t: t * 3, "patch_emissions", "do not sum to 1"),                    # the tampering of issue 24
    (lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "latent_transitions", "NaN"),
    (lambda t: t - 2 * t.max(), "patch_root", "negative"),
    (lambda t: t.flip(-1) * 1.01, "latent_emissions", "do not sum to 1"),
])
def test_a_circuit_whose_numbers_were_changed_is_refused(damage, group, message, tmp_path):
    model = small_model()
    model.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    tensors = load_file(weights)
    tensors[group] = damage(tensors[group])
    save_file(tensors, weights, metadata={"model_type": "patch_image_model"})
    for opener in (hmmlvd.load, PatchImageModel.from_pretrained, pc.PatchCircuit.from_pretrained):
        with pytest.raises(ValueError, match=message) as error:
            opener(tmp_path / "model")
        assert "model.safetensors" in str(error.value) and group in str(error.value)


def test_rounding_within_the_stated_tolerance_is_accepted(tmp_path):
    model = small_model()
    model.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    tensors = load_file(weights)
    tensors["patch_emissions"] = tensors["patch_emissions"] * (1 + 1e-4)         # within em.NORMALIZATION_TOLERANCE
    save_file(tensors, weights)
    assert isinstance(hmmlvd.load(tmp_path / "model"), PatchImageModel)


def test_a_saved_teacher_opens_with_hmmlvd_load_and_damaged_weights_are_refused(tmp_path):
    teacher = MAETeacher.initialise(tiny_config(), (0.5,), (0.25,))
    teacher.save_pretrained(tmp_path / "teacher")
    loaded = hmmlvd.load(tmp_path / "teacher")
    assert isinstance(loaded, MAETeacher) and isinstance(loaded, Teacher)
    assert loaded.image_shape == (1, 8, 8) and loaded.pixel_std == (0.25,)
    meta = json.loads((tmp_path / "teacher" / "teacher.json").read_text())
    (tmp_path / "teacher" / "teacher.json").write_text(json.dumps({**meta, "pixel_std": [float("nan")]}))
    with pytest.raises(ValueError, match="pixel normalisation must be finite"):
        hmmlvd.load(tmp_path / "teacher")
    (tmp_path / "teacher" / "teacher.json").write_text(json.dumps(meta))
    weights = tmp_path / "teacher" / "model.safetensors"
    tensors = load_file(weights)
    name = next(key for key, value in tensors.items() if value.is_floating_point() and value.numel() > 1)
    tensors[name][0] = float("inf")
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="NaN or infinite"):
        hmmlvd.load(tmp_path / "teacher")


class ProjectionTeacher:
    """A user's own teacher: each patch's pixels through one fixed random projection to 5 features."""

    def __init__(self, image_shape, patch_size):
        self.image_shape, self.patch_size, self.feature_size = tuple(image_shape), patch_size, 5
        values = image_shape[0] * patch_size ** 2
        self.projection = torch.randn(values, 5, generator=torch.Generator().manual_seed(4))

    def encode(self, images, visible):
        patches = patchify(images.long(), self.patch_size).float() @ self.projection          # [B, P, 5]
        return torch.gather(patches, 1, visible[..., None].expand(-1, -1, 5))


def test_a_users_own_teacher_plugs_into_the_recipe_without_touching_it(tmp_path):
    digits = load_images("digits", split="train").images
    teacher = ProjectionTeacher((1, 8, 8), 4)
    assert isinstance(teacher, Teacher)
    config = ImageRecipeConfig(num_clusters=3, hidden_size=2, patch_size=4, models=("lvd",), lvd_epochs=1,
                               latent_epochs=1, finetune_epochs=1, kmeans_iterations=5, kmeans_restarts=1,
                               context="none", progress=False)
    result = train(digits[:150], digits[150:200], config, teacher=teacher, num_categories=17)
    assert result.teacher is teacher and math.isfinite(result.models["lvd"].valid_bpd)
    projected = (patchify(digits[:150].long(), 4).float() @ teacher.projection)
    expected, _ = assign_latents(projected, 3, iterations=5, restarts=1, progress=False)
    assert torch.equal(result.assignments, expected)                          # its features were the ones clustered


def test_the_pixel_teacher_gives_the_patch_values_whatever_the_context():
    digits = load_images("digits", split="train").images[:100]
    config = ImageRecipeConfig(num_clusters=4, patch_size=4, latents="pixels", tied=True, kmeans_iterations=5,
                               kmeans_restarts=2, progress=False)
    for context in ("none", "mst", "neighbours"):
        latents = distil_latents(PixelTeacher((1, 8, 8), 4), digits, replace(config, context=context))
        expected, _ = assign_latents(patchify(digits.long(), 4).float(), 4, iterations=5, restarts=2, progress=False,
                                     shared=True)
        assert torch.equal(latents.assignments, expected)
    with pytest.raises(ValueError, match="cannot be cut into 3x3 patches"):
        PixelTeacher((1, 8, 8), 3)
