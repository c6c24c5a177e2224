"""Latent variable distillation for images: the teacher protocol and the masked-autoencoder teacher, patch
features with context, distilled latents, the image model and the recipe."""
from .config import PRESETS, ImageRecipeConfig
from .distil import Latents, distil_latents, teacher_for
from .features import (CONTEXTS, PatchContext, PatchFeatures, encode_patches, feature_correlations, mst_context,
                       neighbour_context, no_context, patch_features)
from .latents import assign_latents, nearest_centroids
from .model import PatchImageModel
from .teacher import MAETeacher, TeacherConfig, TeacherHistory, sincos_positions
from .teachers import PixelTeacher, Teacher
from .training import default_teacher_cache, images_hash, teacher_key, train_teacher

__all__ = ["PRESETS", "ImageRecipeConfig", "Latents", "distil_latents", "teacher_for", "CONTEXTS", "PatchContext",
           "PatchFeatures", "encode_patches", "feature_correlations", "mst_context", "neighbour_context",
           "no_context", "patch_features", "assign_latents", "nearest_centroids", "PatchImageModel", "MAETeacher",
           "TeacherConfig", "TeacherHistory", "sincos_positions", "PixelTeacher", "Teacher",
           "default_teacher_cache", "images_hash", "teacher_key", "train_teacher"]
