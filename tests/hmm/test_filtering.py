"""Filtering one token at a time and next-token distributions against brute-force path enumeration
(tiny models) and the naive log-space forward recursion (a model too large to enumerate)."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.hmm import filter_step, next_token_log_probs, state_distribution
from tests.hmm.references import (brute_force, brute_next_token_prob, log_space_next_token_log_probs,
                                  log_space_state_distribution)

TINY = [HMMConfig(num_states=3, vocab_size=4, seq_len=5),
        HMMConfig(num_states=2, vocab_size=3, seq_len=4, homogeneous=True)]


@pytest.mark.parametrize("config", TINY, ids=["nonhomogeneous", "homogeneous"])
def test_filter_steps_match_brute_force_state_posteriors(config):
    """After reading x_<=t: p(z_{t+1} | x_<=t), or p(z_t | x_<=t) at the last position of a window."""
    hmm = HMM.random(config, seed=11, dtype=torch.float64)
    tokens = torch.randint(0, config.vocab_size, (3, config.seq_len), generator=torch.Generator().manual_seed(0))
    state_probs = hmm.initial.double().expand(3, -1)
    for t in range(config.seq_len):
        state_probs = filter_step(hmm, state_probs, tokens[:, t], t)
        window_ends = not config.homogeneous and t + 1 == config.seq_len
        for row in range(3):
            read = tokens[row, :t + 1].tolist()
            # a trailing missing token (-1) leaves the path sum over z_{t+1} unobserved: its posterior is the prediction
            expected = brute_force(hmm, read if window_ends else read + [-1])[1][-1]
            torch.testing.assert_close(state_probs[row], expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("config", TINY, ids=["nonhomogeneous", "homogeneous"])
def test_next_token_distributions_from_filtered_states_match_brute_force_ratios(config):
    hmm = HMM.random(config, seed=12, dtype=torch.float64)
    tokens = [2, 0, 1, 1, 0][:config.seq_len - 1]
    state_probs = hmm.initial.double().unsqueeze(0)
    for k in range(len(tokens) + 1):
        predicted = next_token_log_probs(hmm, state_probs, k).exp()[0]
        expected = torch.tensor([brute_next_token_prob(hmm, tokens[:k], v) for v in range(config.vocab_size)],
                                dtype=torch.float64)
        torch.testing.assert_close(predicted, expected, rtol=1e-10, atol=1e-13)
        assert predicted.sum().item() == pytest.approx(1.0, abs=1e-12)
        if k < len(tokens):
            state_probs = filter_step(hmm, state_probs, torch.tensor([tokens[k]]), k)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_filtering_matches_naive_log_space_forward_on_a_medium_model(dtype, tolerance):
    """h=16, V=60: filter_step chains and state_distribution agree with a logsumexp recursion in float64."""
    hmm = HMM.random(HMMConfig(num_states=16, vocab_size=60, seq_len=10), seed=13, dtype=dtype)
    tokens = torch.randint(0, 60, (4, 9), generator=torch.Generator().manual_seed(1))
    state_probs = hmm.initial.double().expand(4, -1)
    for k in range(10):
        prefix = tokens[:, :k]
        expected_states = log_space_state_distribution(hmm, prefix).exp()
        torch.testing.assert_close(state_probs, expected_states, rtol=tolerance, atol=tolerance * 1e-3)
        torch.testing.assert_close(state_distribution(hmm, prefix).double(), expected_states,
                                   rtol=tolerance, atol=tolerance * 1e-3)
        torch.testing.assert_close(next_token_log_probs(hmm, state_probs, k), log_space_next_token_log_probs(hmm, prefix),
                                   rtol=tolerance, atol=tolerance)
        if k < 9:
            state_probs = filter_step(hmm, state_probs, tokens[:, k], k)


def test_impossible_token_gives_zero_row_and_minus_infinity():
    config = HMMConfig(num_states=2, vocab_size=3, seq_len=4)
    hmm = HMM.random(config, seed=14, dtype=torch.float64)
    emissions = hmm.emissions.clone()
    emissions[:, 0] += emissions[:, 2]
    emissions[:, 2] = 0                                                     # token 2 is never emitted
    sparse = HMM(config, hmm.initial, hmm.transitions, emissions)
    state_probs = sparse.initial.double().expand(2, -1)
    assert bool(torch.isneginf(next_token_log_probs(sparse, state_probs, 0)[:, 2]).all())
    after = filter_step(sparse, state_probs, torch.tensor([2, 1]), 0)
    assert after[0].abs().sum().item() == 0.0
    assert after[1].sum().item() == pytest.approx(1.0, abs=1e-12)


def test_bad_inputs_raise_clear_errors():
    hmm = HMM.random(TINY[0], seed=15)
    states = hmm.initial.expand(2, -1)
    with pytest.raises(ValueError, match=r"state_probs must be a tensor \[batch, num_states=3\]"):
        filter_step(hmm, hmm.initial, torch.tensor([0, 1]), 0)
    with pytest.raises(ValueError, match=r"tokens must be a tensor \[batch=2\]"):
        filter_step(hmm, states, torch.tensor([[0, 1]]), 0)
    with pytest.raises(ValueError, match="below seq_len=5"):
        filter_step(hmm, states, torch.tensor([0, 1]), 5)
    with pytest.raises(ValueError, match="non-negative integer"):
        next_token_log_probs(hmm, states, -1)
    with pytest.raises(ValueError, match="num_states=3"):
        next_token_log_probs(hmm, torch.ones(2, 4), 0)
    with pytest.raises(ValueError, match="missing tokens"):
        hmm.check_prefix(torch.tensor([[0, -1]]))
    with pytest.raises(ValueError, match="exceed this HMM's seq_len=5"):
        hmm.check_prefix(torch.zeros(1, 6, dtype=torch.long))
    assert hmm.check_prefix(torch.zeros(1, 6, dtype=torch.long), any_length=True).shape == (1, 6)
    with pytest.raises(ValueError, match="leaves no position to predict"):
        state_distribution(hmm, torch.zeros(1, 5, dtype=torch.long))
