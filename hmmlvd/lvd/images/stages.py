"""The training stages of the image recipe, each one resumable: LVD's three (Lemma 1 from the distilled patch
states, the latent-distribution step, fine-tuning by EM on x) and the baselines (the same patch circuit by EM
alone, a pixel HCLT). A finished stage leaves its model and its record in the run's directory, and a resumed run
starts after the last one; within a stage EM resumes from its own checkpoints."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ... import em, pc
from ...distributed import default_device, is_main_process
from ...io import atomic_write_json, read_json
from .config import ImageRecipeConfig
from .model import PatchImageModel

STAGES_DIR, CHECKPOINTS_DIR = "stages", "checkpoints"
LVD_STAGES = ("lvd_fit", "latent", "finetune")
FINAL_STAGES = {"finetune": "lvd", "em": "em", "hclt": "hclt"}    # a model's last stage keeps it in its own folder


@dataclass
class TrainedModel:
    """One trained model of the comparison and what it measured (bits per dimension: −log2 p(x) / (C·H·W))."""

    name: str
    model: PatchImageModel | pc.Circuit
    num_parameters: int
    valid_bpd: float
    test_bpd: float | None
    valid_curve: list[float]                   # valid bpd after each stage or epoch, in order
    seconds: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict:
        return {"model": self.name, "num_parameters": self.num_parameters, "valid_bpd": self.valid_bpd,
                "test_bpd": self.test_bpd, "valid_curve": self.valid_curve, "seconds": self.seconds}


def bits_per_dimension(log_likelihood: float, num_dimensions: int) -> float:
    """``−log2 p(x) / num_dimensions`` of a mean log-likelihood in nats."""
    return -log_likelihood / (num_dimensions * math.log(2))


def model_bits_per_dimension(model: PatchImageModel | pc.Circuit, images: Tensor) -> float:
    """Mean bits per dimension of uint8 ``images`` [N, C, H, W] under a patch-image model or a pixel circuit
    (sharded across the processes of a ``torch.distributed`` run)."""
    if isinstance(model, PatchImageModel):
        return model.bits_per_dimension(images)
    pixels = images.flatten(1).long()
    return bits_per_dimension(em.mean_log_likelihood(model, pixels, 1024, model.device), pixels.shape[1])


@dataclass
class Run:
    """What every stage of one recipe run shares: the config, the run's directory (None: keep nothing), whether
    to resume, the evaluation images and the log."""

    config: ImageRecipeConfig
    directory: Path | None
    resume: bool
    valid_images: Tensor
    test_images: Tensor | None
    log: Callable[[str], None]

    @property
    def device(self) -> torch.device:
        return default_device(self.config.device)

    def fit_options(self, stage: str) -> dict:
        """``em.fit`` options of ``stage``: the config's EM settings and the stage's checkpoints."""
        checkpoints = self.directory / CHECKPOINTS_DIR / stage if self.directory is not None else None
        return dict(batch_size=self.config.batch_size, pseudocount=self.config.pseudocount, seed=self.config.seed,
                    progress=self.config.progress, resume=self.resume and checkpoints is not None,
                    checkpoint_dir=checkpoints, device=self.device)

    def evaluate(self, model) -> tuple[float, float | None]:
        valid = model_bits_per_dimension(model, self.valid_images)
        test = model_bits_per_dimension(model, self.test_images) if self.test_images is not None else None
        return valid, test

    def finished(self, stage: str, load: Callable[[Path], object]):
        """``(model, record)`` of ``stage`` when it finished in an earlier run and we resume, else None."""
        if self.directory is None or not self.resume:
            return None
        record_path = self.directory / STAGES_DIR / f"{stage}.json"
        if not record_path.is_file():
            return None
        record = read_json(record_path)
        return load(self._model_folder(stage)), record

    def keep(self, stage: str, model, record: dict) -> None:
        """Save ``stage``'s model, then its record (the record marks the stage finished); rank 0 alone writes."""
        if self.directory is None or not is_main_process():
            return
        model.save_pretrained(self._model_folder(stage))
        atomic_write_json(self.directory / STAGES_DIR / f"{stage}.json", record)

    def _model_folder(self, stage: str) -> Path:
        """``directory/<model>`` for a model's last stage (where it is read from later), else ``stages/<stage>``."""
        return self.directory / FINAL_STAGES[stage] if stage in FINAL_STAGES else self.directory / STAGES_DIR / stage

    def baseline(self, name: str, model: PatchImageModel, x_train: Tensor, x_valid: Tensor) -> TrainedModel:
        """``model`` (a patch circuit from random parameters) trained by EM alone with the baselines' budget."""
        done = self.finished(name, lambda folder: PatchImageModel.from_pretrained(folder, device=self.device))
        if done is not None:
            model, record = done
        else:
            start = time.perf_counter()
            history = em.fit(model.circuit, x_train, self.config.schedule(self.config.baseline_epochs),
                             valid=x_valid, **self.fit_options(name))
            record = {"curve": [bits_per_dimension(ll, model.num_dimensions) for ll in history.valid_log_likelihood],
                      "seconds": {"em": time.perf_counter() - start}}
            self.keep(name, model, record)
        return TrainedModel(name, model, model.circuit.num_parameters, *self.evaluate(model), record["curve"],
                            record["seconds"])


def train_lvd(run: Run, model: PatchImageModel, x_train: Tensor, assignments: Tensor,
              x_valid: Tensor) -> TrainedModel:
    """LVD's stages on ``model`` from latents ``assignments`` [N, P]: the patch models' start
    (``config.patch_states``) and Lemma 1, then the latent-distribution step, then EM on x. The valid bpd after
    every stage (and fine-tuning epoch) and the seconds of each; a resumed run starts after the last stage kept."""
    config, circuit = run.config, model.circuit
    curve, seconds, first = [], {}, 0
    for index in reversed(range(len(LVD_STAGES))):
        done = run.finished(LVD_STAGES[index], lambda folder: PatchImageModel.from_pretrained(folder,
                                                                                              device=run.device))
        if done is not None:
            circuit.set_parameters({name: group.values for name, group in
                                    done[0].circuit.parameter_groups().items()})
            curve, seconds, first = done[1]["curve"], done[1]["seconds"], index + 1
            break
    for stage in LVD_STAGES[first:]:
        start = time.perf_counter()
        if stage == "lvd_fit":
            if config.patch_states == "bins":
                pc.fit_patch_states(circuit, x_train, assignments, pseudocount=config.pseudocount)
            if config.lvd_epochs:
                pc.fit_lvd(circuit, x_train, assignments, config.schedule(config.lvd_epochs),
                           **run.fit_options("lvd_fit"))
                curve.append(model_bits_per_dimension(model, run.valid_images))
                run.log(f"[lvd] Lemma 1 fit: valid {curve[-1]:.4f} bpd ({time.perf_counter() - start:.0f} s)")
        elif stage == "latent" and config.latent_epochs:
            pc.fit_latent_distribution(circuit, x_train, config.schedule(config.latent_epochs),
                                       **run.fit_options("latent"))
            curve.append(model_bits_per_dimension(model, run.valid_images))
            run.log(f"[lvd] latent distribution: valid {curve[-1]:.4f} bpd ({time.perf_counter() - start:.0f} s)")
        elif stage == "finetune" and config.finetune_epochs:
            history = em.fit(circuit, x_train, config.finetune_schedule(), valid=x_valid,
                             **run.fit_options("finetune"))
            curve += [bits_per_dimension(ll, model.num_dimensions) for ll in history.valid_log_likelihood]
        seconds[stage] = time.perf_counter() - start
        run.keep(stage, model, {"curve": curve, "seconds": seconds})
    return TrainedModel("lvd", model, circuit.num_parameters, *run.evaluate(model), curve, seconds)


def train_pixel_hclt(run: Run, train_images: Tensor, valid_images: Tensor, num_latents: int,
                     num_categories: int) -> TrainedModel:
    """A pixel-level HCLT with ``num_latents`` hidden states, trained by :func:`pc.train_hclt` (one setting, no
    search) with the baselines' budget; the best valid epoch is kept."""
    done = run.finished("hclt", lambda folder: pc.Circuit.from_pretrained(folder, device=run.device))
    if done is not None:
        circuit, record = done
    else:
        config = run.config
        recipe = pc.HCLTRecipe(hidden_sizes=(num_latents,), grid=(pc.Regularization(config.pseudocount),),
                               minibatch_epochs=config.baseline_epochs, fullbatch_epochs=0,
                               batch_size=config.batch_size, step_start=config.step_start, step_end=config.step_end,
                               mi_bins=8, time_budget=None, seed=config.seed, device=str(run.device))
        start = time.perf_counter()
        checkpoints = run.directory / CHECKPOINTS_DIR / "hclt" if run.directory is not None else None
        trained = pc.train_hclt(train_images.flatten(1), valid_images.flatten(1), recipe,
                                num_categories=num_categories, directory=checkpoints,
                                resume=run.resume and checkpoints is not None, progress=config.progress)
        circuit, num_pixels = trained.circuit, train_images[0].numel()
        record = {"curve": [bits_per_dimension(ll, num_pixels) for ll in trained.trials[0].valid_curves["mini-batch"]],
                  "seconds": {"em": time.perf_counter() - start, "num_latents": num_latents}}
        run.keep("hclt", circuit, record)
    return TrainedModel("hclt", circuit, circuit.num_parameters, *run.evaluate(circuit), record["curve"],
                        record["seconds"])
