"""A non-homogeneous HMM written as a circuit (the "HMM as a PC" construction).

Bottom-up, ``N_{T-1} = p(x_{T-1} | z_{T-1})`` and ``N_t = p(x_t | z_t) · Σ_j A_t[z_t, j] N_{t+1, j}``;
the root mixes ``N_0`` with the initial distribution. Unit ``i`` of every node is hidden state ``i``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..nodes import CategoricalInputNodes, Node, SumNodes, inputs, multiply, summation


class HoldsNodeParameters(Protocol):
    """Anything that maps a node to its current parameters, e.g. a compiled :class:`hmmlvd.pc.Circuit`."""

    def node_parameters(self, node: Node) -> Tensor: ...


@dataclass
class HMMCircuit:
    """The nodes of an HMM circuit, kept so its parameters can be read back in HMM layout."""

    root: Node
    initial: SumNodes
    transitions: list[SumNodes]      # transitions[t]: p(z_{t+1} | z_t)
    emissions: list[CategoricalInputNodes]      # emissions[t]: p(x_t | z_t)

    def hmm_parameters(self, circuit: HoldsNodeParameters) -> tuple[Tensor, Tensor, Tensor]:
        """``(initial [h], transitions [T-1, h, h], emissions [T, V, h])`` as held by ``circuit``."""
        initial = circuit.node_parameters(self.initial)[0]
        num_states = initial.shape[0]
        transitions = (torch.stack([circuit.node_parameters(n) for n in self.transitions]) if self.transitions
                       else initial.new_zeros(0, num_states, num_states))
        emissions = torch.stack([circuit.node_parameters(n).T for n in self.emissions])
        return initial, transitions, emissions


def hmm_circuit(initial: Tensor, transitions: Tensor, emissions: Tensor) -> HMMCircuit:
    """Circuit over variables ``0..T-1`` with the given HMM parameters (hmmlvd layout).

    ``initial`` [h], ``transitions`` [T-1, h, h] (row = current state), ``emissions`` [T, V, h].
    Homogeneous HMMs must be expanded to one table per position first.
    """
    initial, transitions, emissions = (torch.as_tensor(t) for t in (initial, transitions, emissions))
    if initial.dim() != 1 or emissions.dim() != 3 or transitions.dim() != 3:
        raise ValueError("expected initial [h], transitions [T-1, h, h] and emissions [T, V, h]")
    num_states, num_positions = initial.shape[0], emissions.shape[0]
    if emissions.shape[2] != num_states or transitions.shape[1:] != (num_states, num_states):
        raise ValueError(f"state counts disagree: initial {tuple(initial.shape)}, transitions "
                         f"{tuple(transitions.shape)}, emissions {tuple(emissions.shape)}")
    if transitions.shape[0] != num_positions - 1:
        raise ValueError(f"{num_positions} emission tables need {num_positions - 1} transition tables, got "
                         f"{transitions.shape[0]}; expand a homogeneous HMM to one table per position")
    vocab_size = emissions.shape[1]
    leaves = [inputs(t, num_states, vocab_size, emissions[t].T, name=f"emission{t}") for t in range(num_positions)]
    steps: list[SumNodes] = []
    suffix: Node = leaves[-1]
    for t in range(num_positions - 2, -1, -1):
        step = summation(suffix, num_states, transitions[t], name=f"transition{t}")
        steps.append(step)
        suffix = multiply(leaves[t], step, name=f"suffix{t}")
    root = summation(suffix, 1, initial[None], name="initial")
    return HMMCircuit(root, root, steps[::-1], leaves)
