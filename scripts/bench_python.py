#!/usr/bin/env python3
"""Times Session.run from Python against `voxinfer bench` on the same model, interleaved.

    PYTHONPATH=build/python python3 scripts/bench_python.py MODEL --shape 1,1,96,96,96 \
        --threads 2 --runs 10 --rounds 3 [--cli build/examples/voxinfer] \
        [--ort "node ANCHORS/ort_bench.js"]

Each round runs the command line's bench (its own process: warm-up, then --runs timed runs),
then the same runs from Python on a float32 array, and, with --ort, ONNX Runtime on the same
model and shape in its own process (any command that takes MODEL --shape S --threads T --runs R
--warmup W and prints a `times_ms=a;b;...` line, as the anchors' ort_bench.js does). It prints
the medians per round; the last lines give the medians over all rounds and the ratios.
"""

import argparse
import pathlib
import re
import shlex
import statistics
import subprocess
import time

import numpy as np

import voxinfer


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--shape", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ort", help="command that times the model in ONNX Runtime (e.g. 'node ort_bench.js')")
    p.add_argument("--cli", default=str(pathlib.Path(voxinfer._voxinfer.__file__).resolve().parents[2] / "examples" / "voxinfer"))
    a = p.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    session = voxinfer.Session(a.model, threads=a.threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    common = ["--shape", a.shape, "--threads", str(a.threads), "--runs", str(a.runs), "--warmup", str(a.warmup)]

    def external(cmd):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return [float(t) for t in re.search(r"times_ms=(\S+)", out).group(1).split(";") if t]

    bench_all, python_all, ort_all = [], [], []
    for r in range(a.rounds):
        bench = external([a.cli, "bench", a.model] + common)
        for _ in range(a.warmup):
            session.run(x)
        py = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            session.run(x)
            py.append(1000 * (time.perf_counter() - t0))
        bench_all += bench
        python_all += py
        line = f"round {r + 1}: bench median_ms={statistics.median(bench):.1f}  python median_ms={statistics.median(py):.1f}"
        if a.ort:
            ort = external(shlex.split(a.ort) + [a.model] + common)
            ort_all += ort
            line += f"  ort median_ms={statistics.median(ort):.1f}"
        print(line, flush=True)
    b, q = statistics.median(bench_all), statistics.median(python_all)
    print(f"all: bench median_ms={b:.1f} min_ms={min(bench_all):.1f}  python median_ms={q:.1f} min_ms={min(python_all):.1f}  "
          f"python/bench={q / b:.3f}")
    if ort_all:
        o = statistics.median(ort_all)
        print(f"all: ort median_ms={o:.1f} min_ms={min(ort_all):.1f}  ort/python={o / q:.2f}  ort/bench={o / b:.2f}")


if __name__ == "__main__":
    main()
