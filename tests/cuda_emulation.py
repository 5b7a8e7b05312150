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

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in pytree.arg_tree_leaves(*args, **kwargs) if isinstance(a, torch.Tensor)]
        if self.state.trace.maxlen:
            self.state.trace.append(f"{func} {[(tuple(t.shape), str(self.state.device_of(t))) for t in tensors]}")
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
            return args[0].clone()  # page-locked host memory needs a CUDA driver; it is host memory all the same
        if func is torch.Tensor.is_pinned:
            return False
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            return self._move(func, args, kwargs)
        target = None
        if "device" in kwargs and kwargs["device"] is not None:
            target = CUDA if _is_cuda_device(kwargs["device"]) else CPU
            kwargs["device"] = CPU
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
        try:
            out = func(*args, **kwargs)
        finally:
            state.ambient.pop()
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
        if func is torch.Tensor.cuda:
            target, dtype, fmt = CUDA, None, None
        elif func is torch.Tensor.cpu:
            target, dtype, fmt = CPU, None, None
        else:
            rest = args[1:]
            if rest and isinstance(rest[0], torch.Tensor):  # t.to(other): other's device and dtype
                target, dtype, fmt = self.state.device_of(rest[0]), rest[0].dtype, None
            else:
                device, dtype, _, fmt = torch._C._nn._parse_to(*rest, **kwargs)
                target = None if device is None else (CUDA if device.type == "cuda" else CPU)
        source = self.state.device_of(tensor)
        target = source if target is None else target
        options = {k: v for k, v in (("dtype", dtype), ("memory_format", fmt)) if v is not None}
        out = tensor.to(**options, copy=copy) if options or copy else tensor
        if target != source and out.untyped_storage() is tensor.untyped_storage():
            out = out.clone()
        self.state.mark(out, target)
        return out


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
    def paused(self) -> Iterator[None]:
        """Leave the emulation for a block (tensors keep their marks)."""
        assert self._stack is not None
        stack, self._stack = self._stack, None
        stack.close()
        try:
            yield
        finally:
            self.__enter__()
