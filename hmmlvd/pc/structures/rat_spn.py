"""RAT-SPNs (Peharz et al., 2020): random binary region graphs with sum/product layers."""
from __future__ import annotations

import torch

from ..nodes import Node, inputs, multiply, outer_edges, summation


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def rat_spn(num_variables: int, num_categories: int = 2, *, depth: int = 2, num_repetitions: int = 4,
            num_sums: int = 8, num_input_units: int = 8, seed: int = 0) -> Node:
    """A RAT-SPN over variables ``0..num_variables-1``.

    Each repetition splits a random permutation of the variables into two halves, ``depth`` times
    (regions of one variable are not split further). Leaf regions are fully factorised:
    ``num_input_units`` element-wise products of categorical inputs. Each split is the cartesian
    product of its two child regions; inner regions hold ``num_sums`` sum units and the root mixes
    the top splits of all repetitions.
    """
    _check_positive(num_variables=num_variables, num_categories=num_categories, depth=depth,
                    num_repetitions=num_repetitions, num_sums=num_sums, num_input_units=num_input_units)
    generator = torch.Generator().manual_seed(seed)

    def region(variables: list[int], level: int, repetition: int) -> Node:
        if level == depth or len(variables) == 1:
            leaves = [inputs(v, num_input_units, num_categories, name=f"x{v}.r{repetition}") for v in variables]
            return multiply(*leaves, name=f"leaf{variables[:3]}.r{repetition}") if len(leaves) > 1 else leaves[0]
        half = len(variables) // 2
        return summation(split(variables[:half], variables[half:], level, repetition), num_sums)

    def split(left_vars: list[int], right_vars: list[int], level: int, repetition: int) -> Node:
        left, right = region(left_vars, level + 1, repetition), region(right_vars, level + 1, repetition)
        return multiply(left, right, edges=outer_edges(left.num_units, right.num_units))

    top = []
    for repetition in range(num_repetitions):
        order = torch.randperm(num_variables, generator=generator).tolist()
        if num_variables == 1:
            top.append(region(order, depth, repetition))
        else:
            half = num_variables // 2
            top.append(split(order[:half], order[half:], 0, repetition))
    return summation(top, 1, name="root")
