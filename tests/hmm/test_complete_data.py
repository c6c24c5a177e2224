"""The closed-form fit from hidden-state assignments against a hand count."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.hmm.complete_data import complete_data_counts

TOKENS = torch.tensor([[0, 2, 1], [2, 2, -1], [0, 1, 1]])
STATES = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]])


def test_counts_equal_hand_count():
    hmm = HMM.random(HMMConfig(num_states=2, vocab_size=3, seq_len=3))
    counts = complete_data_counts(hmm, TOKENS, STATES)
    torch.testing.assert_close(counts["initial"], torch.tensor([1.0, 2.0]))
    expected_transitions = torch.tensor([[[1.0, 0.0], [1.0, 1.0]],      # t=0->1: (1,0), (1,1), (0,0)
                                         [[1.0, 1.0], [1.0, 0.0]]])     # t=1->2: (0,0), (1,0), (0,1)
    torch.testing.assert_close(counts["transitions"], expected_transitions)
    expected_emissions = torch.zeros(3, 3, 2)
    for n in range(3):
        for t in range(3):
            if TOKENS[n, t] >= 0:
                expected_emissions[t, TOKENS[n, t], STATES[n, t]] += 1
    torch.testing.assert_close(counts["emissions"], expected_emissions)
    assert counts["emissions"].sum() == 8  # the missing token is not counted


def test_closed_form_fit_is_smoothed_frequencies():
    hmm = HMM.from_complete_data(TOKENS, STATES, num_states=2, vocab_size=3, pseudocount=0.0)
    torch.testing.assert_close(hmm.initial, torch.tensor([1 / 3, 2 / 3]))
    torch.testing.assert_close(hmm.transitions[0, 1], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(hmm.emissions[0, :, 1], torch.tensor([0.5, 0.0, 0.5]))
    smoothed = HMM.from_complete_data(TOKENS, STATES, num_states=2, vocab_size=3, pseudocount=0.3)
    torch.testing.assert_close(smoothed.emissions[0, :, 1], torch.tensor([1.1, 0.1, 1.1]) / 2.3)


def test_homogeneous_counts_pool_positions():
    hmm = HMM.random(HMMConfig(num_states=2, vocab_size=3, seq_len=3, homogeneous=True))
    counts = complete_data_counts(hmm, TOKENS, STATES)
    assert counts["transitions"].shape == (1, 2, 2)
    assert counts["transitions"].sum() == 6 and counts["emissions"].sum() == 8


def test_bad_assignments():
    with pytest.raises(ValueError, match="hidden states"):
        HMM.from_complete_data(TOKENS, STATES + 1, num_states=2, vocab_size=3)
    with pytest.raises(ValueError, match="shaped like tokens"):
        HMM.from_complete_data(TOKENS, STATES[:, :2], num_states=2, vocab_size=3)
