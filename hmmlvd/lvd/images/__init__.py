"""Latent variable distillation for images: the masked-autoencoder teacher, patch features with context, and
per-patch latent assignments."""
from .features import (CONTEXTS, PatchContext, PatchFeatures, encode_patches, feature_correlations, mst_context,
                       neighbour_context, no_context, patch_features)
from .latents import assign_latents, nearest_centroids
from .teacher import Teacher, TeacherConfig, TeacherHistory, sincos_positions
from .training import default_teacher_cache, images_hash, teacher_key, train_teacher

__all__ = ["CONTEXTS", "PatchContext", "PatchFeatures", "encode_patches", "feature_correlations", "mst_context",
           "neighbour_context", "no_context", "patch_features", "assign_latents", "nearest_centroids", "Teacher",
           "TeacherConfig", "TeacherHistory", "sincos_positions", "default_teacher_cache", "images_hash",
           "teacher_key", "train_teacher"]
