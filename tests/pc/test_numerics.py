"""``pc.numerics.exp_normal`` against ``torch.exp``: equal wherever the result is at least e · tiny, 0 below it,
never subnormal, NaN kept; and the circuits that use it still let a NaN parameter show."""
import math

import pytest
import torch

from hmmlvd import pc
from hmmlvd.pc.numerics import exp_normal


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_exp_above_the_floor_and_zero_below(dtype):
    tiny = torch.finfo(dtype).tiny
    bottom = math.log(tiny)
    arguments = torch.cat([torch.linspace(3 * bottom, 0.0, 20001, dtype=dtype),
                           torch.tensor([-math.inf, bottom, bottom + 1.0, bottom + 1.001], dtype=dtype)])
    got, reference = exp_normal(arguments), torch.exp(arguments)
    kept = reference >= math.e * tiny * (1 + 1e-6)
    assert torch.equal(got[kept], reference[kept])
    assert bool((got[~kept] == 0).all()) and bool(kept.any()) and bool((~kept).any())
    assert not bool(((got > 0) & (got < tiny)).any())                              # no subnormal result
    assert got[-4:-2].tolist() == [0.0, 0.0] and got[-1] > 0                        # -inf, log(tiny) -> 0


def test_nan_stays_nan_and_the_input_is_left_alone():
    arguments = torch.tensor([math.nan, -1.0, 0.0, -math.inf])
    copy = arguments.clone()
    got = exp_normal(arguments)
    assert bool(got[0].isnan())
    torch.testing.assert_close(got[1:], torch.tensor([math.exp(-1.0), 1.0, 0.0]))
    assert bool(arguments[0].isnan()) and torch.equal(arguments[1:], copy[1:])


def test_a_nan_parameter_still_shows_in_the_likelihood():
    """A circuit whose sum weights hold a NaN gives NaN log-likelihoods, as it did with ``torch.exp``."""
    nodes = pc.structures.hclt(torch.randint(0, 2, (200, 6), generator=torch.Generator().manual_seed(0)), 3, 2)
    circuit = pc.Circuit(nodes, seed=0)
    x = torch.randint(0, 2, (8, 6), generator=torch.Generator().manual_seed(1))
    assert bool(torch.isfinite(circuit.log_likelihood(x)).all())
    name, group = next((n, g) for n, g in circuit.parameter_groups().items() if g.values.dim() == 3)
    values = group.values.clone()
    values[0, 0, 0] = math.nan
    circuit.set_parameters({name: values})
    assert bool(torch.isnan(circuit.log_likelihood(x)).any())
