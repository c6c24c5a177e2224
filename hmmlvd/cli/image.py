"""``hmmlvd image train | eval | sample``: patch circuits distilled from a masked autoencoder (paper Section 5)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data import IMAGE_DATASETS, load_images, train_valid_split
from ..distributed import is_main_process, process_group_from_env
from ..io import read_json
from ..loading import load
from ..lvd.images.config import LATENT_SOURCES, PATCH_STATES, PRESETS, ImageRecipeConfig
from ..lvd.images.features import CONTEXTS
from ..lvd.images.model import PatchImageModel
from ..lvd.images.pictures import MASKS, sample_grid
from ..lvd.images.recipe import RESULTS_FILE, model_bits_per_dimension, train


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("image", help="image patch circuits trained by latent variable distillation",
                                   description="Train, evaluate and sample patch circuits whose latents are "
                                               "distilled from a masked autoencoder (paper Section 5).")
    commands = parser.add_subparsers(dest="image_command", metavar="IMAGE_COMMAND", required=True)
    _add_train(commands)
    _add_eval(commands)
    _add_sample(commands)
    return parser


def _add_train(commands) -> None:
    parser = commands.add_parser(
        "train", help="LVD patch circuit (and, with --compare-em, both baselines) on an image dataset",
        description="Assign patch latents by K-means on the teacher's patch features (the patch values, or a "
                    "masked autoencoder's features with context, trained and cached), fit the patch circuit by "
                    "Lemma 1, then fine-tune it by mini-batch EM; "
                    "print test bits per dimension. Preset values apply unless an option is given explicitly.")
    parser.add_argument("--dataset", choices=IMAGE_DATASETS, default="fashion-mnist",
                        help="image dataset (default fashion-mnist)")
    parser.add_argument("--data-dir", help="folder with the dataset's files (default: its environment variable, "
                                           "then the Debian package for Fashion-MNIST)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (models, results.json)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full",
                        help="quick: the 15-minute CPU job (10k images); full: every training image (default)")
    parser.add_argument("--compare-em", action="store_true",
                        help="also train the same patch circuit from random parameters by EM alone, and a pixel "
                             "HCLT of comparable size, with the same EM budget")
    parser.add_argument("--train-size", type=int, help="use the first N training images (0 = all)")
    parser.add_argument("--valid-size", type=int, default=5000, help="last training images held out as valid")
    parser.add_argument("--patch-size", type=int, help="patch side in pixels (default 4 up to 32 px, 8 for 64 px)")
    parser.add_argument("--clusters", type=int, dest="num_clusters", help="latent categories k per patch")
    parser.add_argument("--hidden-size", type=int, help="hidden size of every patch HCLT (the paper: 16)")
    parser.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                        help="one set of k patch circuits shared by every patch (both presets: tied)")
    parser.add_argument("--context", choices=CONTEXTS, default="mst", help="patches visible when featurising")
    parser.add_argument("--latents", choices=LATENT_SOURCES,
                        help="what K-means clusters into the patch latents: pixels (the patch values; the default, "
                             "as they won on valid, see bench/RESULTS.md) or mae (a ViT-MAE's patch features with "
                             "context, the paper's recipe; the default when --teacher is given)")
    parser.add_argument("--teacher", help="a saved ViT-MAE folder to use instead of training one")
    parser.add_argument("--teacher-images", type=int, help="train the teacher on N training images (0 = all)")
    parser.add_argument("--teacher-epochs", type=int, help="teacher training epochs (default 6)")
    parser.add_argument("--kmeans-restarts", type=int,
                        help="K-means runs from different seeds, the best kept (default "
                             f"{ImageRecipeConfig.kmeans_restarts}, as the paper's code; the full preset: 1)")
    parser.add_argument("--kmeans-backend", choices=("auto", "torch"), default="auto",
                        help="auto: faiss in a single process when installed, torch otherwise; torch: always the "
                             "torch K-means (what every run under torchrun uses, so 1 and N processes agree)")
    parser.add_argument("--patch-states", choices=PATCH_STATES, default=ImageRecipeConfig.patch_states,
                        help="start of the Lemma 1 fit: bins (the patch models fitted in closed form on quantile "
                             "bins of the pixels as their hidden states; default) or random (random parameters)")
    parser.add_argument("--lvd-epochs", type=int, help="mini-batch EM epochs of the Lemma 1 fit")
    parser.add_argument("--latent-epochs", type=int, help="epochs of the latent-distribution step")
    parser.add_argument("--finetune-epochs", type=int, help="mini-batch EM epochs on x alone")
    parser.add_argument("--finetune-step", type=float,
                        help="the fine-tuning step size's start, annealed linearly to a tenth of it (default 0.3 "
                             "tied, 0.1 untied; 0.1 with more epochs gave the best large tied circuits)")
    parser.add_argument("--em-epochs", type=int, help="EM epochs of each baseline (quick: 6 against LVD's 3 + 1 + 5; "
                                                      "full: 3 against 3 + 1 + 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per EM update (default 256)")
    parser.add_argument("--pseudocount", type=float, default=ImageRecipeConfig.pseudocount,
                        help="EM M-step pseudocount, added per mini-batch (default %(default)s; circuits whose "
                             "distributions see few counts per batch want less: 0.01 for k = 128, H = 16 on all the "
                             "images)")
    parser.add_argument("--cache-dir", help="teacher cache (default $HMMLVD_CACHE/teachers or ~/.cache/hmmlvd)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT's EM checkpoints")
    parser.add_argument("--device", help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the teacher, K-means and circuit init (0)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run_train)


def _add_eval(commands) -> None:
    parser = commands.add_parser("eval", help="bits per dimension of a trained image model",
                                 description="Print the bits per dimension of the models in a folder written by "
                                             "'hmmlvd image train' on a split of its dataset.")
    parser.add_argument("model", type=Path, help="folder written by 'hmmlvd image train'")
    parser.add_argument("--split", choices=("valid", "test"), default="test",
                        help="split to score: valid (the training run's held-out images) or test (default)")
    parser.add_argument("--data-dir", help="dataset folder (default: the one recorded at training)")
    parser.add_argument("--max-images", type=int, help="evaluate the first N images only")
    parser.set_defaults(run=run_eval)


def _add_sample(commands) -> None:
    parser = commands.add_parser("sample", help="a PNG grid of samples and exact inpaintings",
                                 description="Write a PNG with unconditional samples of the LVD model and exact "
                                             "inpaintings of a hidden region of test images.")
    parser.add_argument("model", type=Path, help="folder written by 'hmmlvd image train'")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--model-name", choices=("lvd", "em"), default="lvd", help="which patch circuit")
    parser.add_argument("--num-samples", type=int, default=12, help="unconditional samples in the top row (12)")
    parser.add_argument("--num-images", type=int, default=4, help="test images to inpaint")
    parser.add_argument("--mask", choices=MASKS, default="bottom", help="region hidden before inpainting")
    parser.add_argument("--data-dir", help="dataset folder (default: the one recorded at training)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples (0)")
    parser.set_defaults(run=run_sample)


FLAGS = {"num_clusters": "clusters"}


def _positive(name: str, value: int | None, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        flag = FLAGS.get(name, name).replace("_", "-")
        raise ValueError(f"--{flag} must be {'>= 0' if allow_zero else 'positive'}, got {value}")


def recipe_config(args) -> ImageRecipeConfig:
    """The recipe configuration: the preset with the options given explicitly on top."""
    overrides = {}
    for name in {name for preset in PRESETS.values() for name in preset}:
        value = getattr(args, name, None)
        if value is not None:
            if not isinstance(value, bool):
                _positive(name, value, allow_zero=name in ("train_size", "teacher_images", "lvd_epochs",
                                                           "latent_epochs", "finetune_epochs"))
            overrides[name] = value or None if name in ("train_size", "teacher_images") else value
    if args.finetune_step is not None and not 0 < args.finetune_step <= 1:
        raise ValueError(f"--finetune-step must be in (0, 1], got {args.finetune_step}")
    models = ("lvd", "em", "hclt") if args.compare_em else ("lvd",)
    return ImageRecipeConfig.preset(
        args.preset, patch_size=args.patch_size, context=args.context, teacher_path=args.teacher,
        latents=args.latents or ("mae" if args.teacher else ImageRecipeConfig.latents),
        batch_size=args.batch_size, pseudocount=args.pseudocount, kmeans_backend=args.kmeans_backend,
        patch_states=args.patch_states, finetune_step_start=args.finetune_step, models=models, seed=args.seed,
        device=args.device, cache_dir=args.cache_dir, progress=not args.no_progress, **overrides)


def run_train(args) -> int:
    """Train alone, or under ``torchrun`` (one process per device; rank 0 prints and writes)."""
    with process_group_from_env():
        return _run_train(args)


def _say(line: str = "") -> None:
    if is_main_process():
        print(line, flush=True)


def _run_train(args) -> int:
    config = recipe_config(args)
    _positive("valid_size", args.valid_size)
    train_set, valid_set = train_valid_split(load_images(args.dataset, args.data_dir, "train"), args.valid_size)
    test_set = load_images(args.dataset, args.data_dir, "test")
    used = min(config.train_size or len(train_set), len(train_set))
    _say(f"{args.dataset}: {used} training, {len(valid_set)} valid, {len(test_set)} test images "
          f"{tuple(train_set.images.shape[1:])}")
    description = {"dataset": args.dataset, "data_dir": args.data_dir, "valid_size": args.valid_size,
                   "num_categories": train_set.num_categories, "train_images": used,
                   "config": {k: v for k, v in vars(config).items() if k != "teacher"}}
    result = train(train_set.images, valid_set.images, config, test_images=test_set.images,
                   num_categories=train_set.num_categories, directory=args.out, resume=args.resume,
                   log=_say, description=description)
    _say(f"{'model':>6} {'parameters':>12} {'valid bpd':>10} {'test bpd':>10}")
    for trained in result.models.values():
        _say(f"{trained.name:>6} {trained.num_parameters:12,d} {trained.valid_bpd:10.4f} {trained.test_bpd:10.4f}")
    return 0


def _trained_run(folder: Path) -> dict:
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"{folder} has no {RESULTS_FILE}: pass a folder written by 'hmmlvd image train'")
    return read_json(path)


def _split_images(report: dict, split: str, data_dir: str | None):
    data_dir = data_dir or report["data_dir"]
    if split == "test":
        return load_images(report["dataset"], data_dir, "test").images
    return train_valid_split(load_images(report["dataset"], data_dir, "train"), report["valid_size"])[1].images


def run_eval(args) -> int:
    report = _trained_run(args.model)
    _positive("max_images", args.max_images)
    images = _split_images(report, args.split, args.data_dir)[:args.max_images]
    for row in report["models"]:
        model = load(args.model / row["model"])
        print(f"{row['model']:>6} {args.split} bpd {model_bits_per_dimension(model, images):.4f} "
              f"({len(images)} images)")
    return 0


def run_sample(args) -> int:
    report = _trained_run(args.model)
    _positive("num_samples", args.num_samples)
    _positive("num_images", args.num_images)
    names = [row["model"] for row in report["models"]]
    if args.model_name not in names:
        raise ValueError(f"{args.model} has no {args.model_name!r} model (it holds {', '.join(names)}); train with "
                         "--compare-em for the EM baseline")
    model = load(args.model / args.model_name)
    if not isinstance(model, PatchImageModel):
        raise ValueError(f"{args.model / args.model_name} holds a {type(model).__name__}, not a patch image model")
    images = _split_images(report, "test", args.data_dir)[:args.num_images]
    path = sample_grid(model, images, args.out, num_samples=args.num_samples, mask=args.mask, seed=args.seed)
    print(f"wrote {path}")
    return 0
