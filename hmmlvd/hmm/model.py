"""The categorical HMM: parameters, queries, EM hooks and safe storage."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ..em.mstep import ParameterGroup, apply_m_step
from ..em.validation import NORMALIZATION_TOLERANCE, check_distributions
from ..io import CONFIG_FILE, WEIGHTS_FILE, load_tensors, read_config, save_tensors, write_config
from . import filtering, inference, sampling
from .complete_data import complete_data_counts
from .config import HMMConfig

MODEL_TYPE = "hmm"
FORMAT_VERSION = 1
# model types whose folders hold an HMM's files (a LanguageModel adds its tokenizer beside them)
HMM_FOLDER_TYPES = (MODEL_TYPE, "language_model")


class HMM:
    """A categorical HMM with position-specific (or tied) transition and emission tables.

    Parameters are probabilities: ``initial`` [h], ``transitions`` [P-1 or 1, h, h]
    (rows sum to 1) and ``emissions`` stored as [P, V, h] so that the row of a token is
    contiguous (entries sum to 1 over V). ``P`` is ``seq_len``, or 1 when homogeneous.

    ``allow_tf32 = True`` (opt-in, CUDA only) runs the forward–backward GEMMs on TF32 tensor cores;
    accumulation and storage stay float32.
    """

    def __init__(self, config: HMMConfig, initial: Tensor, transitions: Tensor, emissions: Tensor):
        self.config = config
        self.allow_tf32 = False      # opt-in: CUDA float32 GEMMs on TF32 tensor cores (fp32 accumulation)
        self.set_parameters({"initial": initial, "transitions": transitions, "emissions": emissions})

    # ----------------------------------------------------------------- construction
    @classmethod
    def random(cls, config: HMMConfig, seed: int = 0, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> "HMM":
        """Parameters drawn uniformly at random and normalised, reproducibly from ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        dims = {"initial": 0, "transitions": -1, "emissions": 1}
        values = {}
        for name, shape in config.parameter_shapes().items():
            dim = dims[name]
            raw = torch.rand(shape, generator=generator, dtype=dtype).add_(1e-3)
            values[name] = raw.div_(raw.sum(dim=dim, keepdim=True)).to(device=device)
        return cls(config, **values)

    @classmethod
    def uniform(cls, config: HMMConfig, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> "HMM":
        """Every distribution uniform (a neutral starting point)."""
        sizes = {"initial": config.num_states, "transitions": config.num_states, "emissions": config.vocab_size}
        return cls(config, **{name: torch.full(shape, 1.0 / sizes[name], device=device, dtype=dtype)
                              for name, shape in config.parameter_shapes().items()})

    @classmethod
    def from_complete_data(cls, tokens: Tensor, states: Tensor, num_states: int, vocab_size: int, *,
                           pseudocount: float = 0.1, seq_len: int | None = None, homogeneous: bool = False,
                           dtype: torch.dtype = torch.float32) -> "HMM":
        """The closed-form maximum-likelihood HMM for observed ``(tokens, states)`` (LVD's Eq. 1 bound)."""
        config = HMMConfig(num_states, vocab_size, seq_len or tokens.shape[1], homogeneous)
        model = cls.uniform(config, device=tokens.device, dtype=dtype)
        counts = complete_data_counts(model, tokens, states)
        model.set_parameters(apply_m_step(model.parameter_groups(), counts, pseudocount=pseudocount, step_size=1.0,
                                          overwrite_counts=True))
        return model

    # ----------------------------------------------------------------- accessors
    @property
    def num_states(self) -> int:
        return self.config.num_states

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    @property
    def device(self) -> torch.device:
        return self.initial.device

    @property
    def dtype(self) -> torch.dtype:
        return self.initial.dtype

    def position_index(self, t: int) -> int:
        """Which stored table serves position ``t`` (0-based)."""
        return 0 if self.config.homogeneous else t

    def transition_matrix(self, t: int) -> Tensor:
        """``[h, h]`` transition probabilities for the step from position t to t+1."""
        return self.transitions[self.position_index(t)]

    def emission_matrix(self, t: int) -> Tensor:
        """``[V, h]`` emission probabilities at position ``t``."""
        return self.emissions[self.position_index(t)]

    def num_parameters(self) -> int:
        return sum(group.values.numel() for group in self.parameter_groups().values())

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "HMM":
        """A copy of the model on ``device`` with ``dtype`` (either may be left unchanged).

        A 16-bit copy (bfloat16, float16) stores every transition matrix column-major: the same ``[h, h]``
        values, laid out so that a row of state probabilities times the matrix (filtering, guidance) runs
        on the CPU's fast 16-bit kernels (``bench/steering_speed.py``)."""
        move = {name: group.values.to(device=device or self.device, dtype=dtype or self.dtype)
                for name, group in self.parameter_groups().items()}
        if move["transitions"].itemsize == 2:
            move["transitions"] = move["transitions"].mT.contiguous().mT
        moved = HMM(self.config, **move)
        moved.allow_tf32 = self.allow_tf32
        return moved

    # ----------------------------------------------------------------- EM protocol
    def parameter_groups(self) -> dict[str, ParameterGroup]:
        return {"initial": ParameterGroup(self.initial, 0),
                "transitions": ParameterGroup(self.transitions, -1),
                "emissions": ParameterGroup(self.emissions, 1)}

    def set_parameters(self, values: dict[str, Tensor]) -> None:
        """Replace the parameters after checking their shapes and that they are floating point."""
        for name, shape in self.config.parameter_shapes().items():
            value = values.get(name)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"HMM {name} must have shape {shape} for {self.config}, got {got}")
            if not value.is_floating_point():
                raise ValueError(f"HMM {name} must be a floating-point tensor, got {value.dtype}")
        self.initial = values["initial"]
        self.transitions = values["transitions"]
        self.emissions = values["emissions"]

    def zero_counts(self) -> dict[str, Tensor]:
        return {name: torch.zeros_like(group.values) for name, group in self.parameter_groups().items()}

    def accumulate_counts(self, tokens: Tensor, counts: dict[str, Tensor]) -> Tensor:
        """Add the forward–backward expected counts of ``tokens`` into ``counts``."""
        tokens = self.check_tokens(tokens)
        with torch.no_grad():
            return inference.forward_backward(self, tokens, counts=counts)

    # ----------------------------------------------------------------- queries
    def check_tokens(self, tokens: Tensor, allow_empty: bool = False, any_length: bool = False) -> Tensor:
        """Validate a token batch [B, L] (ids in [0, V) or -1 for missing) and move it to the model's device.

        ``L`` must be at least 1 unless ``allow_empty``, and at most ``seq_len`` unless ``any_length``."""
        if not isinstance(tokens, Tensor):
            raise ValueError(f"tokens must be a torch.LongTensor [batch, length], got {type(tokens).__name__}")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [batch, length], got shape {tuple(tokens.shape)}; "
                             "use tokens.unsqueeze(0) for a single sequence")
        if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.is_complex():
            raise ValueError(f"tokens must be an integer tensor of token ids, got {tokens.dtype}")
        if tokens.shape[1] == 0 and not allow_empty:
            raise ValueError("tokens must have at least one position")
        if not any_length and not self.config.homogeneous and tokens.shape[1] > self.seq_len:
            raise ValueError(f"sequences of length {tokens.shape[1]} exceed this HMM's seq_len={self.seq_len}; "
                             "cut them into windows (hmmlvd.data) first")
        if tokens.numel():
            low, high = int(tokens.min()), int(tokens.max())
            if low < -1 or high >= self.vocab_size:
                raise ValueError(f"token ids must be in [0, {self.vocab_size}) or -1 for missing; "
                                 f"found values in [{low}, {high}]")
        return tokens.to(device=self.device, dtype=torch.long)

    def forward(self, tokens: Tensor) -> inference.ForwardResult:
        """Filtering distributions p(z_t | x_<=t) [L, B, h] and log p(x_t | x_<t) [L, B]."""
        with torch.no_grad():
            return inference.forward(self, self.check_tokens(tokens))

    def log_likelihood(self, tokens: Tensor) -> Tensor:
        """``log p(x)`` per sequence (float64 [B]); missing tokens are marginalised, so a
        shorter input gives the prefix likelihood."""
        return self.forward(tokens).log_normalizers.sum(dim=0)

    def conditional_log_probs(self, tokens: Tensor) -> Tensor:
        """``log p(x_t | x_<t)`` for every position (float64 [B, L]; 0 where x_t is missing)."""
        return self.forward(tokens).log_normalizers.T

    def posterior_marginals(self, tokens: Tensor) -> Tensor:
        """``p(z_t | x)`` as [B, L, h]."""
        tokens = self.check_tokens(tokens)
        posteriors = torch.empty(*tokens.shape, self.num_states, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            inference.forward_backward(self, tokens, posteriors=posteriors)
        return posteriors

    def check_prefix(self, prefix: Tensor, any_length: bool = False) -> Tensor:
        """Validate a prefix batch [B, k] (ids in [0, V), no missing ids, ``k`` may be 0 and is at most
        ``seq_len`` unless ``any_length``) and move it to the model's device."""
        prefix = self.check_tokens(prefix, allow_empty=True, any_length=any_length)
        if bool((prefix < 0).any()):
            raise ValueError("a prefix must not contain missing tokens (-1); give only observed token ids")
        return prefix

    def state_distribution(self, prefix: Tensor) -> Tensor:
        """``p(z_{k+1} | x_1..x_k)`` [B, h] for a prefix [B, k] with ``k < seq_len`` (k may be 0)."""
        return filtering.state_distribution(self, prefix)

    def next_token_log_probs(self, prefix: Tensor) -> Tensor:
        """``log p(x_{k+1} = v | x_1..x_k)`` as float64 [B, V] for a prefix [B, k]."""
        return filtering.next_token_log_probs(self, self.state_distribution(prefix), prefix.shape[1])

    def sample(self, num_samples: int, length: int | None = None, prefix: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Draw sequences [N, length] (default ``seq_len``); with ``prefix`` [N, k], continue it."""
        return sampling.sample(self, num_samples, length, prefix, generator)

    # ----------------------------------------------------------------- storage
    def save_pretrained(self, directory: str | os.PathLike, *, model_type: str = MODEL_TYPE) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` atomically.

        ``model_type`` is for models built on an HMM that keep its files (``"language_model"``).
        """
        if model_type not in HMM_FOLDER_TYPES:
            raise ValueError(f"model_type must be one of {HMM_FOLDER_TYPES}, got {model_type!r}")
        directory = Path(directory)
        tensors = {name: group.values for name, group in self.parameter_groups().items()}
        save_tensors(directory / WEIGHTS_FILE, tensors, {"model_type": model_type})
        write_config(directory, model_type, FORMAT_VERSION,
                     {"emission_layout": "position,token,state", **self.config.to_dict()})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> "HMM":
        """Load a model written by :meth:`save_pretrained` (or a LanguageModel's folder), checking it thoroughly."""
        directory = Path(directory)
        meta = read_config(directory, HMM_FOLDER_TYPES, FORMAT_VERSION)
        try:
            config = HMMConfig.from_dict(meta)
        except TypeError as error:
            raise ValueError(f"{directory / CONFIG_FILE} has an invalid HMM config: {error}") from None
        tensors, _ = load_tensors(directory / WEIGHTS_FILE, device=device)
        try:
            model = cls(config, **{k: tensors.get(k) for k in ("initial", "transitions", "emissions")})
        except ValueError as error:
            raise ValueError(f"{directory / WEIGHTS_FILE} does not match {directory / CONFIG_FILE}: {error}") from None
        model.check_normalized(source=str(directory))
        return model.to(dtype=dtype) if dtype is not None else model

    def check_normalized(self, tolerance: float = NORMALIZATION_TOLERANCE, source: str = "this HMM") -> None:
        """Raise ValueError unless every distribution is finite, non-negative and sums to 1."""
        check_distributions(self.parameter_groups(), source, tolerance)

    def __repr__(self) -> str:
        c = self.config
        kind = "homogeneous" if c.homogeneous else "non-homogeneous"
        return (f"HMM({kind}, num_states={c.num_states}, vocab_size={c.vocab_size}, seq_len={c.seq_len}, "
                f"device={self.device}, dtype={self.dtype})")
