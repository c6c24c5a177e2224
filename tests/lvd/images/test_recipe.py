"""The image recipe end to end on sklearn's 8×8 digits with a tiny teacher: three models with finite bpd and the
same EM budget, exact resume after an interruption, save/load of the trained image model, clear errors."""
import math

import pytest
import torch

from hmmlvd import em
from hmmlvd.data import load_images
from hmmlvd.lvd.images import recipe
from hmmlvd.lvd.images import PixelTeacher
from hmmlvd.lvd.images.model import PatchImageModel
from hmmlvd.lvd.images.pictures import region_mask
from hmmlvd.lvd.images.recipe import ImageRecipeConfig, pixel_hclt_latents, train
from tests.lvd.images.conftest import tiny_config


@pytest.fixture(scope="module")
def digits():
    images = load_images("digits", split="train").images
    return images[:240], images[240:300], load_images("digits", split="test").images[:60]


def config(tmp_path, **changes) -> ImageRecipeConfig:
    values = dict(num_clusters=3, hidden_size=2, patch_size=4, latents="mae", teacher=tiny_config(patch_size=4, epochs=1),
                  models=("lvd", "em", "hclt"), lvd_epochs=1, latent_epochs=1, finetune_epochs=2, batch_size=64,
                  kmeans_iterations=5, progress=False, cache_dir=str(tmp_path / "teachers"))
    values.update(changes)
    return ImageRecipeConfig(**values)


def test_three_models_get_finite_bpd_and_the_same_em_budget(digits, tmp_path):
    train_images, valid_images, test_images = digits
    result = train(train_images, valid_images, config(tmp_path), test_images=test_images, num_categories=17)
    assert set(result.models) == {"lvd", "em", "hclt"}
    for trained in result.models.values():
        assert math.isfinite(trained.valid_bpd) and math.isfinite(trained.test_bpd)
        assert 0 < trained.test_bpd < math.log2(17), trained.name     # better than uniform over 17 grey levels
    budget = config(tmp_path).budget_epochs
    assert len(result.models["em"].valid_curve) == len(result.models["hclt"].valid_curve) == budget
    assert len(result.models["lvd"].valid_curve) == budget        # one bpd after Lemma 1, latent step, each epoch
    assert result.models["lvd"].num_parameters == result.models["em"].num_parameters
    assert result.assignments.shape == (len(train_images), 4) and int(result.assignments.max()) < 3
    # the reported test bpd is the model's own likelihood of the test images
    lvd = result.models["lvd"].model
    ll = lvd.log_likelihood(test_images)
    assert result.models["lvd"].test_bpd == pytest.approx(-ll.mean().item() / (64 * math.log(2)), rel=1e-9)


def test_em_alone_trains_the_circuit_it_trains_beside_lvd(digits, tmp_path):
    # the patch circuit's trees come from the distilled latents whichever models run, so EM alone is one baseline
    train_images, valid_images, _ = digits
    alone, beside = (train(train_images, valid_images, config(tmp_path, latents="pixels", teacher=None, models=models),
                           num_categories=17).models["em"] for models in (("em",), ("lvd", "em")))
    assert alone.model.circuit.config == beside.model.circuit.config
    assert alone.valid_curve == beside.valid_curve


def test_resume_after_an_interruption_gives_the_uninterrupted_result(digits, tmp_path, monkeypatch):
    train_images, valid_images, _ = digits
    settings = config(tmp_path, models=("lvd",))
    reference = train(train_images, valid_images, settings, directory=tmp_path / "a", num_categories=17)
    real_fit = em.fit

    def killed_after_one_finetune_epoch(model, data, schedule, **options):
        if "finetune" in str(options.get("checkpoint_dir")):
            def stop(epoch, history):
                raise RuntimeError("killed")
            options["on_epoch_end"] = stop
        return real_fit(model, data, schedule, **options)

    monkeypatch.setattr(em, "fit", killed_after_one_finetune_epoch)
    with pytest.raises(RuntimeError, match="killed"):
        train(train_images, valid_images, settings, directory=tmp_path / "b", num_categories=17)
    monkeypatch.setattr(em, "fit", real_fit)
    resumed = train(train_images, valid_images, settings, directory=tmp_path / "b", resume=True, num_categories=17)
    assert resumed.models["lvd"].valid_curve[-1] == reference.models["lvd"].valid_curve[-1]
    for name, values in reference.models["lvd"].model.circuit.parameter_groups().items():
        torch.testing.assert_close(resumed.models["lvd"].model.circuit.parameter_groups()[name].values,
                                   values.values, rtol=0, atol=0)


def test_save_and_load_round_trip_of_the_image_model(digits, tmp_path):
    train_images, valid_images, test_images = digits
    model = train(train_images, valid_images, config(tmp_path, models=("lvd",)), num_categories=17).models["lvd"].model
    model.save_pretrained(tmp_path / "model")
    loaded = PatchImageModel.from_pretrained(tmp_path / "model")
    assert loaded.image_shape == (1, 8, 8) and loaded.patch_size == 4
    for name, group in model.circuit.parameter_groups().items():
        assert torch.equal(loaded.circuit.parameter_groups()[name].values, group.values), name
    assert torch.equal(loaded.log_likelihood(test_images), model.log_likelihood(test_images))
    hidden = region_mask("bottom", 8, 8)
    filled = loaded.inpaint(test_images[:5], hidden, seed=1)
    assert torch.equal(filled[:, :, ~hidden], test_images[:5][:, :, ~hidden])     # observed pixels are kept
    assert loaded.sample(3).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="image.json"):
        PatchImageModel.from_pretrained(tmp_path)


def test_pixel_hclt_size_is_the_closest_parameter_count():
    for target in (50_000, 3_000_000, 10**9):
        chosen = pixel_hclt_latents(target, 784, 256)
        sizes = {k: 784 * (256 * k + k * k) for k in range(1, 65)}
        assert abs(sizes[chosen] - target) == min(abs(s - target) for s in sizes.values())
    assert pixel_hclt_latents(10**9, 784, 256) == 64


def test_the_pixel_hclt_alone_is_sized_like_the_patch_circuit(digits, tmp_path):
    train_images, valid_images, _ = digits
    settings = config(tmp_path, num_clusters=8, hidden_size=4, models=("hclt",))
    trained = train(train_images, valid_images, settings, num_categories=17).models["hclt"]
    patch_circuit = train(train_images, valid_images, config(tmp_path, num_clusters=8, hidden_size=4, models=("em",)),
                          num_categories=17).models["em"]
    # counted by hand: the untied patch circuit over P = 4 patches of D = 16 values, k = 8, H = 4, Ht = k, 17 levels:
    # 4 · 8 patch models (root, 15 transitions, 16 emission tables), then p(Z): root, 3 transitions, 4 emissions
    patch, latent = 4 * 8 * (4 + 15 * 4 * 4 + 16 * 17 * 4), 8 + 3 * 8 * 8 + 4 * 8 * 8
    assert patch_circuit.num_parameters == patch + latent == sum(
        group.values.numel() for group in patch_circuit.model.circuit.parameter_groups().values())

    def hclt_size(k):                      # 64 pixel leaves of 17 levels, 63 edges of k x k, a root of k
        return 64 * 17 * k + 63 * k * k + k
    chosen = trained.seconds["num_latents"]
    assert hclt_size(chosen) == trained.num_parameters == trained.model.num_parameters
    assert all(abs(hclt_size(chosen) - (patch + latent)) <= abs(hclt_size(k) - (patch + latent)) for k in range(1, 65))

@pytest.mark.parametrize("changes, message", [
    ({"num_clusters": 0}, "num_clusters"), ({"context": "all"}, "context"), ({"models": ("lvd", "gan")}, "models"),
    ({"lvd_epochs": 0, "latent_epochs": 0, "finetune_epochs": 0}, "budget"), ({"step_end": 0.9}, "step_end"),
    ({"finetune_step_start": 1.5}, "finetune_step_start"), ({"latents": "vqvae"}, "latents"),
    ({"latents": "pixels", "teacher_path": "mae"}, "no teacher"), ({"em_epochs": 0}, "em_epochs"),
    ({"patch_states": "kmeans"}, "patch_states"),
])
def test_bad_configs_are_refused(changes, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **changes)


def test_pixel_latents_recover_planted_patch_kinds_and_baselines_get_their_own_epochs(tmp_path):
    # 8×8 images of four 4×4 patches, each patch one of three kinds (values near 1, 8 or 15): pixel latents with
    # one shared K-means must give every patch of one kind the same cluster, and different kinds different ones.
    generator = torch.Generator().manual_seed(0)
    kinds = torch.randint(0, 3, (240, 2, 2), generator=generator)
    values = (1 + 7 * kinds).repeat_interleave(4, 1).repeat_interleave(4, 2)
    noise = torch.randint(-1, 2, (240, 8, 8), generator=generator)
    images = (values + noise).clamp(0, 16).to(torch.uint8)[:, None]
    settings = config(tmp_path, latents="pixels", teacher=None, tied=True, models=("lvd", "em"), em_epochs=3,
                      kmeans_iterations=20, kmeans_restarts=10)
    result = train(images[:200], images[200:], settings, num_categories=17)
    assert isinstance(result.teacher, PixelTeacher)          # the patch values are the teacher
    planted = kinds[:200].flatten(1)
    for kind in range(3):
        assert result.assignments[planted == kind].unique().numel() == 1
    assert result.assignments.flatten().unique().numel() == 3
    assert len(result.models["em"].valid_curve) == 3 != settings.budget_epochs
    assert len(result.models["lvd"].valid_curve) == settings.budget_epochs


def test_binned_patch_states_give_lemma_1_a_better_start_than_random_parameters(tmp_path):
    # Patches of two kinds (values near 3 or 12, noise ±2): after one Lemma-1 epoch the circuit started from
    # binned hidden states is closer to the data than the one started from random parameters.
    generator = torch.Generator().manual_seed(1)
    kinds = torch.randint(0, 2, (300, 2, 2), generator=generator)
    values = (3 + 9 * kinds).repeat_interleave(4, 1).repeat_interleave(4, 2)
    images = (values + torch.randint(-2, 3, (300, 8, 8), generator=generator)).to(torch.uint8)[:, None]
    starts = {}
    for states in ("bins", "random"):
        settings = config(tmp_path, latents="pixels", teacher=None, tied=True, models=("lvd",), num_clusters=2,
                          hidden_size=4, lvd_epochs=1, latent_epochs=0, finetune_epochs=0, patch_states=states)
        starts[states] = train(images[:250], images[250:], settings, num_categories=17).models["lvd"].valid_curve[0]
    assert starts["bins"] < starts["random"] - 0.05


def test_finetuning_starts_gentler_on_untied_circuits_than_on_tied_ones(tmp_path):
    def first_and_last(schedule):
        return schedule.start, schedule.end, schedule.epochs
    assert first_and_last(config(tmp_path).finetune_schedule()) == (0.1, 0.01, 2)
    assert first_and_last(config(tmp_path, tied=True).finetune_schedule()) == (0.3, 0.03, 2)
    assert first_and_last(config(tmp_path, tied=True, finetune_step_start=0.5).finetune_schedule()) == (0.5, 0.05, 2)


def test_bad_images_are_refused(digits, tmp_path):
    train_images, valid_images, _ = digits
    with pytest.raises(ValueError, match="uint8"):
        train(train_images.float(), valid_images, config(tmp_path), num_categories=17)
    with pytest.raises(ValueError, match="valid images"):
        train(train_images, valid_images[:, :, :4], config(tmp_path), num_categories=17)


@pytest.mark.parametrize("latents", ["pixels", "mae"])
def test_the_recipe_runs_on_small_rgb_images_with_the_teacher_sized_from_them(latents, tmp_path):
    # CIFAR-shaped in miniature: 3 channels, 8×8, the colour of each 4×4 patch drawn from a few kinds
    generator = torch.Generator().manual_seed(2)
    kinds = torch.randint(0, 3, (160, 1, 2, 2), generator=generator)
    colours = torch.tensor([[2, 9, 14], [13, 3, 6], [7, 7, 1]])[kinds].permute(0, 4, 2, 3, 1)[..., 0]   # [N, 3, 2, 2]
    images = colours.repeat_interleave(4, 2).repeat_interleave(4, 3)
    images = (images + torch.randint(-1, 2, images.shape, generator=generator)).clamp(0, 16).to(torch.uint8)
    settings = ImageRecipeConfig(num_clusters=3, hidden_size=2, tied=True, latents=latents, teacher_epochs=1,
                                 models=("lvd", "em"), lvd_epochs=1, latent_epochs=1, finetune_epochs=1,
                                 kmeans_iterations=5, kmeans_restarts=1, progress=False,
                                 cache_dir=str(tmp_path / "teachers"))
    result = train(images[:120], images[120:], settings, num_categories=17)
    assert tuple(result.teacher.image_shape) == (3, 8, 8) and result.teacher.patch_size == 4
    assert result.models["lvd"].model.image_shape == (3, 8, 8)
    for trained in result.models.values():
        assert 0 < trained.valid_bpd < math.log2(17)
