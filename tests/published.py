"""Published values we reproduce, typed in from the papers in ../shared/papers/.

MICCAI = Fischer et al., "Progressive Growing of Patch Size", MICCAI 2024 (pgps-miccai-2024.txt).
"""

# MICCAI Supplemental Table 3: every training input tensor "b*x*y*z" of PGPS+ per MSD task; the
# plain (MICCAI) PGPS uses the final stage's batch size at every stage. The planned P_max is the
# last stage; b_base its batch size. Steps per axis are those the table's growth shows
# (its first stage is P_min doubled on axis 0).
MICCAI_SUPP_TABLE_3 = {
    "Brain": (
        (32, 32, 32),
        "24*64*32*32 12*64*64*32 6*64*64*64 4*96*64*64 3*96*96*64 2*96*96*96 2*128*96*96 2*128*128*96 2*128*128*128",
    ),
    "Heart": (
        (16, 32, 32),
        "24*32*32*32 12*32*64*32 6*32*64*64 4*48*64*64 3*48*96*64 2*48*96*96 2*64*96*96 "
        "2*64*128*96 2*64*128*128 2*80*128*128 2*80*160*128 2*80*160*160 2*80*192*160",
    ),
    "Liver": (
        (32, 32, 32),
        "24*64*32*32 12*64*64*32 6*64*64*64 4*96*64*64 3*96*96*64 2*96*96*96 2*128*96*96 2*128*128*96 2*128*128*128",
    ),
    "Hippocampus": (
        (8, 8, 8),
        "24*16*8*8 12*16*16*8 9*16*16*16 9*24*16*16 9*24*24*16 9*24*24*24 9*32*24*24 "
        "9*32*32*24 9*32*32*32 9*40*32*32 9*40*40*32 9*40*40*40 9*40*48*40 9*40*56*40",
    ),
    "Prostate": (
        (4, 64, 64),
        "24*8*64*64 12*8*128*64 6*8*128*128 4*12*128*128 3*12*192*128 2*12*192*192 "
        "2*16*192*192 2*16*256*192 2*16*256*256 2*20*256*256 2*20*320*256",
    ),
    "Lung": (
        (16, 32, 32),
        "24*32*32*32 12*32*64*32 6*32*64*64 4*48*64*64 3*48*96*64 2*48*96*96 2*64*96*96 "
        "2*64*128*96 2*64*128*128 2*80*128*128 2*80*160*128 2*80*160*160 2*80*192*160",
    ),
    "Pancreas": (
        (8, 32, 32),
        "24*16*32*32 12*16*64*32 6*16*64*64 4*24*64*64 3*24*96*64 2*24*96*96 2*32*96*96 "
        "2*32*128*96 2*32*128*128 2*40*128*128 2*40*160*128 2*40*160*160 2*40*192*160 "
        "2*40*192*192 2*40*224*192",
    ),
    "HepaticVessel": (
        (16, 32, 32),
        "24*32*32*32 12*32*64*32 6*32*64*64 4*48*64*64 3*48*96*64 2*48*96*96 "
        "2*64*96*96 2*64*128*96 2*64*128*128 2*64*160*128 2*64*160*160 2*64*192*160 "
        "2*64*192*192",
    ),
    "Spleen": (
        (16, 32, 32),
        "24*32*32*32 12*32*64*32 6*32*64*64 4*48*64*64 3*48*96*64 2*48*96*96 2*64*96*96 "
        "2*64*128*96 2*64*128*128 2*64*160*128 2*64*160*160 2*64*192*160",
    ),
    "Colon": (
        (8, 32, 32),
        "24*16*32*32 12*16*64*32 6*16*64*64 4*24*64*64 3*24*96*64 2*24*96*96 2*32*96*96 "
        "2*32*128*96 2*32*128*128 2*40*128*128 2*40*160*128 2*40*160*160 2*48*160*160 "
        "2*48*192*160 2*56*192*160",
    ),
}


def parse_supp_table_3(task: str) -> tuple[tuple[int, int, int], list[tuple[int, int, int]], list[int]]:
    """``(steps, stages, PGPS+ batch sizes)`` of a task of MICCAI Supplemental Table 3."""
    steps, text = MICCAI_SUPP_TABLE_3[task]
    stages, batches = [], []
    for entry in text.split():
        b, x, y, z = (int(v) for v in entry.split("*"))
        batches.append(b)
        stages.append((x, y, z))
    return steps, stages, batches


# MICCAI Table 1, "Voxels Shown" [%] (iterated voxels normalised to CPS), 1000 epochs.
MICCAI_TABLE_1_VOXELS = {
    #               PGPS    PGPS+
    "Brain": (38.08, 51.78),
    "Heart": (35.35, 39.35),
    "Liver": (38.08, 51.78),
    "Hippocampus": (35.05, 35.23),
    "Prostate": (30.32, 36.33),
    "Lung": (35.35, 39.35),
    "Pancreas": (33.93, 35.92),
    "HepaticVessel": (36.19, 40.36),
    "Spleen": (36.30, 45.81),
    "Colon": (32.21, 34.55),
}

# MICCAI Supplemental Table 2 (Task06 Lung): "Voxels Shown" of PGPS per training length,
# normalised to CPS at 100% iterations per epoch.
MICCAI_SUPP_TABLE_2_LUNG_PGPS = {0.10: 3.5, 0.25: 8.8, 0.50: 17.7, 1.00: 35.4}

# The same table's RPSS "Voxels Shown" at 100%, printed as approximate ("∼ 35.4 %"): RPSS draws
# "a random patch size of all patch sizes used for PGPS" (MICCAI Sec. 3.1).
MICCAI_SUPP_TABLE_2_LUNG_RPSS_APPROX = 35.4

# Journal (pgps-journal-2026.md, Sec. 4.2 / SPEC section 1): PGPS-Performance's first-stage batch
# size on MSD Hippocampus (P_max 40x56x40, b_base 9, P_min 8^3).
JOURNAL_HIPPOCAMPUS_FIRST_BATCH = 1575
