"""``hmmlvd image train | eval | sample`` on sklearn's digits with a tiny teacher."""
import json
import math
import re

import pytest
from PIL import Image

from hmmlvd.cli import main

TINY = ["--dataset", "digits", "--preset", "quick", "--train-size", "200", "--valid-size", "100",
        "--clusters", "3", "--hidden-size", "2", "--teacher-epochs", "1", "--lvd-epochs", "1", "--latent-epochs", "1",
        "--finetune-epochs", "1", "--batch-size", "64", "--latents", "mae", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("image") / "run"
    cache = str(out.parent / "cache")
    assert main(["image", "train", *TINY, "--compare-em", "--cache-dir", cache, "--out", str(out)]) == 0
    return out


def test_train_writes_three_models_and_results(trained, capsys):
    report = json.loads((trained / "results.json").read_text())
    assert [row["model"] for row in report["models"]] == ["lvd", "em", "hclt"]
    # better than the uniform model over the 17 grey levels of the digits (log2 17 = 4.09 bits per pixel)
    assert all(0 < row["test_bpd"] < math.log2(17) for row in report["models"]), report["models"]
    for name in ("lvd", "em", "hclt"):
        assert (trained / name / "config.json").is_file()
    # the quick preset's tied circuit and equal-time baseline budget apply where no option overrides them
    assert report["config"]["tied"] is True and report["config"]["em_epochs"] == 6
    assert report["config"]["kmeans_restarts"] == 5
    assert [len(row["valid_curve"]) for row in report["models"]] == [3, 6, 6]


def test_eval_reproduces_the_reported_test_bpd(trained, capsys):
    report = json.loads((trained / "results.json").read_text())
    assert main(["image", "eval", str(trained)]) == 0
    printed = {line.split()[0]: float(line.split()[3]) for line in capsys.readouterr().out.splitlines()}
    for row in report["models"]:
        assert printed[row["model"]] == pytest.approx(row["test_bpd"], abs=1e-4)


def test_sample_writes_a_png(trained, tmp_path):
    path = tmp_path / "grid.png"
    assert main(["image", "sample", str(trained), "--out", str(path), "--num-samples", "4", "--num-images", "2",
                 "--mask", "centre"]) == 0
    with Image.open(path) as picture:
        # sample_grid: max(4 samples, 2 + 3 inpaintings) = 5 columns of 0.9 in, 1 + 2 rows of 0.95 in, at 120 dpi
        assert picture.format == "PNG" and picture.size == (round(5 * 0.9 * 120), round(3 * 0.95 * 120))


@pytest.mark.parametrize("argv, message", [
    (["image", "train", "--dataset", "digits", "--out", "x", "--clusters", "0"], "--clusters must be positive"),
    (["image", "train", "--dataset", "digits", "--out", "x", "--valid-size", "-1"], "valid-size"),
    (["image", "eval", "/nonexistent"], "results.json"),
    (["image", "train", "--dataset", "digits", "--out", "x", "--em-epochs", "0"], "--em-epochs must be positive"),
    (["image", "train", "--dataset", "digits", "--out", "x", "--finetune-step", "0"],
     r"--finetune-step must be in \(0, 1\], got 0.0"),
    (["image", "train", "--dataset", "digits", "--out", "x", "--kmeans-restarts", "0"],
     "--kmeans-restarts must be positive"),
])
def test_bad_values_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_finetune_step_reaches_the_recipe():
    from hmmlvd.cli import build_parser
    from hmmlvd.cli.image import recipe_config

    def parsed(*flags):
        return recipe_config(build_parser().parse_args(["image", "train", "--out", "x", *flags]))

    assert parsed("--finetune-step", "0.1").finetune_schedule().start == 0.1
    assert parsed().finetune_schedule().start == 0.3                        # tied presets: the recipe's default


@pytest.mark.parametrize("flag, value", [("--latents", "vqvae"), ("--patch-states", "kmeans")])
def test_an_unknown_choice_is_refused_by_name(flag, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["image", "train", "--dataset", "digits", "--out", "x", flag, value])
    assert stopped.value.code == 2 and f"invalid choice: '{value}'" in capsys.readouterr().err


def test_train_resume_from_the_command_line_after_a_kill(tmp_path, monkeypatch):
    from hmmlvd import em

    arguments = ["image", "train", *TINY, "--latents", "pixels", "--compare-em", "--em-epochs", "2",
                 "--cache-dir", str(tmp_path / "cache")]
    assert main([*arguments, "--out", str(tmp_path / "whole")]) == 0
    real_fit = em.fit

    def dies_in_the_em_baseline(model, data, schedule, **options):
        if str(options.get("checkpoint_dir", "")).endswith("em"):
            raise KeyboardInterrupt
        return real_fit(model, data, schedule, **options)

    monkeypatch.setattr(em, "fit", dies_in_the_em_baseline)
    with pytest.raises(KeyboardInterrupt):
        main([*arguments, "--out", str(tmp_path / "killed")])
    assert not (tmp_path / "killed" / "results.json").exists()
    monkeypatch.setattr(em, "fit", real_fit)
    assert main([*arguments, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())["models"]
    resumed = json.loads((tmp_path / "killed" / "results.json").read_text())["models"]
    for before, after in zip(whole, resumed):
        assert before["model"] == after["model"] and before["valid_curve"] == after["valid_curve"]
        assert before["test_bpd"] == after["test_bpd"]
