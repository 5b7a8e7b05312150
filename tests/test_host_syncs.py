"""Host synchronisations per batch on the (emulated) GPU: counted by ``tests/cuda_emulation.py``.

On a GPU every operation whose result the host must read (a scalar, a data-dependent size, a copy to
the host, a blocking copy to the device) waits for the queued kernels. The batched augmentation that
PGPS-Performance trainers run on the device (:mod:`pgps.nnunet.loading.batched`) and the per-batch
telemetry must make a small fixed number of them per batch, whatever the batch size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.cuda_emulation import SYNC_KINDS, EmulatedCuda

# -- the counter itself ----------------------------------------------------------------------------


def _sync_cases(x: torch.Tensor, mask: torch.Tensor) -> dict[str, object]:
    """One operation per counted kind on CUDA tensors ``x`` (4, 3) float and ``mask`` (4, 3) bool."""
    values = x[mask] + 1  # (made here, outside the counted calls)
    return {
        "item": lambda: x[0, 0].item(),
        "int": lambda: int(x[0, 0]),
        "float": lambda: float(x.sum()),
        "bool": lambda: bool(mask.any()),
        "index": lambda: [0, 1, 2][x[0, 1].long()],
        "format": lambda: f"{x[0, 0]:.1f}",
        "tolist": lambda: x.tolist(),
        "nonzero": (lambda: mask.nonzero(), lambda: torch.nonzero(mask), lambda: torch.where(mask),
                    lambda: torch.argwhere(mask)),
        "mask_index": (lambda: x[mask], lambda: x[:, mask[0]], lambda: torch.masked_select(x, mask)),
        "mask_assign": (lambda: x.__setitem__(mask, values),
                        lambda: x.__setitem__(mask, torch.full((), 2.0, device=x.device))),  # a CUDA value
        "unique": (lambda: torch.unique(mask), lambda: x.unique(dim=0)),
        "bincount": lambda: torch.bincount(x.long().flatten()),
        "repeat_interleave": lambda: torch.arange(3, device=x.device).repeat_interleave(x[0].long()),
        "equal": lambda: torch.equal(x, x),
        "d2h": (lambda: x.cpu(), lambda: x.to("cpu"), lambda: x.to(torch.device("cpu"), torch.float64),
                lambda: torch.empty(4, 3).copy_(x)),
        "h2d": (lambda: torch.ones(3).cuda(), lambda: torch.ones(3).to("cuda"), lambda: torch.ones(3).to(x),
                lambda: torch.ones(3).to("cuda", non_blocking=True),  # pageable memory: the copy is staged
                lambda: torch.tensor([1, 2], device="cuda"), lambda: x[torch.tensor([0, 2])],
                lambda: torch.empty(3, device="cuda").copy_(torch.ones(3))),
    }  # fmt: skip


def test_each_kind_of_host_sync_is_counted_once():
    with EmulatedCuda() as emu:
        x = torch.arange(12.0).view(4, 3).cuda()
        mask = x > 4
        cases = _sync_cases(x, mask)
        assert set(cases) == set(SYNC_KINDS)
        for kind, calls in cases.items():
            for call in calls if isinstance(calls, tuple) else (calls,):
                with emu.counting() as counted:
                    call()
                assert counted.syncs == {kind: 1}, (kind, counted.syncs)
                assert counted.total == 1
        assert sum(emu.syncs.values()) > len(SYNC_KINDS)
        syncs, transfers = emu.reset_counts()
        assert syncs["h2d"] >= 7 and transfers["h2d"] == syncs["h2d"] and not emu.syncs and not emu.transfers


def test_what_does_not_sync_is_not_counted():
    with EmulatedCuda() as emu:
        x = torch.arange(12.0).view(4, 3).cuda()
        mask, rows = x > 4, torch.tensor([0, 2]).cuda()
        pinned = torch.ones(5).pin_memory()
        assert pinned.is_pinned() and not torch.ones(5).is_pinned()
        with emu.counting() as counted:
            y = (x * 2 + 1).exp().sum(1)  # arithmetic and reductions stay on the device
            torch.where(mask, x, torch.zeros_like(x))
            torch.where(mask, x, 0.0)
            x.masked_fill(mask, 0)
            x[mask] = 0  # torch makes it a masked_fill_ (a one-element CPU value)
            x[mask] = torch.tensor(1.0)
            x[rows], x.index_select(0, rows), x.index_add_(0, rows, torch.ones(2, 3, device="cuda"))
            x[rows] = 3.0
            x * torch.tensor(2.0)  # a CPU scalar operand, not a copy
            torch.arange(3, device="cuda"), torch.zeros(2, 3, device=x.device), torch.full((2,), 7, device="cuda")
            torch.randn(3, generator=torch.Generator(device="cuda").manual_seed(1), device="cuda")
            x.argmax(1), x.max(), x.sort(1), x.cumsum(0), torch.isin(x, x[0])
            torch.arange(3, device="cuda").repeat_interleave(2)
            x.shape, len(x), x.device, x.dtype, x.numel()
            copied = pinned.to("cuda", non_blocking=True)  # the one kind of copy that does not wait
            y.cpu()  # ... except this one
            torch.ones(3).to("cpu"), torch.ones(3).float()  # host only
        assert counted.syncs == {"d2h": 1}
        assert counted.transfers == {"h2d": 1, "d2h": 1}
        assert emu.device_of(copied).type == "cuda"


# -- the batched augmentation and the telemetry, per batch -----------------------------------------

CONFIGS = {
    # name: (patch, dummy-2D, AugmentationSpec.from_transform_args keywords)
    "labels": ((8, 12, 10), False, {}),
    "regions": ((8, 12, 10), False, {"regions": [[1, 2, 3], [2, 3], 3], "ignore_label": 4,
                                     "use_mask_for_norm": [True, False],
                                     "deep_supervision_scales": [[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]}),
    "dummy_2d": ((4, 12, 10), True, {"deep_supervision_scales": [[1, 1, 1], [1, 0.5, 0.5]]}),
}  # fmt: skip


def augmentation_inputs(batched, config: str, b: int, seed: int = 0):
    """A raw batch (CPU tensors) in which every step of the augmentation runs on some samples, and its spec.

    Half the samples are rotated or scaled (enlarged crops with one, two and more labels, the crop
    padding label -1 and, with regions, the ignore label); every intensity step is on for half the samples.
    """
    from tests.test_batched import blob_labels

    patch, dummy_2d, kwargs = CONFIGS[config]
    kwargs = dict(kwargs)
    rotation = (-np.pi, np.pi) if dummy_2d else (-np.pi / 6, np.pi / 6)
    ds = kwargs.pop("deep_supervision_scales", None)
    spec = batched.AugmentationSpec.from_transform_args(patch, rotation, ds, (0, 1, 2), dummy_2d, **kwargs)
    c = 2
    rng = np.random.default_rng(seed)
    p = batched.sample_parameters(spec, b, c, rng)
    half = np.arange(b) % 2 == 0
    p.spatial = half
    p.angles = rng.uniform(*rotation, (b, 3))
    p.scales = rng.uniform(0.7, 1.4, b)
    p.affine = batched.affine_matrices(p.angles[half], p.scales[half], 2 if dummy_2d else 3)
    for name, value in vars(p).items():
        if name.endswith("_apply"):
            value[...] = (half[:, None] if value.ndim == 2 else half) == (name.startswith(("blur", "gamma_")))
    p.mirror[:] = rng.random((b, 3)) < 0.5
    window = batched.enlarged_patch_size(spec)
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(b, c, *patch, generator=gen)
    big_image = torch.randn(int(half.sum()), c, *window, generator=gen)
    seg, big_seg = blob_labels(b, patch, seed), blob_labels(int(half.sum()), window, seed + 1)
    if spec.regions is not None:
        seg[:, :, -1], big_seg[:, :, -3:] = 4, 4
    return batched.RawBatch(image, seg, big_image, big_seg, p, spec)


def augment_counted(batched, config: str, b: int, seed: int = 0) -> tuple[dict, object, object]:
    """Augment a batch on the emulated GPU as the trainer does (pinned CPU tensors, then the device):
    ``(output on the host, the augmentation's counts, the telemetry's counts)``."""
    import dataclasses

    from pgps.nnunet.telemetry import Telemetry

    raw = augmentation_inputs(batched, config, b, seed)
    regions = raw.spec.regions is not None
    telemetry = Telemetry([1, 2, 3], has_regions=regions, ignore_label=4 if regions else None)
    with EmulatedCuda() as emu:
        fields = ("image", "seg", "big_image", "big_seg")
        pinned = dataclasses.replace(raw, **{f: getattr(raw, f).pin_memory() for f in fields})
        with emu.counting() as counted:
            out = batched.augment(pinned, "cuda")
        tensors = [out["data"], *(out["target"] if isinstance(out["target"], list) else [out["target"]])]
        assert all(emu.device_of(t).type == "cuda" for t in tensors)
        telemetry.add(out["data"], out["target"], fallbacks=0)  # the first batch makes the labels on the device
        with emu.counting() as told:
            telemetry.add(out["data"], out["target"], fallbacks=0)
        host = {k: [t.cpu() for t in v] if isinstance(v, list) else v.cpu() for k, v in out.items()}
    return host, counted, told


@pytest.mark.nnunet
@pytest.mark.parametrize("config", list(CONFIGS))
def test_one_batch_makes_a_few_host_syncs_whatever_its_size(config):
    """At most the stated number of host syncs per batch (``MAX_HOST_SYNCS``) for batch sizes 2 to 32, the same
    number for every size; the batch's values are those the CPU computes; the per-batch telemetry makes none."""
    from pgps.nnunet.loading import batched

    totals = {}
    for b in (2, 16, 32):
        out, counted, told = augment_counted(batched, config, b, seed=b)
        assert counted.total <= getattr(batched, "MAX_HOST_SYNCS", 3), (b, counted.syncs)
        assert counted.syncs["h2d"] == 0, counted.syncs  # parameters and indices go in pinned non-blocking copies
        assert counted.transfers["h2d"] <= 4 + 2, counted.transfers  # the batch's 4 tensors, 2 of parameters
        assert told.total == 0 and not told.transfers, told.syncs
        totals[b] = counted.total
        expected = batched.augment(augmentation_inputs(batched, config, b, seed=b))
        assert torch.equal(out["data"], expected["data"])
        targets = [t if isinstance(t, list) else [t] for t in (out["target"], expected["target"])]
        for ours, cpu in zip(*targets, strict=True):
            assert torch.equal(ours, cpu)
    assert len(set(totals.values())) == 1, totals


@pytest.mark.nnunet
def test_a_batch_without_spatial_samples_makes_no_host_sync():
    from pgps.nnunet.loading import batched

    raw = augmentation_inputs(batched, "regions", 8)
    raw.params.spatial[:] = False
    raw.params.affine = raw.params.affine[:0]
    with EmulatedCuda() as emu:
        pinned = batched.RawBatch(*(t.pin_memory() for t in (raw.image, raw.seg, raw.big_image[:0], raw.big_seg[:0])),
                                  raw.params, raw.spec)  # fmt: skip
        with emu.counting() as counted:
            batched.augment(pinned, "cuda")
    assert counted.total == 0, counted.syncs
    assert counted.transfers == {"h2d": 4 + 1}  # the batch's tensors and the parameters, pinned and non-blocking
