"""``hmmlvd image`` on bad input: a teacher that is not a ViT-MAE, missing or corrupt dataset folders, and the options
of ``eval`` and ``sample`` that pick what to read. Runs are tiny: MNIST-format files of 28×28 images written in
``tmp_path`` and circuits on pixel latents (no teacher), trained in a couple of seconds."""
import gzip
import json
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from hmmlvd.data import load_images
from hmmlvd.lvd.images import MAETeacher
from hmmlvd.lvd.images.model import PatchImageModel
from tests.lvd.images.conftest import tiny_config

SMALL = ["--preset", "quick", "--train-size", "0", "--valid-size", "10", "--clusters", "2", "--hidden-size", "2",
         "--lvd-epochs", "1", "--latent-epochs", "1", "--finetune-epochs", "1", "--em-epochs", "1",
         "--batch-size", "64", "--kmeans-restarts", "1", "--no-progress"]
DIGITS = ["--dataset", "digits", "--train-size", "100", "--valid-size", "50", "--clusters", "2", "--hidden-size", "2",
          "--no-progress"]


def idx_bytes(magic, array):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape) + array.tobytes()


def write_mnist(folder, side=28):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 40), ("t10k", 12)):
        images = (rng.integers(0, 4, (count, side, side)) * 80).astype(np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(0x803, images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(0x801, labels)))
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with the LVD circuit and both baselines on MNIST-format files: (run folder, data folder)."""
    root = tmp_path_factory.mktemp("image-errors")
    data = write_mnist(root / "data")
    from hmmlvd.cli import main
    out = root / "run"
    assert main(["image", "train", "--dataset", "mnist", "--data-dir", str(data), "--latents", "pixels",
                 "--compare-em", *SMALL, "--out", str(out)]) == 0
    return out, data


@pytest.mark.parametrize("kind, message", [
    ("empty", "is not a saved ViT-MAE folder: config.json is missing"),
    ("absent", "is not a saved ViT-MAE folder: config.json is missing"),
    ("patch circuit", "model; the teacher must be a ViT-MAE"),          # "holds a 'patch_circuit' model; ..."
    ("broken json", "config.json is not valid JSON"),
    ("config without weights", "cannot load the ViT-MAE in"),
])
def test_a_teacher_that_is_not_a_vit_mae_is_refused_by_name(kind, message, run, tmp_path, hmmlvd):
    folder = tmp_path / "teacher"
    if kind == "patch circuit":
        folder = run[0] / "lvd"
    elif kind != "absent":
        folder.mkdir()
    if kind == "broken json":
        (folder / "config.json").write_text("{not json")
    elif kind == "config without weights":
        (folder / "config.json").write_text('{"model_type": "vit_mae"}')
    code, _, err = hmmlvd("image", "train", *DIGITS, "--teacher", folder, "--out", tmp_path / "out")
    assert code == 2 and message in err and str(folder) in err, err
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_vit_mae_for_other_images_is_refused_naming_the_teacher(tmp_path, hmmlvd):
    folder = tmp_path / "mae16"
    MAETeacher.initialise(tiny_config(image_size=16, patch_size=4), (0.5,), (0.25,)).save_pretrained(folder)
    code, _, err = hmmlvd("image", "train", *DIGITS, "--patch-size", "4", "--teacher", folder,
                          "--out", tmp_path / "out")
    assert code == 2 and "16" in err, err
    assert str(folder) in err, err


@pytest.mark.parametrize("damage, message", [
    ("empty folder", "missing train-images-idx3-ubyte, train-labels-idx1-ubyte"),
    ("no folder", "missing train-images-idx3-ubyte, train-labels-idx1-ubyte"),
    ("truncated gzip", "train-images-idx3-ubyte.gz: not a readable gzip file, corrupt or truncated"),
    ("truncated IDX header", r"train-images-idx3-ubyte.gz: truncated IDX header (10 bytes, need 16)"),
    ("32x32 images", "train-images-idx3-ubyte.gz: mnist images must be 28x28, found 32x32"),
])
def test_a_missing_or_corrupt_dataset_folder_is_refused_by_name(damage, message, tmp_path, hmmlvd):
    folder = tmp_path / "data"
    if damage == "32x32 images":
        write_mnist(folder, side=32)
    elif damage != "no folder":
        folder.mkdir()
    images = folder / "train-images-idx3-ubyte.gz"
    if damage in ("truncated gzip", "truncated IDX header"):
        write_mnist(folder)
        complete = idx_bytes(0x803, np.zeros((3, 28, 28), np.uint8))
        images.write_bytes(gzip.compress(complete)[:-40] if damage == "truncated gzip"
                           else gzip.compress(complete[:10]))
    code, _, err = hmmlvd("image", "train", "--dataset", "mnist", "--data-dir", folder, "--latents", "pixels",
                          *SMALL, "--out", tmp_path / "out")
    assert code == 2 and message in err and str(folder) in err, err
    assert "--data-dir" in err or "fresh, complete copy" in err                     # how to fix it


def bpd_line(out: str, model: str) -> tuple[float, int]:
    """(bpd, image count) of ``model``'s line of ``hmmlvd image eval``."""
    line = next(line for line in out.splitlines() if line.split()[0] == model)
    return float(line.split()[3]), int(line.split("(")[1].split()[0])


def test_eval_on_the_valid_split_reproduces_the_reported_valid_bpd(run, hmmlvd):
    out, _ = run
    report = json.loads((out / "results.json").read_text())
    code, printed, _ = hmmlvd("image", "eval", out, "--split", "valid")
    assert code == 0
    for row in report["models"]:
        bpd, count = bpd_line(printed, row["model"])
        assert count == 10 and bpd == pytest.approx(row["valid_bpd"], abs=1e-4)


def test_eval_max_images_scores_the_first_images_only(run, hmmlvd):
    out, data = run
    code, printed, _ = hmmlvd("image", "eval", out, "--max-images", "5")
    assert code == 0
    first = load_images("mnist", data, "test").images[:5]
    expected = PatchImageModel.from_pretrained(out / "lvd").bits_per_dimension(first)     # independently
    bpd, count = bpd_line(printed, "lvd")
    assert count == 5 and bpd == pytest.approx(expected, abs=1e-4)
    whole = PatchImageModel.from_pretrained(out / "lvd").bits_per_dimension(load_images("mnist", data, "test").images)
    assert abs(expected - whole) > 5 * 1e-4             # 5 images are not all 12, at the 4 printed decimals
    for bad in ("0", "-3"):
        code, _, err = hmmlvd("image", "eval", out, "--max-images", bad)
        assert code == 2 and f"--max-images must be positive, got {bad}" in err


def test_eval_data_dir_overrides_the_folder_recorded_at_training(run, tmp_path, hmmlvd):
    out, data = run
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    report = json.loads((copy / "results.json").read_text())
    report["data_dir"] = str(tmp_path / "gone")                       # the recorded folder no longer exists
    (copy / "results.json").write_text(json.dumps(report))
    code, _, err = hmmlvd("image", "eval", copy)
    assert code == 2 and str(tmp_path / "gone") in err and "--data-dir" in err, err
    code, printed, _ = hmmlvd("image", "eval", copy, "--data-dir", moved)
    assert code == 0
    for row in report["models"]:
        assert bpd_line(printed, row["model"])[0] == pytest.approx(row["test_bpd"], abs=1e-4)


def test_sample_model_name_em_draws_from_the_em_circuit(run, tmp_path, hmmlvd):
    out, _ = run
    pictures = {}
    for name in ("lvd", "em"):
        path = tmp_path / f"{name}.png"
        code, printed, _ = hmmlvd("image", "sample", out, "--model-name", name, "--out", path, "--num-samples", "3",
                                  "--num-images", "1")
        assert code == 0 and str(path) in printed
        with Image.open(path) as picture:
            assert picture.format == "PNG"
            pictures[name] = torch.from_numpy(np.asarray(picture.convert("L"), dtype=np.int64))
    assert pictures["lvd"].shape == pictures["em"].shape
    assert not torch.equal(pictures["lvd"], pictures["em"])                 # two circuits, two pictures


def test_sample_model_name_em_without_the_baseline_says_how_to_get_it(run, tmp_path, hmmlvd):
    out, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "em")
    report = json.loads((copy / "results.json").read_text())
    report["models"] = [row for row in report["models"] if row["model"] != "em"]
    (copy / "results.json").write_text(json.dumps(report))
    code, _, err = hmmlvd("image", "sample", copy, "--model-name", "em", "--out", tmp_path / "x.png")
    assert code == 2 and "--compare-em" in err, err
