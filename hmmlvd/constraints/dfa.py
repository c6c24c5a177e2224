"""Deterministic finite automata over token ids, with edges labelled by token sets.

A :class:`DFA` is complete (every state has a move on every token) and is stored sparsely,
because vocabularies are large and constraints mention few tokens: each state has a
*default* target, taken on every token except a handful of *exceptions* (token -> target).
An edge ``source -> target`` is therefore labelled either by an explicit token set or by
"every token except these" (:class:`TokenSet` with ``complement=True``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence


@dataclass(frozen=True)
class TokenSet:
    """A set of token ids; with ``complement=True`` it means every token *not* in ``tokens``."""

    tokens: frozenset[int]
    complement: bool = False

    def __contains__(self, token: int) -> bool:
        return (token in self.tokens) != self.complement

    def to_list(self, vocab_size: int) -> list[int]:
        if not self.complement:
            return sorted(self.tokens)
        return [v for v in range(vocab_size) if v not in self.tokens]


@dataclass(frozen=True)
class Edge:
    """All tokens in ``tokens`` move the automaton from ``source`` to ``target``."""

    source: int
    target: int
    tokens: TokenSet


def _check_index(name: str, value: int, bound: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < bound:
        raise ValueError(f"{name} must be an integer in [0, {bound}) ({what}), got {value!r}")


class DFA:
    """A complete DFA over token ids ``0..vocab_size-1``.

    Args:
        vocab_size: number of token ids the automaton reads.
        defaults: ``defaults[q]`` is the target of state ``q`` on tokens without an exception.
        exceptions: ``exceptions[q]`` maps a token id to the target of ``q`` on that token.
        accepting: the accepting states.
        initial: the start state.
    """

    def __init__(
        self,
        vocab_size: int,
        defaults: Sequence[int],
        exceptions: Sequence[Mapping[int, int]],
        accepting: Iterable[int],
        initial: int = 0,
    ) -> None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        num_states = len(defaults)
        if num_states == 0 or len(exceptions) != num_states:
            raise ValueError(
                f"a DFA needs at least one state and one exception map per state; got {num_states} "
                f"defaults and {len(exceptions)} exception maps"
            )
        for state, target in enumerate(defaults):
            _check_index(f"defaults[{state}]", target, num_states, "a state")
        cleaned: list[dict[int, int]] = []
        for state, mapping in enumerate(exceptions):
            for token, target in mapping.items():
                _check_index(f"a token of exceptions[{state}]", token, vocab_size, "a token id")
                _check_index(f"exceptions[{state}][{token}]", target, num_states, "a state")
            cleaned.append({t: q for t, q in mapping.items() if q != defaults[state]})
        accepting = frozenset(accepting)
        for state in accepting:
            _check_index("an accepting state", state, num_states, "a state")
        _check_index("initial", initial, num_states, "a state")
        self.vocab_size = vocab_size
        self.initial = initial
        self.accepting = accepting
        self._defaults = tuple(defaults)
        self._exceptions = tuple(cleaned)

    @property
    def num_states(self) -> int:
        return len(self._defaults)

    def default_target(self, state: int) -> int:
        return self._defaults[state]

    def exceptions(self, state: int) -> Mapping[int, int]:
        return dict(self._exceptions[state])

    def step(self, state: int, token: int) -> int:
        """The state reached from ``state`` after reading ``token``."""
        return self._exceptions[state].get(token, self._defaults[state])

    def run(self, tokens: Iterable[int], state: int | None = None) -> int:
        """The state reached after reading ``tokens`` from ``state`` (default: the initial state)."""
        state = self.initial if state is None else state
        for token in tokens:
            token = int(token)
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} is outside this DFA's vocabulary [0, {self.vocab_size})")
            state = self.step(state, token)
        return state

    def accepts(self, tokens: Iterable[int]) -> bool:
        return self.run(tokens) in self.accepting

    def edges(self) -> list[Edge]:
        """Every edge, with all tokens sharing a source and target merged into one token set."""
        result = []
        for state in range(self.num_states):
            grouped: dict[int, set[int]] = {}
            for token, target in self._exceptions[state].items():
                grouped.setdefault(target, set()).add(token)
            excluded = frozenset(self._exceptions[state])
            result.append(Edge(state, self._defaults[state], TokenSet(excluded, complement=True)))
            result.extend(Edge(state, target, TokenSet(frozenset(tokens)))
                          for target, tokens in sorted(grouped.items()))
        return result

    def successors(self, state: int) -> set[int]:
        return {self._defaults[state], *self._exceptions[state].values()}

    def live_states(self) -> frozenset[int]:
        """States from which some accepting state can be reached (by a string of some length)."""
        predecessors: dict[int, set[int]] = {q: set() for q in range(self.num_states)}
        for state in range(self.num_states):
            for target in self.successors(state):
                predecessors[target].add(state)
        live, frontier = set(self.accepting), list(self.accepting)
        while frontier:
            for source in predecessors[frontier.pop()]:
                if source not in live:
                    live.add(source)
                    frontier.append(source)
        return frozenset(live)

    def is_empty(self) -> bool:
        """True when the DFA accepts no string at all."""
        return self.initial not in self.live_states()

    def minimize(self) -> "DFA":
        """The equivalent DFA with the fewest states (unreachable states dropped, equivalent ones merged)."""
        reachable = _reachable(self)
        classes = {q: int(q in self.accepting) for q in reachable}
        while True:
            signatures = {q: self._signature(q, classes) for q in reachable}
            numbering: dict[tuple, int] = {}
            refined = {q: numbering.setdefault(sig, len(numbering)) for q, sig in signatures.items()}
            if len(numbering) == len(set(classes.values())):
                break
            classes = refined
        return _quotient(self, classes)

    def _signature(self, state: int, classes: Mapping[int, int]) -> tuple:
        default_class = classes[self._defaults[state]]
        moves = frozenset(
            (token, classes[target]) for token, target in self._exceptions[state].items()
            if classes[target] != default_class
        )
        return classes[state], default_class, moves

    def __repr__(self) -> str:
        return (f"DFA(num_states={self.num_states}, vocab_size={self.vocab_size}, "
                f"accepting={sorted(self.accepting)}, initial={self.initial})")


def _reachable(dfa: DFA) -> list[int]:
    """States reachable from the initial state, in breadth-first order."""
    order, seen = [dfa.initial], {dfa.initial}
    for state in order:
        for target in sorted(dfa.successors(state)):
            if target not in seen:
                seen.add(target)
                order.append(target)
    return order


def _quotient(dfa: DFA, classes: Mapping[int, int]) -> DFA:
    """Merge the states of ``dfa`` by ``classes``; new states are numbered in breadth-first order."""
    representative: dict[int, int] = {}
    for state in _reachable(dfa):
        representative.setdefault(classes[state], state)
    order = {cls: index for index, cls in enumerate(representative)}
    defaults, exceptions = [], []
    for state in representative.values():
        defaults.append(order[classes[dfa.default_target(state)]])
        exceptions.append({t: order[classes[q]] for t, q in dfa.exceptions(state).items()})
    accepting = [order[cls] for cls, state in representative.items() if state in dfa.accepting]
    return DFA(dfa.vocab_size, defaults, exceptions, accepting, initial=order[classes[dfa.initial]])


def _product(dfas: Sequence[DFA], accept: Callable[[Sequence[bool]], bool]) -> DFA:
    if not dfas:
        raise ValueError("combine at least one DFA")
    vocab_sizes = {d.vocab_size for d in dfas}
    if len(vocab_sizes) != 1:
        raise ValueError(f"all DFAs must read the same vocabulary, got vocab sizes {sorted(vocab_sizes)}")
    start = tuple(d.initial for d in dfas)
    index = {start: 0}
    order = [start]
    defaults, exceptions = [], []
    for states in order:
        def target_of(token: int | None) -> int:
            moved = tuple(d.default_target(q) if token is None else d.step(q, token) for d, q in zip(dfas, states))
            if moved not in index:
                index[moved] = len(order)
                order.append(moved)
            return index[moved]

        tokens = sorted(set().union(*(d.exceptions(q) for d, q in zip(dfas, states))))
        defaults.append(target_of(None))
        exceptions.append({token: target_of(token) for token in tokens})
    accepting = [i for i, states in enumerate(order) if accept([q in d.accepting for d, q in zip(dfas, states)])]
    return DFA(dfas[0].vocab_size, defaults, exceptions, accepting).minimize()


def intersect(*dfas: DFA) -> DFA:
    """Accepts the strings that every one of ``dfas`` accepts."""
    return _product(dfas, all)


def union(*dfas: DFA) -> DFA:
    """Accepts the strings that at least one of ``dfas`` accepts."""
    return _product(dfas, any)


def complement(dfa: DFA) -> DFA:
    """Accepts exactly the strings that ``dfa`` rejects."""
    rejecting = set(range(dfa.num_states)) - dfa.accepting
    defaults = [dfa.default_target(q) for q in range(dfa.num_states)]
    exceptions = [dfa.exceptions(q) for q in range(dfa.num_states)]
    return DFA(dfa.vocab_size, defaults, exceptions, rejecting, dfa.initial).minimize()
