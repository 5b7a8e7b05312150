"""Measured memory per sample for every stage, and PGPS-Performance batch sizes that fit it.

PGPS-Performance scales the batch as ``b_base * numel(P_max) / numel(P)``: right when a sample's
training memory is proportional to its voxels. It is not for every network: attention grows
with the square of the tokens (UNETR), windows pad small maps (SwinUNETR), and fixed-size
bottleneck layers do not shrink with the patch. The probe measures instead. For each stage size
``P`` it runs one training step of the real network on the training device (one batch of random
input, forward, a stand-in loss, backward; by default ``b_base`` samples), after one unmeasured step of
the same shape (cuDNN autotunes a new shape on its first step), and records the peak
memory above what was held before the step (weights and their gradient buffers, which exist
before every training step). The memory of one sample ``m(P)`` is that peak over the batch size
(:func:`pgps.batch.per_sample_memory`; with several probe batch sizes, the slope). Stage ``i``
then gets ``floor(b_base * m(P_max) / m(P_i))`` samples, at least ``b_base``
(:func:`pgps.batch.memory_batch_sizes`): ``b * m(P) <= b_base * m(P_max)``, the measured peak of the
planned batch at ``P_max``. Charging the whole peak to the samples is conservative when a step
has costs that do not grow with the batch (workspaces); a slope over two batch sizes leaves them
out but is fragile where they change with the batch size (CPU convolutions pick other
algorithms, and buffers, at batch size 1).

Peak memory, by device (``method``):

- ``"cuda"``: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (under autocast,
  as nnU-Net trains on a GPU);
- ``"cpu_profiler"``: torch's profiler with ``profile_memory=True`` records every CPU allocation and
  free during the step; the peak of their running sum;
- ``"saved_tensors"`` (fallback, any device): the bytes of the distinct storages (parameters left
  out) that autograd saves for the backward pass, counted with ``saved_tensors_hooks`` -- the
  activation memory, a lower bound of the peak.

The stand-in loss is the mean log-softmax of every output (memory like nnU-Net's cross-entropy
over the full-resolution logits); the Dice term adds a few more maps of that size.

:class:`MemoryProbeMixin` puts this into a PGPS-Performance trainer: its schedule's batch sizes
come from the probe, the probe's numbers go to the log and to ``pgps_summary.json``
(``memory_probe``), and a resumed run keeps the schedule it was started with.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

import pgps
from pgps.sizes import Size, as_size, fmt_size, numel

METHODS = ("auto", "cuda", "cpu_profiler", "saved_tensors")


@dataclasses.dataclass(frozen=True)
class MemoryProbe:
    """Peak memory of one training step per stage and probe batch size, and what follows from it.

    ``peak_bytes[i][j]`` is the peak (bytes above the level before the step) at stage size
    ``patch_sizes[i]`` and batch size ``batch_sizes[j]``.
    """

    device: str
    method: str
    batch_sizes: tuple[int, ...]
    patch_sizes: tuple[Size, ...]
    peak_bytes: tuple[tuple[int, ...], ...]

    @property
    def bytes_per_sample(self) -> tuple[float, ...]:
        """Memory of one sample at each stage size (bytes): the slope of peak memory over batch size."""
        return tuple(
            pgps.per_sample_memory(dict(zip(self.batch_sizes, peaks, strict=True))) for peaks in self.peak_bytes
        )

    def memory_per_sample(self, patch_size: Sequence[int]) -> float:
        """``bytes_per_sample`` of a probed stage size (the callable :func:`pgps.memory_batch_sizes` takes)."""
        return self.bytes_per_sample[self.patch_sizes.index(as_size("patch_size", patch_size))]

    def batch_sizes_for(self, batch_size_base: int) -> list[int]:
        """Batch size per stage: ``floor(b_base * m(P_max) / m(P))``, at least ``b_base``; the last is ``b_base``."""
        return pgps.memory_batch_sizes(list(self.patch_sizes), batch_size_base, self.memory_per_sample)

    def to_dict(self, batch_size_base: int | None = None) -> dict[str, Any]:
        """JSON-ready: device, method, probe batch sizes and per stage the peaks, bytes per sample and,
        given ``b_base``, the memory-sized and the numel-scaled batch size."""
        per_sample = self.bytes_per_sample
        stages = []
        for i, p in enumerate(self.patch_sizes):
            row: dict[str, Any] = {
                "patch_size": list(p),
                "peak_bytes": list(self.peak_bytes[i]),
                "bytes_per_sample": per_sample[i],
                "bytes_per_voxel": per_sample[i] / numel(p),
            }
            stages.append(row)
        out: dict[str, Any] = {
            "device": self.device,
            "method": self.method,
            "probe_batch_sizes": list(self.batch_sizes),
            "stages": stages,
        }
        if batch_size_base is not None:
            memory = self.batch_sizes_for(batch_size_base)
            numel_scaled = pgps.performance_batch_sizes(list(self.patch_sizes), batch_size_base)
            for row, b_mem, b_numel in zip(stages, memory, numel_scaled, strict=True):
                row["memory_batch_size"] = b_mem
                row["numel_batch_size"] = b_numel
            out["budget_bytes"] = batch_size_base * per_sample[-1]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryProbe:
        return cls(
            device=d["device"],
            method=d["method"],
            batch_sizes=tuple(int(b) for b in d["probe_batch_sizes"]),
            patch_sizes=tuple(as_size("patch_size", s["patch_size"]) for s in d["stages"]),
            peak_bytes=tuple(tuple(int(v) for v in s["peak_bytes"]) for s in d["stages"]),
        )

    def table(self, batch_size_base: int | None = None) -> str:
        """The probe as aligned text: per stage the bytes per sample and, given ``b_base``, both batch sizes."""
        d = self.to_dict(batch_size_base)
        header = ["patch_size", "MiB/sample", "bytes/voxel"] + (["b (memory)", "b (numel)"] if batch_size_base else [])
        rows = [
            [fmt_size(s["patch_size"]), f"{s['bytes_per_sample'] / 2**20:.3f}", f"{s['bytes_per_voxel']:.0f}"]
            + ([str(s["memory_batch_size"]), str(s["numel_batch_size"])] if batch_size_base else [])
            for s in d["stages"]
        ]
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
        lines = [f"memory probe on {self.device} ({self.method}), probe batch sizes {list(self.batch_sizes)}"]
        lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)


def stand_in_loss(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean log-softmax over the classes of every output (deep supervision gives several)."""
    outputs = output if isinstance(output, (list, tuple)) else [output]
    return sum(torch.log_softmax(o.float(), dim=1).mean() for o in outputs)


def _step(network: nn.Module, shape: tuple[int, ...], device: torch.device) -> None:
    """One training step on random input of ``shape`` ``(B, C, X, Y, Z)``, accumulating into zeroed gradients."""
    network.zero_grad(set_to_none=False)  # gradient buffers, once made, are held before the step as in training
    autocast = torch.autocast(device.type) if device.type == "cuda" else contextlib.nullcontext()
    x = torch.randn(shape, device=device)
    with autocast:
        loss = stand_in_loss(network(x))
    loss.backward()


def _peak_cuda(network: nn.Module, shape: tuple[int, ...], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    _step(network, shape, device)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def _peak_cpu_profiler(network: nn.Module, shape: tuple[int, ...], device: torch.device) -> int:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(network, shape, device)
    events = prof.profiler.kineto_results.events()  # every allocation (+bytes) and free (-bytes), in time order
    changes = sorted(
        (e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    if not changes:
        raise RuntimeError("the profiler recorded no CPU allocations")
    level = peak = 0
    for _, nbytes in changes:
        level += nbytes
        peak = max(peak, level)
    return peak


def _peak_saved_tensors(network: nn.Module, shape: tuple[int, ...], device: torch.device) -> int:
    parameters = {p.untyped_storage().data_ptr() for p in network.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _step(network, shape, device)
    return sum(storages.values())


PEAKS: dict[str, Callable[[nn.Module, tuple[int, ...], torch.device], int]] = {
    "cuda": _peak_cuda,
    "cpu_profiler": _peak_cpu_profiler,
    "saved_tensors": _peak_saved_tensors,
}


def resolve_method(method: str, device: torch.device) -> str:
    """``"auto"``: ``"cuda"`` on a CUDA device, ``"cpu_profiler"`` on the CPU, ``"saved_tensors"`` elsewhere."""
    if method not in METHODS:
        raise ValueError(f"unknown memory probe method {method!r}; choose one of: {', '.join(METHODS)}")
    if method == "auto":
        return {"cuda": "cuda", "cpu": "cpu_profiler"}.get(device.type, "saved_tensors")
    if method == "cuda" and device.type != "cuda":
        raise ValueError(f"method 'cuda' needs a CUDA device, got {device}")
    if method == "cpu_profiler" and device.type != "cpu":
        raise ValueError(f"method 'cpu_profiler' measures the CPU, but the device is {device}")
    return method


@contextlib.contextmanager
def _training_mode(network: nn.Module) -> Iterator[None]:
    was_training = network.training
    network.train()
    try:
        yield
    finally:
        network.train(was_training)


def probe_memory(
    network: nn.Module,
    patch_sizes: Sequence[Sequence[int]],
    input_channels: int,
    device: torch.device | str,
    batch_sizes: Sequence[int] = (2,),
    method: str = "auto",
) -> MemoryProbe:
    """Peak memory of one training step of ``network`` (on ``device``) per stage size and batch size.

    One unmeasured step at batch 1 and the smallest size comes first (gradient buffers, lazy initialisation),
    and one unmeasured step of each measured shape right before it is measured: ``nnUNetv2_train`` turns on
    ``torch.backends.cudnn.benchmark`` before the probe runs, and cuDNN's autotuner tries its candidate
    algorithms, with their workspaces, on the first step of every new shape; measured there, those trial
    workspaces would count as the samples' memory. ``"auto"`` on the CPU falls back to ``"saved_tensors"`` if
    the profiler records no allocations. The network's gradients are ``None`` afterwards and its weights
    unchanged.
    """
    device = torch.device(device)
    chosen = resolve_method(method, device)
    sizes = tuple(as_size("patch_size", p) for p in patch_sizes)
    if not sizes:
        raise ValueError("no patch sizes to probe")
    batches = tuple(int(b) for b in batch_sizes)
    if not batches or any(b < 1 for b in batches) or len(set(batches)) != len(batches):
        raise ValueError(f"batch_sizes must be distinct positive integers, got {list(batch_sizes)}")

    def measure(how: str) -> tuple[tuple[int, ...], ...]:
        peaks = []
        for p in sizes:
            row = []
            for b in batches:
                shape = (b, input_channels, *p)
                _step(network, shape, device)  # warm-up: cuDNN's autotuner tries its algorithms on a new shape
                row.append(PEAKS[how](network, shape, device))
            peaks.append(tuple(row))
        return tuple(peaks)

    with _training_mode(network):
        try:
            _step(network, (1, input_channels, *min(sizes, key=numel)), device)
            peaks = measure(chosen)
        except (RuntimeError, AttributeError):
            if not (method == "auto" and chosen == "cpu_profiler"):
                raise
            chosen = "saved_tensors"  # this torch's profiler gives no memory records
            peaks = measure(chosen)
        finally:
            network.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    return MemoryProbe(device=name, method=chosen, batch_sizes=batches, patch_sizes=sizes, peak_bytes=peaks)


class MemoryProbeMixin:
    """PGPS-Performance with batch sizes from :func:`probe_memory` (put it first in the bases).

    Class attributes: ``memory_probe_batch_sizes`` -- the batch sizes each stage is measured at
    (default ``None``: one batch of ``b_base``, so ``m(P_max)`` is the planned batch's own peak);
    ``memory_probe_method`` -- one of :data:`METHODS`. ``batch_size_cap`` still applies. The result
    is in ``self.memory_probe``.
    """

    memory_probe_batch_sizes: tuple[int, ...] | None = None
    memory_probe_method: str = "auto"
    memory_probe: MemoryProbe | None = None

    def _probe_network(self) -> nn.Module:
        """A fresh copy of the training network, prepared as :class:`PGPSMixin` prepares it."""
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

        self.num_input_channels = determine_num_input_channels(
            self.plans_manager, self.configuration_manager, self.dataset_json
        )
        network = self.build_network_architecture(
            self.plans_manager,
            self.configuration_manager,
            self.num_input_channels,
            self.label_manager.num_segmentation_heads,
            self.enable_deep_supervision,
        ).to(self.device)
        self.prepare_network(network)
        return network

    def build_schedule(self) -> pgps.Schedule:
        schedule = super().build_schedule()
        if schedule.mode != "performance":
            raise ValueError(
                f"{type(self).__name__}: the memory probe sizes PGPS-Performance batches; mode {schedule.mode!r} "
                "trains the planned batch size at every stage"
            )
        network = self._probe_network()
        try:
            probe = probe_memory(
                network,
                [s.patch_size for s in schedule.stages],
                self.num_input_channels,
                self.device,
                self.memory_probe_batch_sizes or (schedule.batch_size_base,),
                self.memory_probe_method,
            )
        finally:
            del network
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.memory_probe = probe
        b_base = schedule.batch_size_base
        batch_sizes = pgps.cap_batch_sizes(probe.batch_sizes_for(b_base), self.batch_size_cap, b_base)
        self.print_to_log_file(f"PGPS {probe.table(b_base)}", also_print_to_console=True)
        per_sample = probe.bytes_per_sample
        return schedule.with_batch_sizes(
            batch_sizes,
            f"batch sizes from a memory probe on {probe.device} ({probe.method}): b*m(P) <= b_base*m(P_max) = "
            f"{b_base * per_sample[-1] / 2**20:.1f} MiB",
        )

    def summary(self) -> dict:
        out = super().summary()
        if self.memory_probe is not None:
            out["memory_probe"] = self.memory_probe.to_dict(self.schedule.batch_size_base)
        return out

    def curriculum_state_dict(self) -> dict:
        state = super().curriculum_state_dict()
        state["memory_probe"] = self.memory_probe.to_dict() if self.memory_probe is not None else None
        return state

    def load_curriculum_state_dict(self, state: dict | None) -> None:
        """Resume with the probe and batch sizes the run started with (a new probe may measure a little differently)."""
        if state is not None and state.get("memory_probe") is not None and self.schedule is not None:
            saved = pgps.Schedule.from_dict((state.get("curriculum") or state)["schedule"])  # or an earlier pgps's
            same_stages = [s.patch_size for s in saved.stages] == [s.patch_size for s in self.schedule.stages]
            if same_stages and saved.mode == self.schedule.mode and saved.epochs == self.schedule.epochs:
                self.schedule = saved
                self.memory_probe = MemoryProbe.from_dict(state["memory_probe"])
                self._planned_voxels.update(
                    planned_iterated_voxels=pgps.iterated_voxels(saved),
                    planned_relative_voxels=pgps.relative_voxels(saved),
                )
        super().load_curriculum_state_dict(state)


__all__ = [
    "METHODS",
    "MemoryProbe",
    "MemoryProbeMixin",
    "probe_memory",
    "resolve_method",
    "stand_in_loss",
]
