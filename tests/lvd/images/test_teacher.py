import json
import math

import pytest
import torch

from hmmlvd.lvd.images import MAETeacher, TeacherConfig, sincos_positions, train_teacher
from hmmlvd.lvd.images import training

from .conftest import random_images, tiny_config


def constant_images(count: int, seed: int = 0) -> torch.Tensor:
    """Each image one random grey level everywhere, so any visible patch predicts every masked one."""
    levels = torch.randint(0, 256, (count, 1, 1, 1), generator=torch.Generator().manual_seed(seed))
    return levels.expand(count, 1, 8, 8).to(torch.uint8).contiguous()


def states_equal(first: MAETeacher, second: MAETeacher) -> bool:
    a, b = first.model.state_dict(), second.model.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_tiny_mae_loss_falls(tmp_path):
    config = tiny_config(epochs=4, batch_size=8, learning_rate=1e-2)
    teacher = train_teacher(constant_images(256), config, cache_dir=tmp_path, progress=False)
    losses = teacher.history.step_losses
    assert len(losses) == 4 * 32 and len(teacher.history.epoch_losses) == 4
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert teacher.history.epoch_losses[-1] < teacher.history.epoch_losses[0]


def test_masked_fraction_is_drawn_in_range_at_every_step(tmp_path):
    # 16 patches: the fractions in [0.1, 0.9] are 2/16 .. 14/16; the recorded fraction is ViT-MAE's own mask.
    teacher = train_teacher(random_images(160), tiny_config(epochs=4, batch_size=4), cache_dir=tmp_path,
                            progress=False)
    ratios = teacher.history.mask_ratios
    assert len(ratios) == 160
    assert all(0.1 <= r <= 0.9 for r in ratios)
    assert {round(r * 16) for r in ratios} == set(range(2, 15))       # every allowed count occurs in 160 draws
    assert tiny_config().masked_counts == (2, 14)
    assert TeacherConfig(image_size=28, patch_size=4).masked_counts == (5, 44)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, monkeypatch):
    images, config = random_images(48), tiny_config(epochs=2)      # 3 steps per epoch, 6 in all
    straight = train_teacher(images, config, cache_dir=tmp_path / "straight", progress=False)

    real_step, calls = training._training_step, []

    def crash_at_fifth_step(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(training, "_training_step", crash_at_fifth_step)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(images, config, cache_dir=tmp_path / "resumed", progress=False, checkpoint_every=2)
    monkeypatch.setattr(training, "_training_step", real_step)
    folder = tmp_path / "resumed" / training.teacher_key(config, images)
    assert (folder / training.CHECKPOINT_FILE).is_file() and not (folder / training.FINAL_FOLDER).exists()

    counted = []
    monkeypatch.setattr(training, "_training_step", lambda *args: counted.append(1) or real_step(*args))
    resumed = train_teacher(images, config, cache_dir=tmp_path / "resumed", progress=False, checkpoint_every=2)
    assert len(counted) == 2                                        # steps 5 and 6 only
    assert states_equal(straight, resumed)
    assert resumed.history.step_losses == straight.history.step_losses
    assert resumed.history.mask_ratios == straight.history.mask_ratios
    assert not (folder / training.CHECKPOINT_FILE).exists()


def test_cache_hit_returns_the_same_weights_without_training(tmp_path, monkeypatch):
    images, config = random_images(32), tiny_config(epochs=1)
    first = train_teacher(images, config, cache_dir=tmp_path, progress=False)

    def no_training(*args):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(training, "_training_step", no_training)
    second = train_teacher(images, config, cache_dir=tmp_path, progress=False)
    assert states_equal(first, second)
    assert second.config == config and second.history == first.history
    assert second.pixel_mean == pytest.approx(first.pixel_mean) and second.pixel_std == pytest.approx(first.pixel_std)
    with pytest.raises(AssertionError, match="cache hit"):         # other data or config: a new key
        train_teacher(random_images(32, seed=1), config, cache_dir=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="cache hit"):
        train_teacher(images, tiny_config(epochs=1, seed=1), cache_dir=tmp_path, progress=False)


def test_pixel_normalisation_uses_training_mean_and_std(tmp_path):
    images = random_images(32)
    teacher = train_teacher(images, tiny_config(epochs=1), cache_dir=tmp_path, progress=False)
    scaled = images.double() / 255
    assert teacher.pixel_mean[0] == pytest.approx(scaled.mean().item(), rel=1e-6)
    assert teacher.pixel_std[0] == pytest.approx(scaled.std().item(), rel=1e-6)
    normalised = teacher.normalize(images).double()
    assert normalised.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert normalised.std().item() == pytest.approx(1.0, abs=1e-5)


def test_from_pretrained_loads_any_saved_vit_mae_folder(tmp_path):
    from transformers import ViTMAEForPreTraining

    model = MAETeacher.initialise(tiny_config(), (0.5,), (0.5,)).model      # a plain ViTMAEForPreTraining
    assert type(model) is ViTMAEForPreTraining
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.25], "image_std": [0.5]}))
    teacher = MAETeacher.from_pretrained(tmp_path)
    assert teacher.config is None and teacher.history is None
    assert (teacher.pixel_mean, teacher.pixel_std) == ((0.25,), (0.5,))
    assert (teacher.num_patches, teacher.grid_size, teacher.feature_size) == (16, 4, 16)

    images = random_images(3)
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(0))
    model.config.mask_ratio = 0.75                                  # keeps int(16 · 0.25) = 4 patches
    with torch.no_grad():
        reference = model.vit((images.float() / 255 - 0.25) / 0.5, noise=noise).last_hidden_state[:, 1:]
    kept = noise.argsort(1)[:, :4]
    assert torch.allclose(teacher.encode(images, kept), reference, atol=1e-5)


def test_save_pretrained_round_trip_keeps_config_history_and_normalisation(tmp_path):
    images, config = random_images(32), tiny_config(epochs=1)
    teacher = train_teacher(images, config, cache_dir=tmp_path / "cache", progress=False)
    teacher.save_pretrained(tmp_path / "saved")
    loaded = MAETeacher.from_pretrained(tmp_path / "saved")
    assert states_equal(teacher, loaded)
    assert (loaded.config, loaded.history) == (config, teacher.history)
    visible = torch.tensor([[5, 0, 15]]).expand(4, 3)
    assert torch.equal(teacher.encode(images[:4], visible), loaded.encode(images[:4], visible))


def test_bad_config_and_inputs_raise_clear_errors(tmp_path, tiny_teacher):
    with pytest.raises(ValueError, match="multiple of patch_size"):
        TeacherConfig(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="mask_ratio_range"):
        TeacherConfig(mask_ratio_range=(0.9, 0.1))
    with pytest.raises(ValueError, match="positive integers"):
        TeacherConfig(epochs=0)
    with pytest.raises(ValueError, match="head counts"):
        TeacherConfig(hidden_size=24, num_heads=5)
    with pytest.raises(ValueError, match="multiples of 4"):
        TeacherConfig(hidden_size=30, num_heads=3)
    with pytest.raises(ValueError, match="no number of masked patches"):
        TeacherConfig(image_size=4, patch_size=2, mask_ratio_range=(0.3, 0.45))
    with pytest.raises(ValueError, match="uint8"):
        train_teacher(random_images(8).float(), tiny_config(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\[N, 1, 8, 8\]"):
        train_teacher(random_images(8, size=12), tiny_config(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        tiny_teacher.encode(random_images(2, size=12), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="distinct"):
        tiny_teacher.encode(random_images(2), torch.tensor([[1, 1], [2, 3]]))
    with pytest.raises(ValueError, match="0..15"):
        tiny_teacher.encode(random_images(2), torch.tensor([[1], [16]]))
    with pytest.raises(ValueError, match="config.json is missing"):
        MAETeacher.from_pretrained(tmp_path / "nothing")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="must be a ViT-MAE"):
        MAETeacher.from_pretrained(tmp_path / "bert")


def test_sincos_positions_follow_the_formula_and_tell_patches_apart():
    table = sincos_positions(3, 8)                                   # 9 patches, dims: row sin·2, cos·2, column ...
    assert table.shape == (10, 8) and not table[0].any()
    row, column = divmod(5, 3)                                       # patch 5 is at (1, 2)
    expected = [math.sin(row), math.sin(row / 100), math.cos(row), math.cos(row / 100),
                math.sin(column), math.sin(column / 100), math.cos(column), math.cos(column / 100)]
    assert table[1 + 5].tolist() == pytest.approx(expected, abs=1e-6)
    assert len({tuple(r) for r in table.tolist()}) == 10


def test_initialised_teacher_sees_positions_and_warns_about_zero_position_tables(tiny_teacher):
    from transformers import ViTMAEForPreTraining

    assert tiny_teacher.model.vit.embeddings.position_embeddings.abs().sum() > 0
    assert tiny_teacher.model.decoder.decoder_pos_embed.abs().sum() > 0
    flat = torch.full((1, 1, 8, 8), 100, dtype=torch.uint8)          # the same content in every patch
    first, second = (tiny_teacher.encode(flat, torch.tensor([[patch]]))[0, 0] for patch in (0, 5))
    assert (first - second).abs().max() > 1e-3
    model = ViTMAEForPreTraining(tiny_config().vit_mae_config())
    with torch.no_grad():
        model.vit.embeddings.position_embeddings.zero_()
    with pytest.warns(RuntimeWarning, match="position embeddings are all zero"):
        MAETeacher(model, (0.5,), (0.5,))
