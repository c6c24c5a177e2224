"""The optional C kernel of the tree passes (``tree_kernel.c``): built on first use, loaded with ``ctypes``.

:func:`.tree_pass.upward` and :func:`.tree_pass.downward` call :func:`upward` / :func:`downward` here for CPU
float32 and float64 passes with H ≤ :data:`MAX_HIDDEN` when :func:`available` is true; the kernel fuses each
node's H×H products and scaling over a block of columns, so the node loop runs in the core's caches,
and for leaves given as table rows it reads them from their table and adds their counts itself.

The source is compiled with the C compiler named by ``$CC`` (else ``cc`` or ``gcc`` on the PATH) and
:data:`COMPILE_FLAGS` (``-O3 -march=native -fopenmp``, and reassociation, so that sums over H become vector
reductions; no approximate reciprocals, NaNs and infinities kept), once per source, flags, compiler, CPU and
machine, into ``$HMMLVD_CACHE/kernels`` (default ``~/.cache/hmmlvd/kernels``); the library is written under a
temporary name and renamed, so processes racing to build it are safe. ``HMMLVD_KERNELS=0`` turns the kernel off;
without a compiler, or when the build fails (one warning), everything runs on the torch code.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from ..io import cache_folder

SOURCE = Path(__file__).with_name("tree_kernel.c")
COMPILE_FLAGS = ("-std=c99", "-O3", "-march=native", "-ffp-contract=fast", "-fassociative-math", "-fno-signed-zeros",
                 "-fno-trapping-math", "-fopenmp", "-fPIC")
PRECISIONS = {torch.float32: ("float", "f32"), torch.float64: ("double", "f64")}
MAX_HIDDEN = 64     # wider trees run torch's batched GEMMs: 2.5-7x faster at H = 128 and 256, even at 64

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False


def find_compiler() -> str | None:
    """``$CC``, else ``cc`` or ``gcc`` on the PATH; None without one."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cpu_flags() -> str:
    """The CPU's feature flags (``-march=native`` depends on them), empty where /proc/cpuinfo is missing."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return ""


def library_path(compiler: str) -> Path:
    """The cached library's path, named by a hash of the source, flags, compiler version, CPU and machine."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(b"\0".join(part.encode() for part in (
        SOURCE.read_text(), " ".join(COMPILE_FLAGS), version, _cpu_flags(), platform.machine()))).hexdigest()
    return cache_folder("kernels") / f"tree_kernel-{key[:20]}.so"


def build(compiler: str, target: Path) -> None:
    """Compile the source once per precision and link both into ``target`` (written atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as folder:
        objects = []
        for real, suffix in PRECISIONS.values():
            objects.append(os.path.join(folder, f"{suffix}.o"))
            subprocess.run([compiler, *COMPILE_FLAGS, f"-DREAL={real}", f"-DSUFFIX={suffix}", "-c", str(SOURCE),
                            "-o", objects[-1]], capture_output=True, text=True, check=True)
        library = os.path.join(folder, target.name)
        subprocess.run([compiler, "-shared", "-fopenmp", *objects, "-o", library], capture_output=True, text=True,
                       check=True)
        os.replace(library, target)


def _declare(library: ctypes.CDLL) -> None:
    pointer, integer = ctypes.c_void_p, ctypes.c_int64
    for _, suffix in PRECISIONS.values():
        upward_function = getattr(library, f"hmmlvd_upward_{suffix}")
        upward_function.argtypes = [pointer] * 14 + [integer, ctypes.c_int]
        upward_function.restype = ctypes.c_int
        downward_function = getattr(library, f"hmmlvd_downward_{suffix}")
        downward_function.argtypes = [pointer] * 15 + [integer, ctypes.c_int]
        downward_function.restype = ctypes.c_int


def load() -> ctypes.CDLL | None:
    """The kernel library, built into the cache first if needed; None (after one warning if a build failed)."""
    global _library, _tried
    with _lock:
        if _tried:
            return _library
        _tried = True
        compiler = find_compiler()
        if compiler is None or not SOURCE.exists():
            return None
        try:
            path = library_path(compiler)
            if not path.exists():
                build(compiler, path)
            library = ctypes.CDLL(str(path))
            _declare(library)
        except (OSError, subprocess.CalledProcessError, AttributeError) as error:
            detail = getattr(error, "stderr", "") or ""
            warnings.warn(f"hmmlvd: the tree-pass C kernel could not be built or loaded with {compiler!r} ({error}"
                          f"{': ' + detail.strip()[-500:] if detail else ''}); using the torch code", RuntimeWarning)
            return None
        _library = library
        return library


def available() -> bool:
    """Whether the kernel can be used: not turned off by ``HMMLVD_KERNELS=0`` and built and loaded."""
    return os.environ.get("HMMLVD_KERNELS", "1") != "0" and load() is not None


def supports(values: Tensor, *parameters: Tensor) -> bool:
    """Whether the kernel runs a pass over ``values`` [G, D, M, H] with ``parameters``: every tensor on the CPU in
    ``values``' dtype (float32 or float64) and none recorded by autograd, unit stride over H, G ≥ 1 (one tree, such
    as the latent tree, splits its columns over the threads), H at most :data:`MAX_HIDDEN`, and the kernel
    available."""
    tensors = (values, *parameters)
    return (all(t.device.type == "cpu" and t.dtype == values.dtype and not t.requires_grad for t in tensors)
            and values.dtype in PRECISIONS and values.shape[0] >= 1 and values.shape[3] <= MAX_HIDDEN
            and values.stride(3) == 1 and available())


@lru_cache(maxsize=64)
def _tree_arrays(order: tuple[int, ...], parents: tuple[int, ...], rows: tuple[int, ...]):
    """The plan's order, parents and rows as int64 C arrays (kept alive by the cache)."""
    return tuple((ctypes.c_int64 * max(len(values), 1))(*values) for values in (order, parents, rows))


def _pointer(tensor: Tensor | None, dtype: torch.dtype, name: str) -> int | None:
    """``tensor``'s address after checking it is a contiguous CPU tensor of ``dtype``; None for None."""
    if tensor is None:
        return None
    if tensor.dtype != dtype or tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError(f"{name} must be a contiguous CPU {dtype} tensor, got {tensor.dtype} on {tensor.device}")
    return tensor.data_ptr()


def _leaf_arguments(leaves, dtype: torch.dtype) -> dict[str, object]:
    """The C arguments describing ``leaves`` (a :class:`.tree_pass.Leaves` or None): index, trees and shape."""
    if leaves is None:
        return {"leaf_index": None, "leaf_trees": None, "leaf_shape": (ctypes.c_int64 * 3)(0, 1, 0)}
    table = leaves.table
    return {"leaf_index": _pointer(leaves.index, torch.int64, "leaf index"),
            "leaf_trees": _pointer(leaves.trees, torch.int64, "leaf trees"),
            "leaf_shape": (ctypes.c_int64 * 3)(table.shape[2], leaves.index.shape[0], table.shape[0])}


def _run(name: str, plan, values: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype,
         tensors: dict[str, object]) -> None:
    """Call ``hmmlvd_{name}`` on ``values`` of ``shape`` [G, D, M, H] (None: kept by no one) and the named
    ``tensors`` (in the C argument order; ctypes values are passed as they are) of ``plan``."""
    strides = (0, 0, 0, 1) if values is None else values.stride()
    order, parents, rows = _tree_arrays(plan.order, plan.parents, plan.rows)
    function = getattr(load(), f"hmmlvd_{name}_{PRECISIONS[dtype][1]}")
    pointers = [_pointer(value, dtype, key) if isinstance(value, Tensor) else value for key, value in tensors.items()]
    status = function((ctypes.c_int64 * 4)(*shape), None if values is None else values.data_ptr(),
                      (ctypes.c_int64 * 4)(*strides), *pointers, order, parents, rows, plan.root,
                      torch.get_num_threads())
    if status == -1:
        raise MemoryError("the tree-pass kernel could not allocate its scratch memory")
    if status != 0:
        raise ValueError(f"the tree-pass kernel refused its arguments (status {status})")


def upward(plan, values: Tensor | None, log_scales: Tensor, transitions: Tensor, root_weights: Tensor,
           root_sums: Tensor, leaves=None) -> None:
    """The upward pass of :func:`.tree_pass.upward` in C: scales ``values`` [G, D, M, H] (any strides, unit
    over H) in place and writes ``log_scales`` [G, M] (the sum of the logs of every node's scale: a non-root
    node's message's largest entry, the root's sum) and ``root_sums`` [G, M]; ``transitions`` [G, D-1, H, H],
    ``root_weights`` [G, H]. No messages are written: the message node v sent is
    ``values[:, v] @ transitions[:, row]ᵀ``. With ``leaves`` (:class:`.tree_pass.Leaves`), the kernel reads the
    leaves from their table itself (whatever ``values`` held is overwritten); with leaves and ``values`` None, no
    values are kept (each block of them lives in cache while the pass runs over it), only the scales."""
    if values is None and leaves is None:
        raise ValueError("an upward pass that keeps no values needs its leaves as table rows (Leaves)")
    groups, columns = log_scales.shape
    shape = tuple(values.shape) if values is not None else (groups, plan.num_nodes, columns, root_weights.shape[1])
    _run("upward", plan, values, shape, log_scales.dtype,
         {"log_scales": log_scales, "transitions": transitions, "root_weights": root_weights,
          "root_sums": root_sums, "leaf_table": None if leaves is None else leaves.table,
          **_leaf_arguments(leaves, log_scales.dtype)})


def downward(plan, values: Tensor, transitions: Tensor, root_weights: Tensor, root_scales: Tensor,
             transition_counts: Tensor | None, root_counts: Tensor | None, leaves=None,
             leaf_counts: Tensor | None = None) -> None:
    """The downward pass of :func:`.tree_pass.downward` in C: turns ``values`` [G, D, M, H] of :func:`upward` into
    flows in place (recomputing the messages from them), given ``root_scales`` [G, M] (the root flows over the
    root sums); adds the expected counts into ``transition_counts`` [G, D-1, H, H] and ``root_counts`` [G, H]
    (contiguous) when given, and every observed leaf's flow into ``leaf_counts`` (shaped like ``leaves.table``,
    whose ``trees`` must be None) when given."""
    _run("downward", plan, values, tuple(values.shape), values.dtype,
         {"transitions": transitions, "root_weights": root_weights, "root_scales": root_scales,
          "transition_counts": transition_counts, "root_counts": root_counts, "leaf_counts": leaf_counts,
          **_leaf_arguments(leaves, values.dtype)})
