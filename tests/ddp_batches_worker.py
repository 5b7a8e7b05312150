"""One rank of tests/test_ddp.py's batch check: ``ddp_batches_worker.py STORE RANK WORLD_SIZE OUT SPEC...``.

A SPEC is ``TRAINER[:CAP[:WORKERS]]``: a batch size cap (the trainer attribute ``batch_size_cap``) and the numbers of
data-augmentation workers per rank to run it with (digits; default ``02``: 0 and 2). For each, builds the trainer of
the tiny dataset
(:func:`tests.nnunet_env.env`) in a ``gloo`` group of ``WORLD_SIZE`` CPU processes (a group of one is the
single-process reference) and runs the trainer's own hooks for every step of its schedule: ``on_train_start``,
then epoch by epoch ``on_train_epoch_start`` and ``next(trainer.dataloader_train)``, as nnU-Net's ``run_training``
calls them, and without workers also ``train_step`` on every batch (the loss of every step is saved; with workers
only the batches are checked). Replaced, as a GPU needs: the trainer is moved to the CPU and its network wrapped in
``DistributedDataParallel`` without ``device_ids``.

For every step it saves what the batch held (step, global rows, case keys, forced flags, crop corners, tensor
shape) to ``OUT/rank<RANK>.json``, and every case a process read from the dataset (:func:`count_reads`) to
``OUT/reads-*.txt`` (worker processes included).
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def count_reads(out: Path) -> None:
    """Log every ``load_case`` of a training loader with the step it was producing, whether the case is one of this
    rank's rows of that step's plan (rows from ``rank_rows`` and ``dist.get_rank()``, not from the loader) and how
    many cases of the step's global batch are not (workers too: they start after this patch). A step may be
    produced and not trained (a loader closed at a data-curriculum phase change): its reads count as well."""
    from nnunetv2.training.dataloading import nnunet_dataset

    from pgps.nnunet.loading.sampling import PlannedDataLoader
    from pgps.sampling import rank_rows

    producing = {"step": None, "own": set(), "others": 0}
    plan = PlannedDataLoader.plan

    def recording_plan(self, step):
        found = plan(self, step)
        global_plan = found[0]
        rows = rank_rows(global_plan.batch_size, dist.get_rank(), dist.get_world_size())
        own = {self.indices[c] for c in global_plan.cases[rows].tolist()}
        producing.update(step=int(step), own=own, others=len({self.indices[c] for c in global_plan.cases} - own))
        return found

    PlannedDataLoader.plan = recording_plan
    for cls in (nnunet_dataset.nnUNetDatasetBlosc2, nnunet_dataset.nnUNetDatasetNumpy):
        load = cls.load_case

        def recording_load(self, identifier, _load=load):
            with open(out / f"reads-{os.environ['PGPS_TEST_RUN']}-{os.getpid()}.txt", "a") as f:
                mine = int(identifier in producing["own"])
                f.write(f"{producing['step']} {identifier} {mine} {producing['others']}\n")
            return _load(self, identifier)

        cls.load_case = recording_load


def main(store: str, rank: int, world_size: int, out: str, *trainers: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer
    from nnunetv2.run.run_training import get_trainer_from_args

    nnunet_trainer.DDP = lambda module, device_ids=None: DistributedDataParallel(module)  # CPU: no device_ids

    out_dir = Path(out)
    count_reads(out_dir)
    runs = {}
    for spec in trainers:
        name, cap, worker_counts = [*spec.split(":"), "", ""][:3]
        worker_counts = worker_counts or "02"
        for workers in map(int, worker_counts):
            os.environ["nnUNet_n_proc_DA"] = str(workers)
            os.environ["PGPS_TEST_RUN"] = f"{name}-{workers}-{rank}"
            trainer = get_trainer_from_args("1", "3d_fullres", 0, name, device=torch.device("cpu"))
            assert trainer.is_ddp and trainer.local_rank == rank
            trainer.device = torch.device("cpu")  # nnU-Net puts a DDP rank on cuda:<rank>; no network runs here
            trainer.batch_size_cap = int(cap) if cap else None
            trainer.on_train_start()
            steps = []
            for epoch in range(trainer.num_epochs):
                trainer.current_epoch = epoch
                trainer.on_train_epoch_start()
                for _ in range(trainer.num_iterations_per_epoch):
                    batch = next(trainer.dataloader_train)
                    steps.append({
                        "epoch": epoch, "step": batch["pgps_step"], "rows": batch["pgps_rows"],
                        "keys": list(batch["keys"]), "forced": batch["pgps_forced"],
                        "corners": batch["pgps_corners"], "shape": list(batch["data"].shape),
                        "loss": float(trainer.train_step(batch)["loss"]) if workers == 0 else None,
                    })  # fmt: skip
            trainer.dataloader_train.close()
            trainer.carbon.close()
            runs[f"{name}-{workers}"] = {"steps": steps, "schedule": trainer.schedule.to_dict(),
                                         "cases": list(trainer.dataset_tr.identifiers)}  # fmt: skip
    (out_dir / f"rank{rank}.json").write_text(json.dumps(runs))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
