"""nnU-Net's multi-GPU command on the CPU: ``python ddp_trainer_worker.py ARGS...`` runs ``nnUNetv2_train ARGS...``.

nnU-Net's own entry point runs unchanged (``run_training_entry``: its arguments, ``-num_gpus N`` starting N rank
processes with ``torch.multiprocessing.spawn``, ``run_ddp``, ``--c``, the training and the final validation), in
the environment of :func:`tests.nnunet_env.env`. Only what needs a GPU is replaced, here and only here, at the top
of this file (which ``spawn`` runs again in every rank process):

- ``setup_ddp`` joins a ``gloo`` group instead of NCCL, and ``torch.cuda.set_device`` has no GPU to select;
- the trainer nnU-Net puts on ``cuda:<rank>`` is moved to the CPU (device; no CUDA GradScaler) and its network is
  wrapped in ``DistributedDataParallel`` without ``device_ids``.

What every training step received (epoch, step, global rows, case keys, input shape, MD5 of data and target) is
appended to ``$PGPS_TEST_OUT/rank<RANK>.jsonl``. ``PGPS_TEST_KILL=STEP`` makes rank 0 SIGKILL itself when the
loader hands it that step, as a scheduler's kill would; ``spawn`` then ends the other ranks.
``PGPS_TEST_NO_VALIDATION=1`` leaves out nnU-Net's final validation (for runs whose validation no test reads: each
rank's export pool would start a process that imports torch and nnU-Net anew).
"""

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import nnunetv2.run.run_training as run_training
import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def setup_gloo(rank: int, world_size: int) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=world_size)


def md5(tensor: torch.Tensor) -> str:
    return hashlib.md5(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def record_steps(trainer) -> None:
    out = Path(os.environ["PGPS_TEST_OUT"])
    kill = int(os.environ.get("PGPS_TEST_KILL") or -1)
    step = trainer.train_step

    def recording_step(batch):
        target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
        line = {
            "epoch": trainer.current_epoch, "step": batch["pgps_step"], "rows": batch["pgps_rows"],
            "keys": list(batch["keys"]), "shape": list(batch["data"].shape), "data": md5(batch["data"]),
            "target": md5(target),
        }  # fmt: skip
        if trainer.local_rank == 0 and batch["pgps_step"] == kill:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(out / f"rank{trainer.local_rank}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        return step(batch)

    trainer.train_step = recording_step


def trainer_on_cpu(*args, **kwargs):
    trainer = get_trainer(*args, **kwargs)
    assert trainer.is_ddp and trainer.device.type == "cuda"  # nnU-Net's choice for a rank, replaced here
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None
    record_steps(trainer)
    if os.environ.get("PGPS_TEST_NO_VALIDATION"):
        trainer.perform_actual_validation = lambda *args, **kwargs: None
    return trainer


run_training.setup_ddp = setup_gloo
torch.cuda.set_device = lambda device: None
nnunet_trainer.DDP = lambda module, device_ids=None: DistributedDataParallel(module)
get_trainer = run_training.get_trainer_from_args
run_training.get_trainer_from_args = trainer_on_cpu

if __name__ == "__main__":
    sys.argv = ["nnUNetv2_train", *sys.argv[1:]]
    run_training.run_training_entry()
