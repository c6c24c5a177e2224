"""Latent variable distillation: suffix embeddings, per-position K-means (text and images), the closed-form
HMM init."""
from .kmeans import KMeansConfig, cluster_positions, kmeans, nearest_centroids, torch_kmeans
from .distill import DistillConfig, DistillStats, distill, select_windows
from .embeddings import EmbeddingCache, EmbeddingStats, default_cache_dir, embed_windows, stream_hash
from .encoder import SuffixEncoder, default_encoder
from .text import detokenize, suffix_texts

__all__ = ["KMeansConfig", "cluster_positions", "kmeans", "nearest_centroids", "torch_kmeans", "DistillConfig",
           "DistillStats", "distill", "select_windows", "EmbeddingCache", "EmbeddingStats", "default_cache_dir",
           "embed_windows", "stream_hash", "SuffixEncoder", "default_encoder", "detokenize", "suffix_texts"]
