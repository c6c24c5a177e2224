"""Every DFA builder and combinator accepts exactly the right strings (all strings up to length 5)."""
import pytest
import torch

from hmmlvd.constraints import (DFA, all_of, any_of, complement, contains_phrase, intersect, length_between,
                                none_of, union)
from tests.constraints.references import all_strings

V = 4
STRINGS = all_strings(V, 5)


def contains(string, phrase) -> bool:
    n = len(phrase)
    return any(tuple(string[i:i + n]) == tuple(phrase) for i in range(len(string) - n + 1))


def assert_language(dfa, predicate):
    wrong = [s for s in STRINGS if dfa.accepts(s) != predicate(s)]
    assert not wrong, f"{len(wrong)} strings misclassified, e.g. {wrong[:5]}"


@pytest.mark.parametrize("phrase", [[1], [2, 2], [1, 2, 1], [0, 0, 1]])
def test_contains_phrase(phrase):
    assert_language(contains_phrase(phrase, V), lambda s: contains(s, phrase))


@pytest.mark.parametrize("phrases", [[[1]], [[1], [3]], [[1, 2], [2, 3]], [[0], [1, 0], [3]]])
def test_all_any_none_of(phrases):
    assert_language(all_of(phrases, V), lambda s: all(contains(s, p) for p in phrases))
    assert_language(any_of(phrases, V), lambda s: any(contains(s, p) for p in phrases))
    assert_language(none_of(phrases, V), lambda s: not any(contains(s, p) for p in phrases))


@pytest.mark.parametrize("low,high", [(0, 0), (1, 3), (2, 2), (0, 5)])
def test_length_between(low, high):
    assert_language(length_between(low, high, V), lambda s: low <= len(s) <= high)


@pytest.mark.parametrize("low,high", [(0, 1), (1, 3), (2, 2)])
def test_length_between_counts_tokens_before_the_end_token(low, high):
    def predicate(s):
        length = s.index(3) if 3 in s else len(s)
        return low <= length <= high
    assert_language(length_between(low, high, V, end_token=3), predicate)


def test_combinators():
    a, b = all_of([[1], [2]], V), length_between(2, 4, V)
    in_a = lambda s: contains(s, [1]) and contains(s, [2])  # noqa: E731
    in_b = lambda s: 2 <= len(s) <= 4  # noqa: E731
    assert_language(intersect(a, b), lambda s: in_a(s) and in_b(s))
    assert_language(union(a, b), lambda s: in_a(s) or in_b(s))
    assert_language(complement(a), lambda s: not in_a(s))
    assert_language(intersect(a, complement(a)), lambda s: False)
    assert intersect(a, complement(a)).is_empty() and not a.is_empty()


def test_builders_are_minimal():
    # "contains 1 and contains 2" needs exactly 4 states: {}, {1}, {2}, {1, 2} found.
    assert all_of([[1], [2]], V).num_states == 4
    assert all_of([[0], [1], [2]], V).num_states == 8
    assert none_of([[1], [2]], V).num_states == 2
    assert complement(complement(all_of([[1], [2]], V))).num_states == 4


def test_edges_partition_the_vocabulary_and_agree_with_step():
    dfa = intersect(all_of([[1, 2], [3]], V), length_between(0, 4, V))
    for state in range(dfa.num_states):
        outgoing = [e for e in dfa.edges() if e.source == state]
        for token in range(V):
            holders = [e for e in outgoing if token in e.tokens]
            assert len(holders) == 1 and holders[0].target == dfa.step(state, token)


def test_phrases_may_be_tensors_or_single_ids():
    expected = all_of([[1, 2], [3]], V)
    for phrases in ([torch.tensor([1, 2]), 3], [(1, 2), torch.tensor(3)]):
        assert_language(all_of(phrases, V), expected.accepts)


def test_run_and_accepts_on_token_lists():
    dfa = all_of([[1, 2]], V)
    assert dfa.accepts([0, 1, 2, 0]) and not dfa.accepts([2, 1])
    with pytest.raises(ValueError, match="outside this DFA's vocabulary"):
        dfa.accepts([7])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="non-empty list"):
        all_of([], V)
    with pytest.raises(ValueError, match="non-empty list"):
        none_of([], V)
    with pytest.raises(ValueError, match="empty phrase"):
        all_of([[1], []], V)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        all_of([[1], [4]], V)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        contains_phrase([-1], V)
    with pytest.raises(ValueError, match=r"list of integer token ids, got \['river'\]"):
        all_of([["river"]], V)
    with pytest.raises(ValueError, match="list of integer token ids"):
        all_of([[1.5]], V)
    with pytest.raises(ValueError, match="must not exceed"):
        length_between(3, 2, V)
    with pytest.raises(ValueError, match="same vocabulary"):
        intersect(all_of([[1]], V), all_of([[1]], V + 1))
    with pytest.raises(ValueError, match="a state"):
        DFA(V, defaults=[0, 2], exceptions=[{}, {}], accepting=[1])
    with pytest.raises(ValueError, match="token id"):
        DFA(V, defaults=[0], exceptions=[{V: 0}], accepting=[0])
    with pytest.raises(ValueError, match="at least one state"):
        DFA(V, defaults=[], exceptions=[], accepting=[])
