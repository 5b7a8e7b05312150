"""One rank of tests/test_torch_loop.py's gloo check: ``ddp_worker.py RAW STORE RANK WORLD_SIZE OUT``.

Trains a tiny DDP network on its slice of every step of the test's schedule and saves its batches,
the rows all ranks saw (``all_gather_object``) and its final weights to ``OUT/rank<RANK>.pt``.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_torch_loop import SCHEDULE, load_case

import pgps.torch


def main(raw: str, store: str, rank: int, world_size: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    sampler = pgps.torch.CurriculumBatchSampler(SCHEDULE, num_cases=6, seed=4, rank=rank, world_size=world_size)
    dataset = pgps.torch.PatchDataset(load=load_case(Path(raw)), num_cases=6)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=pgps.torch.collate_patches)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 2, 1))
    model = torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    batches, gathered = [], []
    while not sampler.finished:
        for batch in loader:
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"][:, 0])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            rows = [None] * world_size
            dist.all_gather_object(rows, batch["pgps_row"].tolist())
            gathered.append(rows)
            batches.append({k: batch[k] for k in ("pgps_row", "image", "label", "pgps_step")})
    weights = [p.detach().clone() for p in net.parameters()]
    torch.save({"batches": batches, "gathered": gathered, "weights": weights}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
