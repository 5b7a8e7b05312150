"""``torch.compile`` for a curriculum: one static-shape compilation per stage, where it can pay off.

nnU-Net compiles its network on CUDA by default (``nnUNet_compile``) with dynamo's defaults:
automatic dynamic shapes after the second input shape, and at most ``recompile_limit`` (8)
compilations per function, past which dynamo logs a warning and runs the function *uncompiled*
for the rest of the run. A curriculum changes the input shape at every stage (up to ~20 stages in
the article), and RPSS at every iteration, so those defaults would decide, unseen, which stages
run compiled. The PGPS trainers (CPS included, so that runtimes stay comparable) replace them by
this policy:

- **Static shapes, one compilation per stage.** A stage is one input shape, so each compiles once
  (``dynamic=False``) with kernels specialised to it; the next stage compiles its own shape. RPSS
  draws from the same shapes, so it compiles each stage once, whenever it is first drawn.
- **A budget from the run, and no silent fallback.** dynamo's recompile limit is raised to the graphs
  the run compiles (:func:`graphs_needed`: one per compiled stage; when the last stage is compiled,
  whose network validates and infers at ``P_max``, one for nnU-Net's validation step and two for its
  final sliding-window validation) plus :data:`SPARE_GRAPHS` (``PGPS_COMPILE_SPARE_GRAPHS``) for guards
  a GPU may add, and ``fail_on_recompile_limit_hit`` turns exceeding it into an error instead of a
  silent switch to eager execution. The final validation runs after ``checkpoint_final.pth`` is
  written (nnU-Net's order); should it still exceed the budget, it is run again eager, saying so in
  the log, rather than failing a finished training. The log ends with the graphs compiled against
  the budget.
- **Only where it can pay off.** A stage with fewer than :data:`MIN_ITERATIONS` training iterations
  (``PGPS_COMPILE_MIN_ITERATIONS``) runs eager: compiling a 3D U-Net's forward and backward graphs
  takes tens of seconds to minutes, which a few hundred iterations cannot repay (an assumption,
  not a measurement of this project: ``benchmarks/gpu_check.py`` prints the compile time per stage
  on a GPU). At nnU-Net's defaults every stage of the article's schedules has thousands of
  iterations; the 1% training-length variants have a few hundred per stage and run eager.
- **The network only.** nnU-Net also compiles its Dice loss, which sees one shape per stage and
  deep-supervision level (unbounded by the limit above); the PGPS trainers leave it eager.
- **Measured apart.** Compilation time (dynamo's own timers, backward graphs included) is reported
  per epoch in the telemetry (``compile_time_s``, ``compilations``) and left out of ``epoch_time_s``,
  so that runtime tables are not skewed by it.

Switches: ``nnUNet_compile=f`` turns compilation off, as in nnU-Net; ``PGPS_COMPILE_BACKEND``
chooses dynamo's backend (default ``inductor``) and, when set, compiles on any device (the tests use
``eager`` on the CPU to count compilations).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import torch
from torch import nn

import pgps

MIN_ITERATIONS = 1000
"""Default of ``PGPS_COMPILE_MIN_ITERATIONS``: training iterations a stage needs to be compiled."""
VALIDATION_GRAPHS = 1
"""nnU-Net's validation step during training: the last stage's network at ``(b_base, P_max)`` without gradients
(dynamo's guard on the grad mode fails, so it compiles anew)."""
FINAL_VALIDATION_GRAPHS = 2
"""nnU-Net's final sliding-window validation (``perform_actual_validation``): two more guard failures, inputs
without autograd keys and then inference tensors (its predictor runs under ``torch.inference_mode``), counted
with dynamo's recompile log (``TORCH_LOGS=recompiles``, torch 2.14.1; ``tests/test_compile.py``)."""
SPARE_GRAPHS = 2
"""Default of ``PGPS_COMPILE_SPARE_GRAPHS``: graphs beyond the counted ones, for guards that only a GPU run may
add (a dtype, the autocast state, cuDNN flags); the CPU tests run with none spare."""
_COMPILE_TIMERS = ("_compile.compile_inner", "backward._backward_impl")
"""dynamo's timers for a frame's compilation and for the lazy compilation of its backward graph."""


def _flag(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "t", "yes", "y")


def compile_wanted(device: torch.device) -> bool:
    """nnU-Net's rule (``nnUNet_compile``; on by default on CUDA only), or any device with ``PGPS_COMPILE_BACKEND``."""
    if "nnUNet_compile" in os.environ:
        return _flag(os.environ["nnUNet_compile"]) and (device.type == "cuda" or "PGPS_COMPILE_BACKEND" in os.environ)
    return device.type == "cuda" or bool(os.environ.get("PGPS_COMPILE_BACKEND"))


def _non_negative(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return number


def min_iterations() -> int:
    return _non_negative("PGPS_COMPILE_MIN_ITERATIONS", MIN_ITERATIONS)


def spare_graphs() -> int:
    return _non_negative("PGPS_COMPILE_SPARE_GRAPHS", SPARE_GRAPHS)


def graphs_needed(compiled_stages: Sequence[bool]) -> int:
    """Graphs the network's forward compiles in a run whose stages ``compiled_stages`` run compiled: one per
    compiled stage and, if the last stage is compiled (validation and inference use its network), the
    validation step's and the final validation's (:data:`VALIDATION_GRAPHS`, :data:`FINAL_VALIDATION_GRAPHS`)."""
    stages = sum(bool(c) for c in compiled_stages)
    if compiled_stages and compiled_stages[-1]:
        return stages + VALIDATION_GRAPHS + FINAL_VALIDATION_GRAPHS
    return stages


def compile_network(network: nn.Module, graphs: int) -> nn.Module:
    """``torch.compile`` with static shapes and room for ``graphs`` compilations of the network's forward
    (process-wide: dynamo's limits are global); exceeding them raises instead of falling back to eager."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, graphs)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * graphs)
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True
    backend = os.environ.get("PGPS_COMPILE_BACKEND") or "inductor"
    return torch.compile(network, dynamic=False, backend=backend)


@dataclasses.dataclass(frozen=True)
class CompileCounters:
    """Seconds spent compiling and frames compiled so far in this process (dynamo's timers)."""

    seconds: float
    compilations: int

    @classmethod
    def now(cls) -> CompileCounters:
        try:
            from torch._dynamo.utils import compilation_time_metrics
        except ImportError:  # pragma: no cover - a torch without dynamo's timers
            return cls(0.0, 0)
        seconds = sum(sum(compilation_time_metrics.get(name, ())) for name in _COMPILE_TIMERS)
        return cls(float(seconds), len(compilation_time_metrics.get(_COMPILE_TIMERS[0], ())))

    def __sub__(self, other: CompileCounters) -> CompileCounters:
        return CompileCounters(self.seconds - other.seconds, self.compilations - other.compilations)


class CompileMixin:
    """The stage-wise compilation of a :class:`pgps.nnunet.trainer.PGPSMixin` trainer (its network and schedule)."""

    def _do_i_compile(self) -> bool:
        """nnU-Net's own compilation (network and Dice loss, dynamic shapes) is replaced by the stage-wise
        policy of :mod:`pgps.nnunet.compiling` (:meth:`_set_up_compilation`)."""
        return False

    def _set_up_compilation(self) -> None:
        self._eager_network = self.network
        self._compiled_network = None
        self._compiled_stages = [False] * self.schedule.num_stages
        if not compile_wanted(self.device):
            return
        floor = min_iterations()
        self._compiled_stages = [n >= floor for n in pgps.iterations_per_stage(self.schedule)]
        needed = graphs_needed(self._compiled_stages)
        self._graph_budget = needed + spare_graphs()
        if any(self._compiled_stages):
            self._compiled_network = compile_network(self.network, self._graph_budget)
            self._compile_start = CompileCounters.now()
        eager = [i for i, c in enumerate(self._compiled_stages) if not c]
        self.print_to_log_file(
            f"PGPS: torch.compile, static shapes, one compilation per stage; stages run eager (fewer than {floor} "
            f"iterations): {eager or 'none'}; graph budget {self._graph_budget} ({needed} planned, "
            f"{self._graph_budget - needed} spare)",
            also_print_to_console=True,
        )

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's final validation (``checkpoint_final.pth`` is written before it); run again eager if it
        exceeds the graph budget, and the graphs compiled reported against the budget."""
        try:
            super().perform_actual_validation(save_probabilities)
        except torch._dynamo.exc.FailOnRecompileLimitHit as exc:
            eager = getattr(self, "_eager_network", None)
            if eager is None or self.network is eager:
                raise
            self.print_to_log_file(
                f"PGPS: the final validation exceeded the torch.compile graph budget ({self._graph_budget}): "
                f"{str(exc).splitlines()[0]}; validating eager instead (checkpoint_final.pth is already saved)",
                also_print_to_console=True,
            )
            self.network = eager
            super().perform_actual_validation(save_probabilities)
        if getattr(self, "_compiled_network", None) is not None:
            compiled = (CompileCounters.now() - self._compile_start).compilations
            self.print_to_log_file(
                f"PGPS: torch.compile compiled {compiled} graphs in this process (budget {self._graph_budget})",
                also_print_to_console=True,
            )

    def network_for_stage(self, index: int) -> torch.nn.Module:
        """The network that trains stage ``index``: compiled, or eager where compiling cannot pay off."""
        compiled = getattr(self, "_compiled_network", None)
        return compiled if compiled is not None and self._compiled_stages[index] else self._eager_network
