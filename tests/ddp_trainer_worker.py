"""One rank of tests/test_ddp.py: ``ddp_trainer_worker.py STORE RANK WORLD_SIZE TRAINER OUT [STOP_AFTER|resume]``.

Runs a PGPS trainer's own ``run_training`` in a two-process ``gloo`` group on the CPU, in the environment of
:func:`tests.nnunet_env.env`, and saves what every training step received (its keys, rows of the global batch,
input shape, the loader's global plan) to ``OUT/rank<RANK>.json``.

Only what needs a GPU is replaced, here and only here: nnU-Net puts a DDP trainer on ``cuda:<rank>`` and wraps
its network in ``DistributedDataParallel(device_ids=[rank])`` (NCCL in ``nnUNetv2_train -num_gpus``); the worker
moves the trainer to the CPU before ``initialize`` and wraps the network in CPU ``DistributedDataParallel``
(gloo). Splitting, planning, telemetry reduction, checkpoint and resume are the trainer's own code.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def main(store: str, rank: int, world_size: int, trainer_name: str, out: str, mode: str = "") -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer
    from nnunetv2.run.run_training import get_trainer_from_args

    nnunet_trainer.DDP = lambda module, device_ids=None: DistributedDataParallel(module)  # CPU: no device_ids
    trainer = get_trainer_from_args("1", "3d_fullres", 0, trainer_name, device=torch.device("cpu"))
    assert trainer.is_ddp and trainer.local_rank == rank and trainer.device.type == "cuda"  # nnU-Net's DDP choice
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None
    steps = []
    step = trainer.train_step

    def recording_step(batch):
        loader = next(iter(trainer.dataloader_train.loaders.values())).data_loader
        steps.append({
            "epoch": trainer.current_epoch, "keys": list(batch["keys"]), "rows": batch.get("pgps_rows"),
            "shape": list(batch["data"].shape), "plan": [list(p) for p in getattr(loader, "last_plan", [])],
        })  # fmt: skip
        return step(batch)

    trainer.train_step = recording_step
    if mode == "resume":
        trainer.initialize()
        trainer.load_checkpoint(os.path.join(trainer.output_folder, "checkpoint_latest.pth"))
    elif mode:  # stop right after epoch `mode` was checkpointed, as a pre-emption would
        stop_after = int(mode)
        trainer.save_every = stop_after + 1
        end = trainer.on_epoch_end

        def on_epoch_end():
            end()
            if trainer.current_epoch == stop_after + 1:
                Path(out, f"rank{rank}.json").write_text(json.dumps(steps))
                if rank == 0:  # the checkpoint as the pre-emption left it (the resumed run replaces it)
                    shutil.copy(os.path.join(trainer.output_folder, "checkpoint_latest.pth"), out)
                dist.barrier()
                dist.destroy_process_group()
                sys.exit(0)

        trainer.on_epoch_end = on_epoch_end
    trainer.run_training()
    Path(out, f"rank{rank}.json").write_text(json.dumps(steps))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:2], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
