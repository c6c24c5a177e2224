"""The image recipe resumes exactly after a kill in every stage, and recomputes nothing it had finished."""
from pathlib import Path

import pytest
import torch

from hmmlvd import em, pc
from hmmlvd.data import load_images
from hmmlvd.lvd.images import distil, training
from hmmlvd.lvd.images.recipe import ImageRecipeConfig, train
from tests.lvd.images.conftest import tiny_config


class Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def digits():
    images = load_images("digits", split="train").images
    return images[:160], images[160:200]


def settings(tmp_path, latents: str) -> ImageRecipeConfig:
    teacher = tiny_config(patch_size=4, epochs=2, batch_size=40) if latents == "mae" else None
    return ImageRecipeConfig(num_clusters=3, hidden_size=2, patch_size=4, latents=latents, teacher=teacher,
                             models=("lvd", "em", "hclt"), lvd_epochs=1, latent_epochs=1, finetune_epochs=2,
                             em_epochs=2, batch_size=64, kmeans_iterations=5, kmeans_restarts=1, progress=False,
                             cache_dir=str(tmp_path / "teachers"))


def parameters(model) -> dict[str, torch.Tensor]:
    circuit = getattr(model, "circuit", model)
    return {name: group.values for name, group in circuit.parameter_groups().items()}


def killing_fit(stage: str):
    """``em.fit`` that dies after the first epoch of ``stage`` (its checkpoint folder's name)."""
    real_fit = em.fit

    def fit(model, data, schedule, **options):
        if stage in Path(str(options.get("checkpoint_dir", ""))).parts:
            def die(epoch, history):
                raise Killed(stage)
            options["on_epoch_end"] = die
        return real_fit(model, data, schedule, **options)
    return fit


def dying(function, after: int = 0):
    """``function`` that raises :class:`Killed` on call number ``after + 1``."""
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            raise Killed(function.__name__)
        return function(*args, **kwargs)
    return wrapped


# (stage, latents, what to patch: (module, attribute, replacement builder), stages finished before the kill)
KILLS = [
    ("teacher training", "mae", (training, "_training_step", lambda f: dying(f, after=2)), []),
    ("feature extraction", "mae", (distil, "patch_features", dying), ["teacher"]),
    ("K-means", "pixels", (distil, "cluster_positions", dying), ["features"]),
    ("Lemma 1", "pixels", (pc, "fit_lvd", dying), ["features", "kmeans"]),
    ("latent step", "pixels", (pc, "fit_latent_distribution", dying), ["features", "kmeans", "lemma1"]),
    ("fine-tuning", "pixels", (em, "fit", lambda f: killing_fit("finetune")), ["features", "kmeans", "lemma1"]),
    ("EM baseline", "pixels", (em, "fit", lambda f: killing_fit("em")), ["features", "kmeans", "lemma1", "lvd"]),
    ("HCLT baseline", "pixels", (em, "fit", lambda f: killing_fit("hclt")), ["features", "kmeans", "lemma1", "lvd",
                                                                              "em"]),
]
def stage_fit(stage: str):
    """Whether an ``em.fit`` call belongs to ``stage`` (by its checkpoint folder)."""
    return lambda options: stage in Path(str(options.get("checkpoint_dir", ""))).parts


# what each finished stage calls, and which of those calls are its own
COUNTED = {"teacher": (training, "_training_step", None), "features": (distil, "patch_features", None),
           "kmeans": (distil, "cluster_positions", None), "lemma1": (pc, "fit_lvd", None),
           "lvd": (em, "fit", stage_fit("finetune")), "em": (em, "fit", stage_fit("em"))}


@pytest.mark.parametrize("stage, latents, kill, finished", KILLS, ids=[kill[0] for kill in KILLS])
def test_a_kill_in_every_stage_resumes_to_the_uninterrupted_result(stage, latents, kill, finished, digits, tmp_path,
                                                                  monkeypatch):
    train_images, valid_images = digits
    reference = train(train_images, valid_images, settings(tmp_path / "reference", latents), num_categories=17,
                      directory=tmp_path / "reference")
    config = settings(tmp_path / "run", latents)                  # its own teacher cache: nothing is shared
    module, name, build = kill
    original = getattr(module, name)
    monkeypatch.setattr(module, name, build(original))
    with pytest.raises(Killed):
        train(train_images, valid_images, config, num_categories=17, directory=tmp_path / "run")
    monkeypatch.setattr(module, name, original)
    calls = {}
    for key in finished:
        counted_module, counted_name, belongs = COUNTED[key]
        counted = getattr(counted_module, counted_name)

        def counting(*args, _key=key, _function=counted, _belongs=belongs, **kwargs):
            if _belongs is None or _belongs(kwargs):
                calls[_key] = calls.get(_key, 0) + 1
            return _function(*args, **kwargs)
        monkeypatch.setattr(counted_module, counted_name, counting)
    resumed = train(train_images, valid_images, config, num_categories=17, directory=tmp_path / "run", resume=True)
    assert calls == {}, f"finished stages were recomputed after a kill in {stage}: {calls}"
    assert torch.equal(resumed.assignments, reference.assignments)
    for model_name, trained in reference.models.items():
        again = resumed.models[model_name]
        assert again.valid_curve == trained.valid_curve and again.valid_bpd == trained.valid_bpd
        for group, values in parameters(trained.model).items():
            assert torch.equal(parameters(again.model)[group], values), (model_name, group)


def test_a_damaged_stage_file_is_refused_not_trusted(digits, tmp_path):
    train_images, valid_images = digits
    config = settings(tmp_path, "pixels")
    train(train_images, valid_images, config, num_categories=17, directory=tmp_path / "run")
    stored, metadata = distil.load_tensors(tmp_path / "run" / distil.LATENTS_FILE)
    stored["assignments"][0, 0] = 7                                              # not a cluster id for k = 3
    distil.save_tensors(tmp_path / "run" / distil.LATENTS_FILE, stored, metadata)
    with pytest.raises(ValueError, match="latents file is damaged"):
        train(train_images, valid_images, config, num_categories=17, directory=tmp_path / "run", resume=True)
