"""CodeCarbon support (pgps.nnunet.carbon): an offline tracker with one task per training epoch of a stage, on the
CPU, without the network; and a clear message when CodeCarbon is missing."""

from __future__ import annotations

import math
import socket
import sys

import pytest

from pgps.nnunet import carbon

needs_codecarbon = pytest.mark.skipif(
    carbon.offline_tracker_class() is None, reason="CodeCarbon is not installed (pip install 'pgps[carbon]')"
)


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection is recorded and refused."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("pgps tests: no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@needs_codecarbon
def test_offline_tracker_measures_each_epoch_task_without_network(tmp_path, no_network):
    logged = []
    run = carbon.RunCarbon(tmp_path, "test", mode="on", country="FRA", log=logged.append)
    assert run.enabled and "country FRA" in logged[0]
    rows = []
    for stage in (0, 0, 1):
        run.start_epoch(f"stage {stage}")
        sum(i * i for i in range(300_000))  # some CPU work to measure
        rows.append(run.end_epoch())
    run.close()
    for row in rows:
        assert set(row) == set(carbon.COLUMNS)
        assert math.isfinite(row["energy_kwh"]) and row["energy_kwh"] >= 0
        assert math.isfinite(row["co2_kg"]) and row["co2_kg"] >= 0
    total = carbon.totals(rows)
    assert total["energy_kwh"] == pytest.approx(sum(r["energy_kwh"] for r in rows))
    assert (tmp_path / carbon.EMISSIONS_FILE).is_file()
    assert no_network == []


def test_missing_codecarbon_says_so_once_and_leaves_gaps(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import codecarbon raises ImportError
    assert carbon.offline_tracker_class() is None
    logged = []
    with pytest.warns(UserWarning, match="CodeCarbon is not installed"):
        run = carbon.RunCarbon(tmp_path, "test", mode="auto", log=logged.append)
    assert not run.enabled and logged == [f"PGPS: {carbon.MISSING}"]
    assert "pip install 'pgps[carbon]'" in logged[0]
    run.start_epoch("stage 0")
    assert all(math.isnan(v) for v in run.end_epoch().values())
    run.close()
    assert carbon.totals([run.end_epoch(), {}]) == {"energy_kwh": None, "co2_kg": None}
    with pytest.raises(RuntimeError, match="PGPS_CARBON=on: CodeCarbon is not installed"):
        carbon.RunCarbon(tmp_path, "test", mode="on")
    assert not carbon.RunCarbon(tmp_path, "test", mode="off", log=logged.append).enabled and len(logged) == 1


@pytest.mark.parametrize(("value", "expected"), [("", "auto"), ("ON", "on"), ("0", "off"), ("true", "on")])
def test_setting_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(carbon.CARBON_ENV, value)
    assert carbon.setting() == expected


def test_bad_setting_is_refused(monkeypatch):
    monkeypatch.setenv(carbon.CARBON_ENV, "sometimes")
    with pytest.raises(ValueError, match="PGPS_CARBON must be auto, on or off"):
        carbon.setting()


@pytest.mark.parametrize(
    ("visible", "ddp", "world", "index", "expected"),
    [
        (None, False, 1, 0, [0]),
        ("3,5", False, 1, 0, [3]),  # pgps gpu-slot / SLURM: cuda:0 is NVML's GPU 3
        ("3,5", False, 1, 1, [5]),
        ("3,5", True, 2, 0, [3, 5]),  # DDP: rank 0 measures every rank's GPU
        (None, True, 4, 0, [0, 1, 2, 3]),
        ("GPU-8f1c,MIG-4d2e", True, 2, 0, ["GPU-8f1c", "MIG-4d2e"]),  # UUIDs, which CodeCarbon matches by prefix
    ],
)
def test_codecarbon_measures_the_gpus_the_run_uses(monkeypatch, visible, ddp, world, index, expected):
    import torch

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    passed = []
    monkeypatch.setattr(carbon, "RunCarbon", lambda folder, project, gpu_ids, mode, log: passed.append(gpu_ids))
    trainer = type("Trainer", (carbon.CarbonMixin,), {})()
    trainer.device, trainer.is_ddp, trainer.world_size = torch.device("cuda", index), ddp, world
    trainer.local_rank, trainer.output_folder, trainer.print_to_log_file = 0, "unused", print
    trainer._carbon_tracker()
    assert passed == [expected]


def test_a_device_outside_cuda_visible_devices_is_named():
    with pytest.raises(ValueError, match=r"CUDA device 2 is not among CUDA_VISIBLE_DEVICES='3,5'"):
        carbon.nvml_gpu_ids([2], visible="3,5")
    assert carbon.nvml_gpu_ids([1], visible="") == [1]
