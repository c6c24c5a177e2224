"""``hmmlvd.load(path)``: open any artefact folder as the model its ``config.json`` names.

A model type joins by one line in :data:`MODEL_TYPES`: its class needs
``from_pretrained(directory, device=...)``.
"""
from __future__ import annotations

import os

import torch

from .hmm import HMM
from .io import CONFIG_FILE, read_model_type
from .lm import LanguageModel
from .lvd.images.model import LEGACY_IMAGE_FILE, PatchImageModel
from .lvd.images.teacher import MAETeacher
from .pc import Circuit, PatchCircuit

MODEL_TYPES: dict[str, type] = {
    "hmm": HMM,
    "language_model": LanguageModel,
    "circuit": Circuit,
    "patch_circuit": PatchCircuit,
    "patch_image_model": PatchImageModel,
    "vit_mae": MAETeacher,                       # a ViT-MAE folder, as the image recipe saves its teacher
}


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """The model saved in the folder ``path`` (an :class:`HMM`, :class:`LanguageModel`, :class:`pc.Circuit`, ...),
    chosen by the ``model_type`` of its ``config.json`` and loaded onto ``device``."""
    model_type, _ = read_model_type(path)
    if model_type == "patch_circuit" and os.path.isfile(os.path.join(path, LEGACY_IMAGE_FILE)):
        model_type = "patch_image_model"      # an image model written by hmmlvd 0.1
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{os.fspath(path)}/{CONFIG_FILE} has model_type {model_type!r}, which this hmmlvd cannot "
                         f"open; known model types: {sorted(MODEL_TYPES)}")
    return MODEL_TYPES[model_type].from_pretrained(path, device=device)
