"""Where a cifar10-pretrained cell's time goes: py-spy over one RMC cell and the JSMA / CW-L2 cells.

    python -m bench.benchmarks.profile_cells            # runs both profiles (a few minutes on a CPU)
    python -m bench.benchmarks.profile_cells --raw-dir D  # summarises D/rmc.txt and D/jsma.txt instead

Each profile is ``py-spy record -f raw`` (sampling at 50 Hz) of ``bench run`` on a small grid with
cifar10-pretrained's settings (the pretrained ResNet-32, D = test images 500-999, RMC K = 64 with a
10-epoch cap, targeted JSMA and CW-L2 at their defaults), 4 test points, one process. The summary is
each named piece's inclusive share of the samples, written to results/benchmarks/profile-cells.json.
Needs BENCH_DATA_DIR and BENCH_WEIGHTS_DIR (the CIFAR-10 test images and the ResNet-32 weights).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.benchmarks.common import cpu_model, write_figures

_COMMON = """dataset = "cifar10"
limit = 4
train_split = "test"
train_offset = 500
train_limit = 500
seed = 0
[train.standard]
source = "checkpoint"
arch = "resnet32"
checkpoint = "$BENCH_WEIGHTS_DIR/cifar10-resnet/resnet32-d509ac18.th"
"""
GRIDS = {
    "rmc": 'name = "profile-rmc"\n' + _COMMON + '[runtime.rmc]\nk = 64\ncopies = 1\nmax_epochs = 10\n'
           '[[attacks]]\nname = "pgd"\neps = "8/255"\n',
    "jsma": 'name = "profile-jsma"\n' + _COMMON + '[runtime.none]\n[[attacks]]\nname = "jsma"\n'
            'params = { targeted = true }\n[[attacks]]\nname = "cw-l2"\nparams = { targeted = true }\n',
}
#: The pieces reported, as (label, function name in the stacks); shares are inclusive.
PIECES = {
    "rmc": [("RMC cell, all of it", "Evaluator.run_cell"),
            ("build D' (PGD on the 500 images of D)", "build_database"),
            ("  of which PGD (the D' copies and the 4 test points)", "PGD.perturb"),
            ("RMC stream over the clean test points (clean accuracy)", "ArtifactStore.clean_predictions"),
            ("RMC streams, both (clean and adversarial)", "RMC.predict"),
            ("  local adaptation on the K neighbours (Algorithm 1)", "RMC.adapt"),
            ("  calibration step on K clean images of D", "RMC.calibrate_step"),
            ("  ResNet-32 forward + backward inside RMC", "RMC.fit_early_stopped")],
    "jsma": [("both cells", "Evaluator.run_cell"),
             ("CW-L2 (crafting and its unbounded rerun)", "CarliniWagnerL2.perturb"),
             ("JSMA (crafting and its unbounded rerun)", "JSMA.perturb"),
             ("  JSMA's pair search (best_pairs)", "best_pairs"),
             ("failure indicators (the unbounded reruns)", "unconstrained_failure")],
}


def inclusive_shares(raw: Path) -> tuple[int, Counter]:
    """Samples in total and, per function name, the samples whose stack contains it."""
    total, incl = 0, Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        names = {m.group(1) for m in (re.match(r"(.+?) \(", f) for f in stack.split(";")) if m}
        for name in names:
            incl[name] += n
    return total, incl


def summarise(raw_dir: Path) -> dict:
    out = {"cpu": cpu_model(), "rate_hz": 50}
    for kind, pieces in PIECES.items():
        total, incl = inclusive_shares(raw_dir / f"{kind}.txt")
        out[kind] = {"samples": total, "pieces": {label: round(100 * incl[fn] / max(total, 1), 1)
                                                   for label, fn in pieces}}
    return out


def record(raw_dir: Path) -> None:
    """Run py-spy over ``bench run`` of each profiling grid (fresh results and cache folders)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    bench = str(Path(sys.executable).with_name("bench"))
    for kind, text in GRIDS.items():
        work = Path(tempfile.mkdtemp(prefix=f"profile-{kind}-"))
        (work / "grid.toml").write_text(text)
        subprocess.run([spy, "record", "-r", "50", "-f", "raw", "-o", str(raw_dir / f"{kind}.txt"), "--",
                        bench, "run", "--grid", str(work / "grid.toml"), "--results-dir", str(work / "r"),
                        "--cache-dir", str(work / "c"), "--no-tracking", "--no-leaderboard", "--jobs", "1"],
                       check=True, env={**os.environ, "BENCH_NUM_THREADS": "1"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw-dir", type=Path, help="summarise existing rmc.txt / jsma.txt instead of recording")
    args = ap.parse_args()
    raw_dir = args.raw_dir or Path(tempfile.mkdtemp(prefix="profile-raw-"))
    if args.raw_dir is None:
        record(raw_dir)
    figures = summarise(raw_dir)
    for kind in PIECES:
        print(f"{kind}: {figures[kind]['samples']} samples ({figures['cpu']})")
        for label, share in figures[kind]["pieces"].items():
            print(f"  {share:5.1f}%  {label}")
    print(f"written {write_figures('profile-cells', figures)}")


if __name__ == "__main__":
    main()
