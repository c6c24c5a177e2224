"""Corpora, vocabularies, windows, image and DEBD datasets, patches (stands alone: imports nothing else of
hmmlvd but io)."""
from .debd import DEBD_ENV, load_debd
from .images import (IMAGE_DATASETS, IMAGE_DIR_ENV, ImageSet, expected_files, image_dir, load_images,
                     train_valid_split)
from .patches import PatchGrid, default_patch_size, patchify, unpatchify
from .vocab import EOS_TOKEN, UNK_TOKEN, Vocab
from .wikitext import SPLITS, Corpus, encode_lines, read_lines, read_split, wikitext2
from .windows import MISSING, WindowSplits, chunk_windows, num_windows, windows

__all__ = ["DEBD_ENV", "load_debd", "IMAGE_DATASETS", "IMAGE_DIR_ENV", "ImageSet", "expected_files", "image_dir",
           "load_images", "train_valid_split", "PatchGrid", "default_patch_size", "patchify", "unpatchify",
           "EOS_TOKEN", "UNK_TOKEN", "Vocab", "SPLITS", "Corpus", "encode_lines", "read_lines", "read_split",
           "wikitext2", "MISSING", "WindowSplits", "chunk_windows", "num_windows", "windows"]
