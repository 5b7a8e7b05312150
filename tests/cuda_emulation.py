"""CUDA on a machine without a GPU: run a CUDA code path for real and fail on every CPU/CUDA mix.

Why not torch's ``FakeTensorMode`` alone. A fake tensor carries a device and a shape but no
values, and that is not enough for a training iteration:

- the autograd engine needs a real CUDA context for any tensor that claims CUDA (it stashes the
  CUDA streams of the graph, pytorch/pytorch#92627): ``backward()`` of a fake CUDA tensor raises
  ``hasPrimaryContext expects a valid device index`` on a machine without a GPU;
- data-dependent code has nothing to read: ``int(t.max())``, ``nonzero()``, ``unique()``,
  ``.tolist()``, all used by the batched augmentation that PGPS-Performance runs on the GPU.

``FakeTensorMode`` is still used where it is exact (``tests/test_cuda.py``: the networks' forward
and loss under real CUDA autocast). For whole iterations, :class:`EmulatedCuda` keeps every value on
the CPU and tracks, per storage, whether a tensor "is on the GPU":

- ``.to("cuda")``, ``.cuda()``, ``device="cuda"`` in any factory and ``Module.to("cuda")`` create
  CPU tensors whose storage is marked CUDA; ``.device``/``.is_cuda``/``get_device()`` report
  ``cuda:0`` for them, ``.cpu()``/``.to("cpu")`` copy to an unmarked storage, and ``.numpy()`` /
  ``np.asarray`` refuse a CUDA tensor as torch does;
- every aten operator is checked with the rule torch applies on a GPU (and ``FakeTensor`` copies):
  all tensor arguments on one device, except CPU tensors with zero dimensions (scalars) and the
  operators that move data between devices (``copy_``, ``_to_copy``, ``index``/``index_put`` with
  CPU indices); a mix raises :class:`DeviceMismatchError`. Results are marked with the device the
  operator ran on, so views, in-place results, saved tensors and gradients follow their storage.
- the marks live on storages, not tensor objects, because autograd unpacks saved tensors as new
  tensor objects that share the storage.

Host synchronisations are counted (``emu.syncs``, a :class:`collections.Counter` by kind; ``emu.counting()``
gives the counts of a block): every operation on an emulated CUDA tensor that makes the host wait for the
device on a real GPU, by the rule torch's CUDA kernels follow. Kinds (:data:`SYNC_KINDS`): ``item``,
``int``, ``float``, ``bool``, ``index``, ``format`` (a scalar read: ``aten._local_scalar_dense``, named by the
Python call that asked for it), ``tolist``, ``nonzero`` (``nonzero``, ``argwhere``, one-argument ``where``),
``mask_index`` (``x[mask]`` with a bool/uint8 tensor, ``masked_select``), ``mask_assign`` (``x[mask] = v``,
except where torch turns it into ``masked_fill_``: one mask on ``x``'s device and a one-element CPU ``v``,
e.g. a Python number), ``unique``, ``bincount``, ``repeat_interleave`` (tensor repeats without
``output_size``), ``equal``, ``d2h`` (``.cpu()``, ``.to("cpu")``, ``.numpy()``, a copy into a CPU tensor)
and ``h2d``: a host-to-device copy that blocks (``.to("cuda")``/``.cuda()``/``copy_`` of a CPU tensor
unless it is ``non_blocking`` from pinned memory, ``torch.tensor(data, device="cuda")``, CPU index tensors
of a CUDA tensor). ``emu.transfers`` counts every copy between host and device (``h2d``, ``d2h``), also the
non-blocking pinned ones that do not sync.

What it does not emulate: CUDA's numerics and kernels (everything computes on the CPU), streams,
pinned memory (``pin_memory()`` returns a copy), and autocast to float16 on CUDA (the harness uses
CPU autocast instead; ``FakeTensorMode`` covers CUDA autocast for the forward pass).
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten
CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


class DeviceMismatchError(RuntimeError):
    """An operator received tensors on the CPU and on the (emulated) GPU."""


# Operators that take tensors on several devices (torch's own list, as in FakeTensor).
_MOVES_DATA = {
    aten.copy_.default, aten.copy.default, aten._to_copy.default, aten.slice_scatter.default,
    aten.diagonal_scatter.default, aten._unsafe_index_put.default, aten._foreach_copy.default,
    aten._foreach_copy_.default, aten.lift_fresh.default, aten.set_.source_Storage,
    aten.set_.source_Storage_storage_offset, aten.set_.source_Tensor,
}  # fmt: skip
_INDEX_ON_SELF = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}

SYNC_KINDS = (
    "item", "int", "float", "bool", "index", "format", "tolist", "nonzero", "mask_index", "mask_assign", "unique",
    "bincount", "repeat_interleave", "equal", "d2h", "h2d",
)  # fmt: skip
"""Kinds of host synchronisation :class:`EmulatedCuda` counts (see the module docstring)."""
# aten operators whose CUDA kernels wait for the device (the size of their result depends on the values)
_SYNC_OPS = {
    aten.nonzero.default: "nonzero", aten.masked_select.default: "mask_index", aten._unique.default: "unique",
    aten._unique2.default: "unique", aten.unique_dim.default: "unique", aten.unique_consecutive.default: "unique",
    aten.unique_dim_consecutive.default: "unique", aten.bincount.default: "bincount", aten.equal.default: "equal",
}  # fmt: skip
# Python calls that read a scalar (aten._local_scalar_dense) and the kind they are counted as
_SCALAR_READS = {
    "__int__": "int", "__float__": "float", "__bool__": "bool", "__index__": "index", "__format__": "format",
}  # fmt: skip


def _is_cuda_device(device: Any) -> bool:
    if device is None:
        return False
    if isinstance(device, int):
        return True  # an index means a CUDA device
    return torch.device(device).type == "cuda"


class _State:
    def __init__(self) -> None:
        self.cuda_storages: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.origins: WeakIdKeyDictionary = WeakIdKeyDictionary()  # storage -> the operator that made it (messages)
        self.ambient: list[torch.device] = []  # device of the Python-level call being run (innermost last)
        # PGPS_CUDA_EMULATION_TRACE=N: the last N operators go into mismatch messages (debugging)
        self.trace: collections.deque = collections.deque(maxlen=int(os.environ.get("PGPS_CUDA_EMULATION_TRACE", 0)))
        self.pinned: WeakIdKeyDictionary = WeakIdKeyDictionary()  # storages made by pin_memory()
        self.syncs: collections.Counter = collections.Counter()
        self.transfers: collections.Counter = collections.Counter()
        self.calls: list[str] = []  # names of the Python-level calls being run (innermost last)
        self.counted = 0  # > 0 inside a Python-level call already counted (its aten operators are not)

    def is_cuda(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and self.device_of(t).type == "cuda"

    def count_sync(self, kind: str) -> None:
        if not self.counted:
            self.syncs[kind] += 1
            if kind in ("h2d", "d2h"):
                self.transfers[kind] += 1

    def count_h2d(self, source: torch.Tensor, non_blocking: bool) -> None:
        """A copy of the CPU tensor ``source`` to the device: a sync unless non-blocking from pinned memory."""
        if self.counted:
            return
        if non_blocking and source.untyped_storage() in self.pinned:
            self.transfers["h2d"] += 1
        else:
            self.count_sync("h2d")

    def device_of(self, t: torch.Tensor) -> torch.device:
        if t.device.type == "meta" or t.is_sparse:
            return t.device
        return CUDA if t.untyped_storage() in self.cuda_storages else CPU

    def origin(self, t: torch.Tensor) -> str:
        return self.origins.get(t.untyped_storage(), "a tensor made before the emulation or outside torch")

    def mark(self, tree: Any, device: torch.device, origin: str | None = None) -> None:
        for t in pytree.tree_leaves(tree):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                if origin is not None:
                    self.origins.setdefault(t.untyped_storage(), origin)
                if device.type == "cuda":
                    self.cuda_storages[t.untyped_storage()] = True
                else:
                    self.cuda_storages.pop(t.untyped_storage(), None)


class _Dispatch(TorchDispatchMode):
    """Checks every aten operator's devices and marks its results."""

    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def _common_device(self, func, tensors: list[torch.Tensor]) -> torch.device | None:
        common, scalar_only = None, False
        for t in tensors:
            device = self.state.device_of(t)
            cpu_scalar = device.type == "cpu" and t.dim() == 0
            if common is None:
                common, scalar_only = device, cpu_scalar
            elif device != common:
                if cpu_scalar:
                    continue
                if scalar_only:
                    common, scalar_only = device, False
                    continue
                made = "; ".join(
                    f"{tuple(x.shape)} on {self.state.device_of(x)} from {self.state.origin(x)}" for x in tensors
                )
                trace = "".join(f"\n  {op}" for op in self.state.trace)
                raise DeviceMismatchError(
                    f"{func}: expected all tensors on one device, found {common} and {device} ({made}){trace}"
                )
            elif scalar_only and not cpu_scalar:
                scalar_only = False
        return common

    def _count(self, func, args, kwargs, tensors: list[torch.Tensor]) -> None:
        """Count the host synchronisation (or host-device copy) ``func`` makes on a GPU, if any."""
        state = self.state
        if func is aten._local_scalar_dense.default:
            if state.is_cuda(tensors[0]):
                state.count_sync(next((_SCALAR_READS[c] for c in state.calls[-1:] if c in _SCALAR_READS), "item"))
        elif func in _SYNC_OPS:
            if state.is_cuda(tensors[0]):
                state.count_sync(_SYNC_OPS[func])
        elif func is aten.repeat_interleave.Tensor:
            if state.is_cuda(tensors[0]) and kwargs.get("output_size", args[1] if len(args) > 1 else None) is None:
                state.count_sync("repeat_interleave")
        elif func is aten.copy_.default:
            dest, source = args[0], args[1]
            if state.is_cuda(dest) and not state.is_cuda(source):
                state.count_h2d(source, bool(args[2] if len(args) > 2 else kwargs.get("non_blocking", False)))
            elif state.is_cuda(source) and not state.is_cuda(dest):
                state.count_sync("d2h")
        elif func in _INDEX_ON_SELF and state.is_cuda(args[0]):
            indices = [i for i in args[1] if i is not None]
            masks = [i for i in indices if i.dtype in (torch.bool, torch.uint8)]
            for index in indices:
                if not state.is_cuda(index) and index.dim() > 0:  # torch copies CPU indices to the device
                    state.count_h2d(index, False)
            if masks and func is aten.index.Tensor:
                state.count_sync("mask_index")
            elif masks:
                value = args[2] if len(args) > 2 else kwargs["values"]
                # torch's canDispatchToMaskedFill: one mask on self's device, a one-element CPU value
                fills = len(masks) == len(indices) == 1 and state.is_cuda(masks[0]) and value.numel() == 1
                if not (fills and not state.is_cuda(value)):
                    state.count_sync("mask_assign")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in pytree.arg_tree_leaves(*args, **kwargs) if isinstance(a, torch.Tensor)]
        if self.state.trace.maxlen:
            self.state.trace.append(f"{func} {[(tuple(t.shape), str(self.state.device_of(t))) for t in tensors]}")
        if tensors and not self.state.counted:
            self._count(func, args, kwargs, tensors)
        if func in _MOVES_DATA:  # the result stays on its first argument's device (the destination of a copy);
            # a change of device asked for from Python (.to, .cuda, device=) is applied by _Functions around the call
            out = func(*args, **kwargs)
            if tensors:
                self.state.mark(out, self.state.device_of(tensors[0]), str(func))
            return out
        if func in _INDEX_ON_SELF:
            device = self.state.device_of(tensors[0])
            if func is not aten.index.Tensor:  # the values must be on self's device (or a scalar)
                values = args[2] if len(args) > 2 else kwargs["values"]
                self._common_device(func, [tensors[0], values])
        elif tensors:
            device = self._common_device(func, tensors)
        else:  # a factory called by torch itself (a composite op, autograd): the device of its caller
            device = self.state.ambient[-1] if self.state.ambient else CPU
        out = func(*args, **kwargs)
        self.state.mark(out, device, str(func))
        return out


class _Functions(TorchFunctionMode):
    """Python-level view: ``.device`` and friends, device arguments, host conversions."""

    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        state = self.state
        name = getattr(func, "__name__", "")
        owner = getattr(func, "__self__", None)
        if name == "__get__" and owner in (torch.Tensor.device, torch.Tensor.is_cuda, torch.Tensor.is_cpu):
            device = state.device_of(args[0])
            if owner is torch.Tensor.device:
                return device
            return (device.type == "cuda") if owner is torch.Tensor.is_cuda else (device.type == "cpu")
        if func is torch.Tensor.get_device:
            return 0 if state.device_of(args[0]).type == "cuda" else -1
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and state.device_of(args[0]).type == "cuda":
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. "
                "Use Tensor.cpu() to copy the tensor to host memory first."
            )
        if func is torch.Tensor.pin_memory:
            out = args[0].clone()  # page-locked host memory needs a CUDA driver; it is host memory all the same
            state.pinned[out.untyped_storage()] = True
            return out
        if func is torch.Tensor.is_pinned:
            return args[0].untyped_storage() in state.pinned
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            return self._move(func, args, kwargs)
        if func is torch.Tensor.tolist and state.is_cuda(args[0]):
            state.count_sync("tolist")
            state.counted += 1
            try:
                return func(*args, **kwargs)
            finally:
                state.counted -= 1
        target = None
        if "device" in kwargs and kwargs["device"] is not None:
            target = CUDA if _is_cuda_device(kwargs["device"]) else CPU
            kwargs["device"] = CPU
            if target == CUDA and name in ("tensor", "as_tensor", "asarray") and args and not state.is_cuda(args[0]):
                state.count_sync("h2d")  # host data made into a CPU tensor and copied, blocking
        generator = kwargs.get("generator")
        if generator is not None:  # torch refuses a generator of another device than the tensor it fills
            made_on = getattr(generator, "emulated_device", CPU)
            needed = target or next((state.device_of(t) for t in args if isinstance(t, torch.Tensor)), CPU)
            if made_on != needed:
                raise DeviceMismatchError(f"{name}: expected a '{needed.type}' generator, found '{made_on.type}'")
        tensors = [a for a in pytree.arg_tree_leaves(*args, **kwargs) if isinstance(a, torch.Tensor)]
        devices = {state.device_of(t) for t in tensors}
        ambient = target or (CUDA if CUDA in devices else CPU)
        state.ambient.append(ambient)
        state.calls.append(name)
        try:
            out = func(*args, **kwargs)
        finally:
            state.ambient.pop()
            state.calls.pop()
        if target is not None:
            out = self._placed(out, tensors, target)
        return out

    def _placed(self, out: Any, inputs: list[torch.Tensor], target: torch.device) -> Any:
        """Mark ``out`` as created on ``target``; a result that shares an input's storage on another device
        is copied first (a real device change never aliases)."""
        shared = {id(t.untyped_storage()): t for t in inputs}

        def place(t):
            if not isinstance(t, torch.Tensor):
                return t
            source = shared.get(id(t.untyped_storage()))
            if source is not None and self.state.device_of(source) != target:
                t = t.clone()
            self.state.mark(t, target)
            return t

        return pytree.tree_map(place, out)

    def _move(self, func, args, kwargs) -> torch.Tensor:
        tensor = args[0]
        copy = bool(kwargs.pop("copy", False))
        non_blocking = bool(kwargs.get("non_blocking", False))
        if func is torch.Tensor.cuda:
            target, dtype, fmt = CUDA, None, None
        elif func is torch.Tensor.cpu:
            target, dtype, fmt = CPU, None, None
        else:
            rest = args[1:]
            if rest and isinstance(rest[0], torch.Tensor):  # t.to(other): other's device and dtype
                target, dtype, fmt = self.state.device_of(rest[0]), rest[0].dtype, None
            else:
                device, dtype, non_blocking, fmt = torch._C._nn._parse_to(*rest, **kwargs)
                target = None if device is None else (CUDA if device.type == "cuda" else CPU)
        state = self.state
        source = state.device_of(tensor)
        target = source if target is None else target
        if target != source:
            if target.type == "cuda":
                state.count_h2d(tensor, non_blocking)
            else:
                state.count_sync("d2h")
        options = {k: v for k, v in (("dtype", dtype), ("memory_format", fmt)) if v is not None}
        state.counted += 1
        try:
            out = tensor.to(**options, copy=copy) if options or copy else tensor
            if target != source and out.untyped_storage() is tensor.untyped_storage():
                out = out.clone()
        finally:
            state.counted -= 1
        state.mark(out, target)
        return out


class SyncCounts:
    """What :meth:`EmulatedCuda.counting` counted: ``syncs`` by kind and ``transfers`` (``h2d``, ``d2h``)."""

    def __init__(self) -> None:
        self.syncs: collections.Counter = collections.Counter()
        self.transfers: collections.Counter = collections.Counter()

    @property
    def total(self) -> int:
        """Host synchronisations of every kind."""
        return sum(self.syncs.values())


class EmulatedCuda:
    """Context manager: CUDA tensors on the CPU, every CPU/CUDA mix raises :class:`DeviceMismatchError`.

    ``device_of(t)`` says where a tensor lives; ``torch.cuda.is_available()`` stays ``False`` (code
    under test must not depend on it to pick its device: nnU-Net and pgps take the device they are given).
    """

    def __init__(self) -> None:
        self.state = _State()
        self._stack: contextlib.ExitStack | None = None

    def device_of(self, t: torch.Tensor) -> torch.device:
        return self.state.device_of(t)

    @property
    def syncs(self) -> collections.Counter:
        """Host synchronisations so far, by kind (:data:`SYNC_KINDS`)."""
        return self.state.syncs

    @property
    def transfers(self) -> collections.Counter:
        """Copies between host and device so far (``h2d``, ``d2h``), non-blocking pinned ones included."""
        return self.state.transfers

    def reset_counts(self) -> tuple[collections.Counter, collections.Counter]:
        """The counts so far (``syncs``, ``transfers``), then start again from zero."""
        out = (self.state.syncs.copy(), self.state.transfers.copy())
        self.state.syncs.clear()
        self.state.transfers.clear()
        return out

    @contextlib.contextmanager
    def counting(self) -> Iterator[SyncCounts]:
        """``with emu.counting() as counts:`` the syncs and transfers made inside the block (set when it ends)."""
        syncs, transfers = self.state.syncs.copy(), self.state.transfers.copy()
        counts = SyncCounts()
        try:
            yield counts
        finally:
            counts.syncs.update(self.state.syncs - syncs)
            counts.transfers.update(self.state.transfers - transfers)

    def __enter__(self) -> EmulatedCuda:
        self._stack = contextlib.ExitStack()
        real = torch.Generator

        class Generator(real):
            """``torch.Generator(device=...)``: a CPU generator that knows the device it was made for."""

            def __new__(cls, device: Any = "cpu"):
                generator = super().__new__(cls, "cpu")
                generator.emulated_device = CUDA if _is_cuda_device(device) else CPU
                return generator

            def __init__(self, device: Any = "cpu") -> None:
                pass

        torch.Generator = Generator
        self._stack.callback(setattr, torch, "Generator", real)
        self._stack.enter_context(_Dispatch(self.state))
        self._stack.enter_context(_Functions(self.state))
        return self

    def __exit__(self, *exc) -> None:
        assert self._stack is not None
        self._stack.close()

    @contextlib.contextmanager
    def in_this_thread(self) -> Iterator[None]:
        """The emulation in a thread of its own (torch's modes are per thread), with this emulation's marks and
        counts: batchgenerators' pinning thread, for one."""
        with _Dispatch(self.state), _Functions(self.state):
            yield

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the emulation for a block (tensors keep their marks)."""
        assert self._stack is not None
        stack, self._stack = self._stack, None
        stack.close()
        try:
            yield
        finally:
            self.__enter__()
