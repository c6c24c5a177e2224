import itertools
import math

import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.evaluate import _sliding_part, log_likelihood, perplexity

SEQ_LEN, STATES, VOCAB = 4, 2, 3


def tiny_hmm(seed=0) -> HMM:
    return HMM.random(HMMConfig(STATES, VOCAB, SEQ_LEN), seed=seed, dtype=torch.float64)


def brute_force_probability(hmm: HMM, tokens: list[int]) -> float:
    """p(x_1..x_k) placed at positions 0..k-1 of the window, summing over every state path."""
    total = 0.0
    for path in itertools.product(range(STATES), repeat=len(tokens)):
        p = hmm.initial[path[0]].item()
        for t, (state, token) in enumerate(zip(path, tokens)):
            if t > 0:
                p *= hmm.transitions[t - 1, path[t - 1], state].item()
            p *= hmm.emissions[t, token, state].item()
        total += p
    return total


def stream(length=11, seed=1):
    return torch.randint(0, VOCAB, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("length", [3, 8, 11])
def test_chunk_protocol_matches_brute_force(length):
    hmm, tokens = tiny_hmm(), stream(length)
    expected = sum(math.log(brute_force_probability(hmm, tokens[i:i + SEQ_LEN].tolist()))
                   for i in range(0, length, SEQ_LEN))  # the last chunk may be shorter: a prefix probability
    assert log_likelihood(hmm, tokens, "chunk", batch_size=2, progress=False) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("length", [3, 4, 11])
def test_sliding_protocol_matches_brute_force_conditionals(length):
    hmm, tokens = tiny_hmm(2), stream(length, seed=3).tolist()
    expected = 0.0
    for t in range(length):  # p(x_t | previous <= SEQ_LEN - 1 tokens), the window starting at max(0, t-3)
        start = max(0, t - (SEQ_LEN - 1))
        context = tokens[start:t]
        numerator = brute_force_probability(hmm, context + [tokens[t]])
        expected += math.log(numerator / (brute_force_probability(hmm, context) if context else 1.0))
    result = perplexity(hmm, torch.tensor(tokens), "sliding", split="test", batch_size=3, progress=False)
    assert result.log_likelihood == pytest.approx(expected, rel=1e-10)
    assert result.perplexity == pytest.approx(math.exp(-expected / length), rel=1e-10)
    assert result.num_tokens == length


def test_protocols_differ_and_name_themselves():
    hmm, tokens = tiny_hmm(), stream(40)
    chunk = perplexity(hmm, tokens, "chunk", split="valid", progress=False)
    sliding = perplexity(hmm, tokens, "sliding", split="valid", progress=False)
    assert chunk.perplexity != pytest.approx(sliding.perplexity, rel=1e-6)
    line = sliding.describe(STATES, "lvd")
    assert "sliding" in line and "valid" in line and "h=2" in line and "init=lvd" in line


def test_bad_inputs_raise():
    hmm = tiny_hmm()
    with pytest.raises(ValueError, match="protocol"):
        perplexity(hmm, stream(), "strided")
    with pytest.raises(ValueError, match="1-D LongTensor"):
        perplexity(hmm, stream().float(), "chunk")
    with pytest.raises(ValueError, match="batch_size"):
        perplexity(hmm, stream(), "chunk", batch_size=0)


@pytest.mark.parametrize("length", [3, 11, 40])
def test_sliding_parts_of_the_stream_add_up_to_the_whole(length):
    # what each rank scores under torch.distributed: contiguous token ranges, the first one from 0
    hmm, tokens = tiny_hmm(4), stream(length, seed=5)
    whole = log_likelihood(hmm, tokens, "sliding", progress=False)
    cuts = sorted({0, length, *[max(SEQ_LEN, c) for c in (SEQ_LEN, length // 2, length - 1) if c < length]})
    parts = [_sliding_part(hmm, tokens, start, stop, 3, False, "") for start, stop in zip(cuts, cuts[1:])]
    assert sum(parts) == pytest.approx(whole, rel=1e-12)
