"""Fast forward–backward against brute force (tiny models) and a naive log-space reference."""
import math

import pytest
import torch

from hmmlvd import HMM, HMMConfig
from tests.hmm.references import all_sequences, brute_force, log_space_forward_backward

TINY = [HMMConfig(num_states=3, vocab_size=4, seq_len=5),
        HMMConfig(num_states=2, vocab_size=3, seq_len=4, homogeneous=True)]


@pytest.mark.parametrize("config", TINY, ids=["nonhomogeneous", "homogeneous"])
def test_likelihood_posteriors_and_counts_match_brute_force(config):
    hmm = HMM.random(config, seed=1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (6, config.seq_len), generator=generator)
    tokens[1, 2] = -1
    tokens[2, 0] = -1
    tokens[3, :] = -1
    counts = hmm.zero_counts()
    log_likelihood = hmm.accumulate_counts(tokens, counts)
    posteriors = hmm.posterior_marginals(tokens)
    expected_counts = {name: torch.zeros_like(c) for name, c in counts.items()}
    for b in range(len(tokens)):
        expected_ll, expected_post, brute_counts = brute_force(hmm, tokens[b].tolist())
        assert log_likelihood[b].item() == pytest.approx(expected_ll, rel=1e-10, abs=1e-10)
        torch.testing.assert_close(posteriors[b], expected_post, rtol=1e-9, atol=1e-12)
        for name in counts:
            expected_counts[name] += brute_counts[name]
    for name in counts:
        torch.testing.assert_close(counts[name], expected_counts[name], rtol=1e-9, atol=1e-12)


def test_all_missing_sequence_has_probability_one():
    hmm = HMM.random(TINY[0], seed=2, dtype=torch.float64)
    tokens = torch.full((1, 5), -1)
    assert hmm.log_likelihood(tokens).item() == pytest.approx(0.0, abs=1e-12)


def test_likelihoods_sum_to_one_over_all_sequences():
    config = HMMConfig(num_states=2, vocab_size=3, seq_len=4)
    hmm = HMM.random(config, seed=3, dtype=torch.float64)
    sequences = torch.tensor(all_sequences(3, 4))
    assert hmm.log_likelihood(sequences).exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_prefix_likelihood_equals_trailing_missing_and_marginal_sum():
    config = TINY[0]
    hmm = HMM.random(config, seed=4, dtype=torch.float64)
    prefix = torch.tensor([[2, 0]])
    padded = torch.tensor([[2, 0, -1, -1, -1]])
    completions = torch.tensor([[2, 0, *rest] for rest in all_sequences(4, 3)])
    prefix_ll = hmm.log_likelihood(prefix).item()
    assert prefix_ll == pytest.approx(hmm.log_likelihood(padded).item(), abs=1e-12)
    assert prefix_ll == pytest.approx(math.log(hmm.log_likelihood(completions).exp().sum().item()), abs=1e-10)


@pytest.mark.parametrize("k", [0, 1, 3, 4])
def test_next_token_distribution_matches_brute_force_ratio(k):
    config = TINY[0]
    hmm = HMM.random(config, seed=5, dtype=torch.float64)
    prefix = torch.tensor([[1, 3, 0, 2][:k]], dtype=torch.long).reshape(1, k)
    predicted = hmm.next_token_log_probs(prefix).exp()[0]
    prefix_ll = brute_force(hmm, prefix[0].tolist())[0] if k else 0.0
    expected = [math.exp(brute_force(hmm, prefix[0].tolist() + [v])[0] - prefix_ll) for v in range(4)]
    torch.testing.assert_close(predicted, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_conditional_log_probs_sum_to_log_likelihood_and_match_ratios():
    hmm = HMM.random(TINY[0], seed=6, dtype=torch.float64)
    tokens = torch.tensor([[0, 3, 1, 1, 2]])
    conditionals = hmm.conditional_log_probs(tokens)[0]
    assert conditionals.sum().item() == pytest.approx(hmm.log_likelihood(tokens).item(), abs=1e-12)
    for t in range(1, 5):
        ratio = hmm.log_likelihood(tokens[:, :t + 1]) - hmm.log_likelihood(tokens[:, :t])
        assert conditionals[t].item() == pytest.approx(ratio.item(), abs=1e-12)


@pytest.mark.parametrize("homogeneous", [False, True])
def test_fp32_fast_path_matches_log_space_reference(homogeneous):
    config = HMMConfig(num_states=64, vocab_size=50, seq_len=32, homogeneous=homogeneous)
    hmm = HMM.random(config, seed=7)
    tokens = torch.randint(0, 50, (16, 32), generator=torch.Generator().manual_seed(1))
    tokens[0, 5:9] = -1
    counts = hmm.zero_counts()
    log_likelihood = hmm.accumulate_counts(tokens, counts)
    reference_ll, reference_counts = log_space_forward_backward(hmm, tokens)
    torch.testing.assert_close(log_likelihood, reference_ll, rtol=1e-5, atol=0)
    for name in counts:
        torch.testing.assert_close(counts[name].double(), reference_counts[name], rtol=1e-5, atol=1e-6)


def test_no_underflow_with_many_states_in_fp32():
    # The float64 path is checked against the log-space reference above; here it is the
    # yardstick for the fp32 recursion at h = 4096 (tied tables keep the test light).
    config = HMMConfig(num_states=4096, vocab_size=200, seq_len=32, homogeneous=True)
    hmm = HMM.random(config, seed=8)
    tokens = torch.randint(0, 200, (2, 32), generator=torch.Generator().manual_seed(2))
    fast = hmm.log_likelihood(tokens)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, hmm.to(dtype=torch.float64).log_likelihood(tokens), rtol=1e-5, atol=0)
