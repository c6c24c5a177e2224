"""Configuration of a categorical HMM, validated on construction."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class HMMConfig:
    """Shape of an HMM.

    ``homogeneous=False`` (the default) gives every position its own transition and
    emission tables; ``homogeneous=True`` ties them over positions and accepts
    sequences of any length.
    """

    num_states: int
    vocab_size: int
    seq_len: int = 32
    homogeneous: bool = False

    def __post_init__(self) -> None:
        for name in ("num_states", "vocab_size", "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.homogeneous, bool):
            raise ValueError(f"homogeneous must be True or False, got {self.homogeneous!r}")

    @property
    def num_positions(self) -> int:
        """How many distinct transition/emission tables are stored (1 when homogeneous)."""
        return 1 if self.homogeneous else self.seq_len

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of ``initial``, ``transitions`` and ``emissions`` ([positions, V, h])."""
        h, v, p = self.num_states, self.vocab_size, self.num_positions
        return {"initial": (h,), "transitions": (1 if self.homogeneous else p - 1, h, h), "emissions": (p, v, h)}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "HMMConfig":
        known = {"num_states", "vocab_size", "seq_len", "homogeneous"}
        if not isinstance(values, dict) or not {"num_states", "vocab_size"} <= set(values):
            raise ValueError(f"an HMM config needs num_states and vocab_size, got {values!r}")
        return cls(**{k: v for k, v in values.items() if k in known})
