"""Sampling frequencies against exact probabilities (brute force), with and without a prefix."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig
from tests.hmm.references import all_sequences


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
