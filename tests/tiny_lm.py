"""A tiny random GPT-2 with a word-level tokenizer, saved as a transformers folder (no hub needed)."""
from pathlib import Path

import torch

WORDS = ["the", "river", "bank", "flows", "into", "sea", "a", "cat", "sat", "on", "mat", "and", "runs", "ran",
         "run", "dog", "big", "small", ".", ","]
EOS = "<|endoftext|>"


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate([EOS, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)     # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, bos_token=EOS, unk_token=EOS,
                                   pad_token=EOS)


def save_tiny_gpt2(folder: Path, seed: int = 0, extra_vocab: int = 0) -> Path:
    """A 1-layer GPT-2 (width 16) over the 21 tokens (plus ``extra_vocab`` unused ids) in ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer) + extra_vocab, n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():                    # sharper than the default init, so samples have structure
        model.lm_head.weight.mul_(20)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
