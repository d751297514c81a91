#!/usr/bin/env python3
"""Times Session.run from Python against `voxinfer bench` on the same model, interleaved.

    PYTHONPATH=build/python python3 scripts/bench_python.py MODEL --shape 1,1,96,96,96 \
        --threads 2 --runs 10 --rounds 3 [--cli build/examples/voxinfer]

Each round runs the command line's bench (its own process: warm-up, then --runs timed runs),
then the same runs from Python on a float32 array, and prints both medians; the last line
gives the median over all rounds and the ratio python/bench.
"""

import argparse
import pathlib
import re
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
    p.add_argument("--cli", default=str(pathlib.Path(voxinfer._voxinfer.__file__).resolve().parents[2] / "examples" / "voxinfer"))
    a = p.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    session = voxinfer.Session(a.model, threads=a.threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    bench_all, python_all = [], []
    for r in range(a.rounds):
        out = subprocess.run([a.cli, "bench", a.model, "--shape", a.shape, "--threads", str(a.threads), "--runs", str(a.runs),
                              "--warmup", str(a.warmup)], capture_output=True, text=True, check=True).stdout
        bench = [float(t) for t in re.search(r"times_ms=(\S+)", out).group(1).split(";") if t]
        for _ in range(a.warmup):
            session.run(x)
        py = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            session.run(x)
            py.append(1000 * (time.perf_counter() - t0))
        bench_all += bench
        python_all += py
        print(f"round {r + 1}: bench median_ms={statistics.median(bench):.1f}  python median_ms={statistics.median(py):.1f}")
    b, q = statistics.median(bench_all), statistics.median(python_all)
    print(f"all: bench median_ms={b:.1f} min_ms={min(bench_all):.1f}  python median_ms={q:.1f} min_ms={min(python_all):.1f}  "
          f"python/bench={q / b:.3f}")


if __name__ == "__main__":
    main()
