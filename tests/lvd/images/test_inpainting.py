"""PatchImageModel.inpaint against the exact conditional, on 4×4 binary images where the observed pixels strongly
determine the hidden ones, so a sampler that ignored the mask (or the patch geometry) would fail by far.

The circuit: 2×2 patches (P = 4, D = 4, value chains of 3 levels), k = 2 clusters tied across patches, a latent
chain over the four patches that keeps its state with probability 0.97, and patch models whose pixels equal the
cluster id with probability 0.85 or 0.95 (by hidden state). Every completion of the hidden pixels is enumerated
and scored with ``log_likelihood`` (whose exactness test_patch_circuit.py checks against brute force); samples are
compared with Pearson's χ² at p = 0.001, cells with an expected count below 5 pooled.
"""
import itertools

import pytest
import torch
from scipy.stats import chi2

from hmmlvd import pc
from hmmlvd.lvd.images.model import PatchImageModel
from hmmlvd.lvd.images.pictures import region_mask

SAMPLES = 4000


def two_tone_model() -> PatchImageModel:
    config = pc.PatchCircuitConfig(num_patches=4, values_per_patch=4, num_clusters=2, hidden_size=2,
                                   latent_hidden_size=2, num_categories=2, tied=True)
    circuit = pc.PatchCircuit(config, seed=1, dtype=torch.float64)
    stay = torch.tensor([[0.97, 0.03], [0.03, 0.97]], dtype=torch.float64)
    emissions = torch.empty(1, 2, 4, 2, 2, dtype=torch.float64)          # [stack, cluster, value, category, hidden]
    for cluster in range(2):
        for hidden, right in enumerate((0.85, 0.95)):
            emissions[0, cluster, :, cluster, hidden] = right
            emissions[0, cluster, :, 1 - cluster, hidden] = 1 - right
    circuit.set_parameters({"latent_root": torch.tensor([[0.5, 0.5]], dtype=torch.float64),
                            "latent_transitions": stay.expand(1, 3, 2, 2).contiguous(),
                            "latent_emissions": stay.expand(4, 2, 2).contiguous(),
                            "patch_emissions": emissions})
    return PatchImageModel(circuit, (1, 4, 4), 2)


def exact_conditional(model: PatchImageModel, image: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """p(hidden pixels | the others) over every completion, the hidden pixels in row-major order, first most
    significant."""
    completions = torch.tensor(list(itertools.product(range(2), repeat=int(hidden.sum()))), dtype=torch.uint8)
    images = image.expand(len(completions), -1, -1, -1).clone()
    images[:, 0, hidden] = completions
    joint = model.log_likelihood(images).exp()
    return joint / joint.sum()


def chi_square_test(codes: torch.Tensor, probabilities: torch.Tensor) -> tuple[float, float]:
    observed = torch.bincount(codes, minlength=len(probabilities)).double()
    expected = probabilities * len(codes)
    small = expected < 5
    observed = torch.cat([observed[~small], observed[small].sum()[None]])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    statistic = (((observed - expected) ** 2) / expected.clamp_min(1e-300)).sum().item()
    return statistic, float(chi2.ppf(0.999, int((expected > 0).sum()) - 1))


@pytest.mark.parametrize("top, mask", [(0, "bottom"), (1, "bottom"), (0, "centre"), (1, "right")])
def test_inpainting_follows_the_observed_pixels_exactly(top, mask):
    model = two_tone_model()
    hidden = region_mask(mask, 4, 4)
    image = torch.full((1, 1, 4, 4), 1 - top, dtype=torch.uint8)
    image[:, :, :2] = top                        # the top half says "top", the rest the other tone
    if mask == "bottom":
        image[:, :, 2:] = 1 - top                # hidden anyway: its value must not matter
    filled = model.inpaint(image.expand(SAMPLES, -1, -1, -1), hidden, seed=4)
    assert torch.equal(filled[:, :, ~hidden], image.expand(SAMPLES, -1, -1, -1)[:, :, ~hidden])
    values = filled[:, 0, hidden].long()                                  # [N, hidden pixels], row-major
    if mask == "bottom":                         # the mask's effect is visible: the hidden half follows the top
        assert abs(values.double().mean().item() - top) < 0.25
    codes = values @ (2 ** torch.arange(values.shape[1] - 1, -1, -1))
    statistic, critical = chi_square_test(codes, exact_conditional(model, image, hidden))
    assert statistic < critical, f"top {top}, {mask}: χ² {statistic:.1f} >= {critical:.1f}"


def test_unconditional_samples_match_the_exact_image_distribution():
    model = two_tone_model()
    everything = torch.tensor(list(itertools.product(range(2), repeat=16)), dtype=torch.uint8).view(-1, 1, 4, 4)
    exact = model.log_likelihood(everything).exp()
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    samples = model.sample(SAMPLES, seed=2)
    assert samples.shape == (SAMPLES, 1, 4, 4) and samples.dtype == torch.uint8
    codes = samples.view(SAMPLES, 16).long() @ (2 ** torch.arange(15, -1, -1))
    statistic, critical = chi_square_test(codes, exact)
    assert statistic < critical, f"χ² {statistic:.1f} >= {critical:.1f}"
