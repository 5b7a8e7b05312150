"""One training iteration and one validation step of a PGPS trainer with device "cuda", on the CPU.

Run as ``python -m tests.cuda_harness '<json list of [trainer, configuration, plans]>'`` in an
environment prepared by :func:`tests.nnunet_env.env`; prints one JSON line per trainer with what was
measured. Everything runs inside :class:`tests.cuda_emulation.EmulatedCuda`, which raises on any
CPU/CUDA mix. The trainer runs nnU-Net's own hooks (``on_train_start``, ``train_step``,
``validation_step``, ``on_epoch_end``...) unchanged, except for these CUDA-only services, which need a
GPU driver and are replaced here and only here:

- ``torch.autocast("cuda")``: torch switches it off without a GPU; the harness substitutes CPU
  autocast to bfloat16 so that mixed-precision tensors still flow through the step (CUDA's float16
  autocast itself is covered with ``FakeTensorMode`` in ``tests/test_cuda.py``);
- ``GradScaler("cuda")``: nnU-Net's scaler is kept; torch disables it without a GPU, so its calls
  run and scale by 1 (``grad_scaler="finite"`` or ``"inf"`` enables it as on a GPU: scaling, unscaling and
  the overflow check on the device, and with ``"inf"`` an overflowing gradient in the first parameter);
- the CUDA runtime calls of batchgenerators' ``NonDetMultiThreadedAugmenter``, which pins every batch its worker
  processes make in a thread of its own when CUDA is available (``workers`` > 0; the default is none,
  ``nnUNet_n_proc_DA=0``): that module sees CUDA as available on device 0 and ``set_device`` as done, and its
  pinning thread runs inside the emulation, so ``Tensor.pin_memory`` marks the batch's storages as pinned
  (page-locked memory itself needs the driver) and the trainer's non-blocking copies of them count as transfers
  that do not sync;
- ``torch.cuda.empty_cache``: a no-op on an uninitialised CUDA (left as is);
- ``torch.cuda.get_device_name``: returns ``"emulated CUDA"`` (nnU-Net's debug file, the memory probe);
- ``torch.compile``: off (``nnUNet_compile=f``); compilation is tested on the CPU with dynamo's eager
  backend in ``tests/test_compile.py``;
- the memory probe's ``torch.cuda.max_memory_allocated`` peak: the harness runs the same probe step on
  the emulated device and measures it with the probe's ``saved_tensors`` method instead;
- cuDNN's convolutions: the CPU's, with torch's own kernels for every convolution's gradients
  (``aten.convolution_backward``) and oneDNN's for the forward. In torch 2.14.1, oneDNN's bfloat16
  weight gradient of a 3x3x3 convolution over a 2x2x2 input (the tiny U-Net's deepest decoder stage at the
  first Performance stage) is wrong: relative error ~1 against float64, up to 1e36 on repeated calls on an
  AVX512-BF16 CPU, which made a validation loss NaN at random; float32 and torch's own bfloat16 kernels
  agree with float64 there, and CUDA runs neither. oneDNN's forward is right (``pgps.nnunet.cpu_autocast``)
  and torch's own bfloat16 forward is ~5x slower (a SwinUNETR step 18 s instead of 3.4 s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import sys
import traceback

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.cuda_emulation import EmulatedCuda


def _cpu_autocast(device_type: str, dtype: torch.dtype | None = None, enabled: bool = True, cache_enabled=None):
    return torch.amp.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


class _NativeConvolutionGradients(TorchDispatchMode):
    """Every convolution's gradients with torch's own kernels, oneDNN off (see the module docstring)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            with torch.backends.mkldnn.flags(enabled=False):
                return func(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def cuda_services_replaced():
    """The replacements listed in the module docstring (undone on exit)."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer

    from pgps.nnunet import memory

    saved = (torch.autocast, nnunet_trainer.autocast, torch.cuda.get_device_name, memory.PEAKS["cuda"])

    def emulated_peak(network, shape, device):
        return memory._peak_saved_tensors(network, shape, device)

    torch.autocast = nnunet_trainer.autocast = _cpu_autocast
    torch.cuda.get_device_name = lambda *args, **kwargs: "emulated CUDA"
    memory.PEAKS["cuda"] = emulated_peak
    try:
        with _NativeConvolutionGradients():
            yield
    finally:
        torch.autocast, nnunet_trainer.autocast, torch.cuda.get_device_name, memory.PEAKS["cuda"] = saved


class _CudaAvailable:
    """``torch.cuda`` as batchgenerators' augmenter asks it: available, device 0, ``set_device`` done."""

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def current_device() -> int:
        return 0

    @staticmethod
    def set_device(device) -> None:
        pass


class _TorchWithCuda:
    """``torch`` with :class:`_CudaAvailable` as its ``cuda`` (for one module's global name only)."""

    cuda = _CudaAvailable

    def __getattr__(self, name: str):
        return getattr(torch, name)


@contextlib.contextmanager
def pinning_workers(emu: EmulatedCuda, workers: int):
    """``workers`` augmentation processes whose batches batchgenerators pins, as on a GPU (module docstring)."""
    import os

    import batchgenerators.dataloading.nondet_multi_threaded_augmenter as nondet

    saved = nondet.torch, nondet.results_loop, os.environ.get("nnUNet_n_proc_DA")
    results_loop = saved[1]

    def emulated_results_loop(*args, **kwargs):
        with emu.in_this_thread():
            return results_loop(*args, **kwargs)

    nondet.torch, nondet.results_loop = _TorchWithCuda(), emulated_results_loop
    os.environ["nnUNet_n_proc_DA"] = str(workers)
    try:
        yield
    finally:
        nondet.torch, nondet.results_loop = saved[:2]
        if saved[2] is None:
            os.environ.pop("nnUNet_n_proc_DA", None)
        else:
            os.environ["nnUNet_n_proc_DA"] = saved[2]


def _describe(emu: EmulatedCuda, x) -> dict:
    if isinstance(x, (list, tuple)):
        return {"list": [_describe(emu, t) for t in x]}
    return {"device": str(emu.device_of(x)), "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}


def run_one(
    trainer_name: str,
    configuration: str,
    plans: str,
    batch_size_cap: int | None = None,
    ignore_stage: bool = False,
    grad_scaler: str | None = None,
    dataset: str = "1",
    workers: int = 0,
) -> dict:
    """``batch_size_cap`` caps the schedule's batch sizes; ``ignore_stage`` replaces the training loader by one
    that always builds the last (P_max) stage, a broken loader for the tests to catch; ``grad_scaler`` (see the
    module docstring) enables nnU-Net's gradient scaler; ``dataset`` is nnU-Net's dataset id; ``workers`` runs the
    loader in that many augmentation processes with pinned memory."""
    from nnunetv2.run.run_training import get_trainer_from_args

    record: dict = {"trainer": trainer_name, "configuration": configuration, "ignore_stage": ignore_stage}
    record["grad_scaler"], record["dataset"], record["workers"] = grad_scaler, dataset, workers
    # fixed generators (network initialisation, nnU-Net's validation draws): every run of a spec measures the same
    # (the NaN validation losses once seen in 1-2 of 30 runs came from oneDNN's bfloat16 kernel, see above)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(EmulatedCuda())
        stack.enter_context(cuda_services_replaced())
        if workers:
            stack.enter_context(pinning_workers(emu, workers))
        trainer = get_trainer_from_args(dataset, configuration, 0, trainer_name, plans, device=torch.device("cuda"))
        trainer.progress_plot_every = 0  # nnU-Net's progress plot: matplotlib on the host, 0.6 s per trainer
        if batch_size_cap is not None:
            trainer.batch_size_cap = batch_size_cap
        if ignore_stage:  # the loader of every stage is built with the last stage's shapes (the steps stay its own)
            build = trainer.make_train_loader

            def ignores_stage(index: int):
                schedule = trainer.schedule
                trainer.schedule = dataclasses.replace(schedule, stages=(schedule.stages[-1],) * schedule.num_stages)
                try:
                    return build(index)
                finally:
                    trainer.schedule = schedule

            trainer.make_train_loader = ignores_stage
        trainer.initialize()
        received: list[dict] = []
        network = trainer.network
        network.register_forward_pre_hook(lambda module, args: received.append(_describe(emu, args[0])))
        trainer.on_train_start()
        record["schedule"] = trainer.schedule.to_dict()
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        if grad_scaler:
            available, torch.cuda.is_available = torch.cuda.is_available, lambda: True
            try:  # nnU-Net's GradScaler("cuda"), which torch turns off for want of a GPU
                trainer.grad_scaler = torch.amp.GradScaler("cuda")
            finally:
                torch.cuda.is_available = available
            record["scale"] = [trainer.grad_scaler.get_scale()]
            record["backoff_factor"] = trainer.grad_scaler.get_backoff_factor()
            if grad_scaler == "inf":
                next(network.parameters()).register_hook(lambda grad: torch.full_like(grad, math.inf))
        before = {name: p.detach().cpu().clone() for name, p in network.named_parameters()}
        with emu.counting() as copies:  # the batch, handed over and copied to the device
            batch = next(trainer.dataloader_train)
            record["stage"] = trainer.dataloader_train.last_index
            record["loader_data"] = _describe(emu, batch["data"])
            record["loader_target"] = _describe(emu, batch["target"])
            record["pinned"] = bool(batch["data"].is_pinned()) if emu.device_of(batch["data"]).type == "cpu" else None
            out = trainer.train_step(batch)
        record["h2d"] = {"blocking": copies.syncs["h2d"], "all": copies.transfers["h2d"]}
        trainer.on_train_epoch_end([out])
        record["train_loss"] = float(out["loss"])
        if grad_scaler:
            record["scale"].append(trainer.grad_scaler.get_scale())
        params = dict(network.named_parameters())
        record["grad_devices"] = sorted({str(emu.device_of(p.grad)) for p in params.values() if p.grad is not None})
        record["param_devices"] = sorted({str(emu.device_of(p)) for p in params.values()})
        record["params_changed"] = sum(not torch.equal(before[n], p.detach().cpu()) for n, p in params.items())
        record["params"] = len(params)
        record["train_input"] = received[-1]
        with torch.no_grad():
            trainer.on_validation_epoch_start()
            val_batch = next(trainer.dataloader_val)
            val = trainer.validation_step(val_batch)
            trainer.on_validation_epoch_end([val])
        record["val_input"] = received[-1]
        record["val_loss"] = float(val["loss"])
        trainer.on_epoch_end()
        record["telemetry"] = trainer.telemetry_rows[-1]
        record["memory_probe"] = (
            trainer.memory_probe.to_dict(trainer.schedule.batch_size_base)
            if getattr(trainer, "memory_probe", None)
            else None
        )
        trainer.dataloader_train.close()
    record["ok"] = math.isfinite(record["train_loss"])
    return record


def main(specs: list[list]) -> None:
    for spec in specs:
        try:
            record = run_one(*spec)
        except Exception as exc:  # reported per trainer; the test names it
            record = {"trainer": spec[0], "ignore_stage": bool(spec[4:5] and spec[4]), "ok": False,
                      "grad_scaler": spec[5] if len(spec) > 5 else None, "dataset": spec[6] if len(spec) > 6 else "1",
                      "workers": spec[7] if len(spec) > 7 else 0,
                      "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}  # fmt: skip
        print(json.dumps(record, default=str), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
