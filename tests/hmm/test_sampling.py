"""Sampling frequencies against exact probabilities (brute force), with and without a prefix, for
ancestral sampling, token-by-token continuations (inside and past the window) and choose_tokens."""
import math

import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.hmm import choose_tokens, sample_continuations
from tests.hmm.references import all_sequences, brute_next_token_prob


def _empirical(samples, sequences):
    index = {tuple(s): i for i, s in enumerate(sequences)}
    counts = torch.zeros(len(sequences), dtype=torch.float64)
    for row in samples.tolist():
        counts[index[tuple(row)]] += 1
    return counts / len(samples)


@pytest.mark.parametrize("homogeneous", [False, True])
def test_sample_frequencies_match_probabilities(homogeneous):
    hmm = HMM.random(HMMConfig(num_states=2, vocab_size=2, seq_len=3, homogeneous=homogeneous), seed=3,
                     dtype=torch.float64)
    sequences = all_sequences(2, 3)
    exact = hmm.log_likelihood(torch.tensor(sequences)).exp()
    samples = hmm.sample(40_000, generator=torch.Generator().manual_seed(0))
    # 40k draws: standard error per cell <= 0.0025, so 0.012 is ~5 sigma
    torch.testing.assert_close(_empirical(samples, sequences), exact, atol=0.012, rtol=0)


def test_prefix_continuation_frequencies_match_conditionals():
    hmm = HMM.random(HMMConfig(num_states=3, vocab_size=2, seq_len=4), seed=4, dtype=torch.float64)
    prefix = torch.tensor([[1, 0]])
    completions = [[1, 0, *rest] for rest in all_sequences(2, 2)]
    joint = hmm.log_likelihood(torch.tensor(completions)).exp()
    exact = joint / joint.sum()
    samples = hmm.sample(40_000, prefix=prefix.expand(40_000, -1), generator=torch.Generator().manual_seed(1))
    assert (samples[:, :2] == prefix).all()
    torch.testing.assert_close(_empirical(samples, completions), exact, atol=0.012, rtol=0)


def test_sample_rejects_bad_arguments():
    hmm = HMM.random(HMMConfig(num_states=2, vocab_size=3, seq_len=4))
    with pytest.raises(ValueError, match="num_samples"):
        hmm.sample(0)
    with pytest.raises(ValueError, match="length"):
        hmm.sample(2, length=5)
    with pytest.raises(ValueError, match="missing"):
        hmm.sample(1, prefix=torch.tensor([[0, -1]]))


def _exact_continuations(hmm, prefix: list[int], num_new_tokens: int):
    """Every continuation and its probability, each token predicted by brute force from the context the
    HMM sees: the whole history inside a window, the last seq_len - 1 tokens past it (sliding protocol)."""
    window = None if hmm.config.homogeneous else hmm.seq_len
    continuations = all_sequences(hmm.vocab_size, num_new_tokens)
    probabilities = []
    for continuation in continuations:
        history, probability = list(prefix), 1.0
        for token in continuation:
            context = history if window is None or len(history) < window else history[len(history) - window + 1:]
            probability *= brute_next_token_prob(hmm, context, token)
            history.append(token)
        probabilities.append(probability)
    return continuations, torch.tensor(probabilities, dtype=torch.float64)


@pytest.mark.parametrize("homogeneous, prefix", [(False, [1]), (False, [1, 0, 1, 1]), (True, [0])],
                         ids=["into-sliding", "long-prefix", "homogeneous"])
def test_continuation_frequencies_match_exact_probabilities(homogeneous, prefix):
    hmm = HMM.random(HMMConfig(num_states=3, vocab_size=2, seq_len=3, homogeneous=homogeneous), seed=21,
                     dtype=torch.float64)
    continuations, exact = _exact_continuations(hmm, prefix, 3)
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    samples = sample_continuations(hmm, torch.tensor([prefix]).expand(20_000, -1), 3,
                                   generator=torch.Generator().manual_seed(2))
    assert samples.shape == (20_000, 3)
    # 20k draws: standard error per cell <= 0.0036, so 0.015 is > 4 sigma
    torch.testing.assert_close(_empirical(samples, continuations), exact, atol=0.015, rtol=0)


def test_greedy_continuation_follows_brute_force_argmax_past_the_window():
    hmm = HMM.random(HMMConfig(num_states=3, vocab_size=4, seq_len=3), seed=22, dtype=torch.float64)
    (greedy,) = sample_continuations(hmm, torch.tensor([[2]]), 5, temperature=0).tolist()
    history = [2]
    for token in greedy:
        context = history[-2:]
        probabilities = [brute_next_token_prob(hmm, context, v) for v in range(4)]
        assert token == max(range(4), key=probabilities.__getitem__)
        history.append(token)
    assert sample_continuations(hmm, torch.tensor([[2]]), 5, top_k=1).tolist() == [greedy]


@pytest.mark.parametrize("temperature, top_k", [(0.5, 3), (2.0, None), (1.0, 2)])
def test_choose_tokens_frequencies_follow_temperature_and_top_k(temperature, top_k):
    weights = [0.5, 0.3, 0.15, 0.05]
    log_weights = torch.tensor([weights], dtype=torch.float64).log().expand(20_000, -1) + 7.0  # unnormalised
    kept = sorted(range(4), key=lambda v: -weights[v])[:top_k or 4]
    tempered = [weights[v] ** (1 / temperature) if v in kept else 0.0 for v in range(4)]
    exact = torch.tensor([w / math.fsum(tempered) for w in tempered], dtype=torch.float64)
    tokens = choose_tokens(log_weights, temperature, top_k, torch.Generator().manual_seed(3))
    frequencies = torch.bincount(tokens, minlength=4).double() / len(tokens)
    # 20k draws: standard error per cell <= 0.0036, so 0.015 is > 4 sigma
    torch.testing.assert_close(frequencies, exact, atol=0.015, rtol=0)
    assert choose_tokens(log_weights[:2], temperature=0).tolist() == [0, 0]


def test_sample_continuations_rejects_bad_arguments():
    hmm = HMM.random(HMMConfig(num_states=2, vocab_size=3, seq_len=4))
    empty = torch.zeros(2, 0, dtype=torch.long)
    with pytest.raises(ValueError, match="num_new_tokens"):
        sample_continuations(hmm, empty, 0)
    with pytest.raises(ValueError, match="temperature"):
        sample_continuations(hmm, empty, 2, temperature=-0.5)
    with pytest.raises(ValueError, match="top_k"):
        sample_continuations(hmm, empty, 2, top_k=0)
    with pytest.raises(ValueError, match="missing tokens"):
        sample_continuations(hmm, torch.tensor([[0, -1]]), 2)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 3\)"):
        sample_continuations(hmm, torch.tensor([[3, 0, 0, 0, 0, 0]]), 2)      # checked outside the window too
