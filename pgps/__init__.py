"""pgps: Progressive Growing of Patch Size for patch-based 3D medical image segmentation.

The core (this package's top level) is pure Python + numpy; framework adapters live in
subpackages and import it. Typical use::

    import pgps
    s = pgps.make_schedule("performance", (128, 128, 128), steps=(32, 32, 32), batch_size_base=2)
    print(s)                      # the stage table
    s.stage_at(epoch=0)           # Stage(patch_size=(32, 32, 32), batch_size=128, epochs=100, ...)
"""

from pgps import extras
from pgps.batch import (
    cap_batch_sizes,
    efficiency_batch_sizes,
    memory_batch_sizes,
    miccai_plus_batch_sizes,
    per_sample_memory,
    performance_batch_sizes,
)
from pgps.cost import (
    iterated_voxels,
    iterations_per_stage,
    mean_batch_size,
    mean_patch_voxels,
    mean_tensor_voxels,
    relative_voxels,
)
from pgps.curriculum import Curriculum
from pgps.pacing import epochs_per_stage, iterations_per_epoch, stage_index_of_epoch
from pgps.plans import PlannedConfiguration, configuration_steps, planned_configuration, resolve_configuration
from pgps.schedule import MODES, Schedule, Stage, make_schedule
from pgps.sizes import numel, steps_from_strides
from pgps.stages import journal_stages, legacy_stages

__version__ = "0.1.0"

extras.install()  # a missing optional dependency of pgps.torch/monai/nnunet/report/synth names its extra

__all__ = [
    "MODES",
    "Curriculum",
    "PlannedConfiguration",
    "Schedule",
    "Stage",
    "cap_batch_sizes",
    "configuration_steps",
    "efficiency_batch_sizes",
    "epochs_per_stage",
    "iterated_voxels",
    "iterations_per_epoch",
    "iterations_per_stage",
    "journal_stages",
    "legacy_stages",
    "make_schedule",
    "mean_batch_size",
    "mean_patch_voxels",
    "mean_tensor_voxels",
    "memory_batch_sizes",
    "miccai_plus_batch_sizes",
    "numel",
    "per_sample_memory",
    "performance_batch_sizes",
    "planned_configuration",
    "relative_voxels",
    "resolve_configuration",
    "stage_index_of_epoch",
    "steps_from_strides",
]
