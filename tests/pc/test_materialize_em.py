"""Materialisation: the fixed indicator inputs [Z_S = k] stay fixed, bit for bit, through EM."""
import torch

from hmmlvd import em, pc
from hmmlvd.pc.materialize import materialize
from hmmlvd.pc.structures import hclt


def _data(num_examples=300, seed=0):
    generator = torch.Generator().manual_seed(seed)
    first = (torch.rand(num_examples, generator=generator) < 0.4).long()
    flips = (torch.rand(num_examples, 4, generator=generator) < 0.2).long()
    return torch.cat([first[:, None], first[:, None] ^ flips], dim=1)


def test_indicator_units_stay_fixed_through_em():
    data = _data()
    root = hclt(data, num_latents=3)
    scopes = [n.scope for n in pc.topological_order(root) if isinstance(n, pc.SumNodes) and n is not root][:2]
    result = materialize(root, scopes)
    indicators = [n for n in pc.topological_order(result.root)
                  if isinstance(n, pc.InputNodes) and n.variable in result.latent_variables]
    assert indicators and all(n.fixed for n in indicators)
    before = [n.params.detach().clone() for n in indicators]
    others = [n for n in pc.topological_order(result.root) if isinstance(n, pc.InputNodes) and not n.fixed]
    joint = pc.Circuit(result.root, seed=3, dtype=torch.float64)
    joint.update_nodes()
    others_before = [n.params.detach().clone() for n in others]
    z = torch.stack([data[:, 1] * 2, data[:, 3] + data[:, 4]], dim=1).clamp_max(2)
    augmented = result.augment(data, z)
    em.fit(joint, augmented, em.LinearAnneal(0.8, 0.3, epochs=2), batch_size=64, pseudocount=1.0, progress=False)
    em.fit(joint, augmented, em.Constant(1.0, 2), full_batch=True, pseudocount=1.0, progress=False)
    joint.update_nodes()
    for node, params in zip(indicators, before):
        assert torch.equal(node.params, params), node.name            # bit for bit
        assert torch.equal(params.sum(-1), torch.ones(params.shape[:-1], dtype=params.dtype))   # still one-hot
    # the observed inputs did move (so the check above is not vacuous)
    assert any(not torch.allclose(node.params.double(), p.double()) for node, p in zip(others, others_before))
