"""One short GPU check: the cifar10 smoke (RMC's streams batched, `--stream-batch` auto) and the same
smoke with streams one at a time (do the records agree on this device?), `bench estimate` on the
device, the attack-speed benchmark, RMC's cost per point at K = 1,024, the batched-streams ratio
(B = 1, 4, 16 RMC streams on ResNet-32 at K = 1,024; on CPU batching measured slower, the GPU is
what it is for) and an RMC cell's wall time against n and K (``bench.benchmarks.rmc_cifar --sweep``),
gathered into results/benchmarks/gpu.json.

    python -m bench.benchmarks.gpu_check --data-dir ../shared/data --weights-dir ../shared/weights
    tox -e gpu-check

Each step runs as its own process with a time limit; a step that fails or times out is recorded with
its exit code and last lines, and the others still run, so one short device session yields every
figure it can. ``--device cpu`` (with ``--grid ci --skip attacks,rmc``) rehearses it without a GPU;
``BENCH_STREAM_BATCH=4`` batches the CPU smoke's streams, as a GPU's would be.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STEPS = ("smoke", "streams", "estimate", "attacks", "rmc", "batched", "scaling")


def _run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:  # its output is bytes, whatever text= says
        code, out = "timeout", (exc.stdout or b"").decode(errors="replace")
    return {"command": " ".join(cmd), "exit": code, "wall_s": round(time.perf_counter() - start, 1),
            "tail": out.strip().splitlines()[-15:]}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _compare_streams(bench: list[str], args: Any, data_dir: Path, work: Path, batched: list[dict[str, Any]],
                     env: dict[str, str]) -> dict[str, Any]:
    """The smoke again with RMC's streams one at a time (the smoke ran them batched, `--stream-batch`
    auto on a GPU): do the batched cells' records equal the sequential ones on this device?"""
    step = _run([*bench, "run", "--grid", args.grid, "--smoke", "--synthetic", "--device", args.device,
                 "--data-dir", str(data_dir), "--results-dir", str(work / "results-seq"), "--cache-dir",
                 str(work / "cache"), "--no-tracking", "--stream-batch", "1"], Path.cwd(), args.timeout, env)
    from bench.track.results import load_records

    seq = {r["cell_id"]: r for f in (work / "results-seq").glob("*.smoke.jsonl") for r in load_records(f)}
    cells = [r for r in batched if r.get("stream_batch") and r["cell_id"] in seq]
    step.update(batched_cells=len(cells),
                equal_per_example=sum(r["per_example"] == seq[r["cell_id"]]["per_example"] for r in cells),
                # stream time only (each stream's share of every step): the sequential run reads the
                # batched run's cached adversarial examples, so whole-cell seconds would not compare
                batched_stream_s=round(sum(sum(r.get("per_point_delay_s", [])) for r in cells), 2),
                sequential_stream_s=round(sum(sum(seq[r["cell_id"]].get("per_point_delay_s", [])) for r in cells), 2))
    return step


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--grid", default="cifar10", help="Grid to smoke and estimate.")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--weights-dir", default="../shared/weights")
    p.add_argument("--skip", default="", help=f"Comma-separated steps to skip: {', '.join(STEPS)}.")
    p.add_argument("--timeout", type=float, default=240, help="Seconds per step.")
    p.add_argument("--out", default="results/benchmarks/gpu.json")
    args = p.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    data_dir, weights = Path(args.data_dir).resolve(), Path(args.weights_dir).resolve()
    resnet32 = weights / "cifar10-resnet" / "resnet32-d509ac18.th"
    py, env = sys.executable, {**os.environ, "BENCH_WEIGHTS_DIR": str(weights)}
    bench = [py, "-m", "bench"]
    figures: dict[str, Any] = {"device": args.device, "grid": args.grid, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                                    time.gmtime())}
    try:
        import torch

        figures["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        figures["torch"] = torch.__version__
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        figures["gpu"] = f"unknown ({exc})"
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        if "smoke" not in skip:
            step = _run([*bench, "run", "--grid", args.grid, "--smoke", "--synthetic", "--device", args.device,
                         "--data-dir", str(data_dir), "--results-dir", str(work / "results"), "--cache-dir",
                         str(work / "cache"), "--no-tracking"], Path.cwd(), args.timeout, env)
            recs = [json.loads(line) for f in (work / "results").glob("*.smoke.jsonl")
                    for line in f.read_text().splitlines() if line.strip()]
            if recs:
                top = max(recs, key=lambda r: r.get("peak_cuda_mb", r.get("peak_rss_mb", 0)))
                step.update(cells=len(recs), failed=sum(r["status"] != "ok" for r in recs),
                            largest_cell=top["key"], peak_cuda_mb=top.get("peak_cuda_mb"),
                            peak_rss_mb=top.get("peak_rss_mb"))
            figures["smoke"] = step
            if "streams" not in skip and recs:
                figures["streams"] = _compare_streams(bench, args, data_dir, work, recs, env)
        if "estimate" not in skip:
            step = _run([*bench, "estimate", "--grid", args.grid, "--device", args.device, "--synthetic",
                         "--data-dir", str(data_dir)], Path.cwd(), args.timeout, env)
            step["total"] = next((line for line in step["tail"] if line.startswith("total:")), None)
            figures["estimate"] = step
        if "attacks" not in skip:
            step = _run([py, "-m", "bench.benchmarks.attacks", "--device", args.device, "--data-dir", str(data_dir),
                         "--weights", str(resnet32)], work, args.timeout, env)
            step["figures"] = _read_json(work / "results" / "benchmarks" / "attacks.json")
            figures["attacks"] = step
        if "rmc" not in skip:
            step = _run([py, "-m", "bench.benchmarks.rmc_floor", "--dataset", "cifar10", "--arch", "resnet32",
                         "--data-dir", str(data_dir), "--weights", str(resnet32), "--db-size", "500", "--k", "1024",
                         "--points", "5", "--device", args.device, "--label", "gpu"], work, args.timeout, env)
            step["figures"] = _read_json(work / "results" / "benchmarks" / "rmc_floor.json")
            figures["rmc"] = step
        if "batched" not in skip:
            step = _run([py, "-m", "bench.benchmarks.rmc_batched", "--dataset", "cifar10", "--data-dir", str(data_dir),
                         "--weights", str(resnet32), "--db-size", "500", "--k", "1024", "--max-epochs", "2",
                         "--points", "1", "--streams", "1", "4", "16", "--device", args.device, "--cache-dir",
                         str(work / "cache")], work, args.timeout, env)
            step["figures"] = _read_json(work / "results" / "benchmarks" / "rmc_batched.json")
            figures["batched"] = step
        if "scaling" not in skip:  # an RMC cell's wall time against n and K (docs/performance-and-cost.md)
            step = _run([py, "-m", "bench.benchmarks.rmc_cifar", "--sweep", "--k", "64", "256", "1024", "--n", "25",
                         "50", "100", "--n-max-for-k", "256=50", "1024=25", "--device", args.device, "--data-dir",
                         str(data_dir), "--weights-dir", str(weights), "--cache-dir", str(work / "cache")],
                        work, args.timeout, env)
            # the sweep names its file by device (rmc-scaling.json, rmc-scaling-cuda.json): read what it wrote
            written = sorted((work / "results" / "benchmarks").glob("rmc-scaling*.json"))
            step["figures"] = _read_json(written[0]) if written else None
            figures["scaling"] = step
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {out}")
    return figures


if __name__ == "__main__":
    main()
