#!/usr/bin/env python3
"""Side-by-side timing of voxinfer's convolution kernels and oneDNN on the anchor layers.

The two systems run interleaved, round by round (voxinfer, oneDNN, oneDNN, voxinfer, ...),
so both see the same load on a shared machine. Each process times `--runs` calls after a
warm-up; a round keeps the fastest call, and the table reports the median over rounds.

  benchmarks/compare_onednn.py --bench build/benchmarks/voxinfer_bench_kernels \
      --dnnl path/to/anchors/build/dnnl_conv3d --layers bcdefg --threads 1,2 --isa avx2

oneDNN is capped to the same ISA (DNNL_MAX_CPU_ISA) and thread count (OMP_NUM_THREADS).
"""
import argparse
import os
import re
import statistics
import subprocess

LAYERS = {  # the anchors' table (anchors/common.py)
    "a": "op=conv,cin=1,cout=32,k=3,s=1,p=1,size=128",
    "b": "op=conv,cin=32,cout=32,k=3,s=1,p=1,size=128",
    "c": "op=conv,cin=64,cout=64,k=3,s=1,p=1,size=64",
    "d": "op=conv,cin=128,cout=128,k=3,s=1,p=1,size=32",
    "e": "op=conv,cin=256,cout=256,k=3,s=1,p=1,size=16",
    "f": "op=conv,cin=320,cout=320,k=3,s=1,p=1,size=8",
    "g": "op=conv,cin=32,cout=64,k=3,s=2,p=1,size=128",
    "h": "op=deconv,cin=64,cout=32,k=2,s=2,p=0,size=64",
    "i": "op=conv,cin=32,cout=3,k=1,s=1,p=0,size=128",
}
DNNL_ISA = {"avx2": "AVX2", "avx512": "AVX512_CORE"}


def flops(spec):
    d = dict(kv.split("=") for kv in spec.split(","))
    ci, co, k, s, p, n = (int(d[x]) for x in ("cin", "cout", "k", "s", "p", "size"))
    if d["op"] == "deconv":
        return 2.0 * ci * co * k**3 * n**3
    o = (n + 2 * p - k) // s + 1
    return 2.0 * ci * co * k**3 * o**3


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return float(re.search(r"min_ms=([\d.]+)", out).group(1)), out


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True, help="voxinfer_bench_kernels")
    ap.add_argument("--dnnl", required=True, help="dnnl_conv3d built from the anchors")
    ap.add_argument("--layers", default="bcdefg")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--isa", default="avx2", choices=sorted(DNNL_ISA))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    print("| layer | thr | ISA | voxinfer ms | oneDNN ms | voxinfer GF/s (% peak) | oneDNN GF/s (% peak) | oneDNN / voxinfer | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layer in args.layers:
        spec = LAYERS[layer]
        for thr in (int(t) for t in args.threads.split(",")):
            ours, theirs, loads, peak, impl = [], [], [], 0.0, ""
            common = ["--spec", spec, "--threads", str(thr), "--runs", str(args.runs), "--warmup", "1"]
            # voxinfer runs a 1x1x1 head with few classes as a session does: blocked input,
            # plain logits out (oneDNN writes its blocked, channel-padded dst; no reorder timed).
            ours_spec = ["--spec", spec + (",dst=plain" if layer == "i" else "")] + common[2:]
            env = dict(os.environ, DNNL_MAX_CPU_ISA=DNNL_ISA[args.isa], OMP_NUM_THREADS=str(thr))
            for r in range(args.rounds):
                order = ("v", "d") if r % 2 == 0 else ("d", "v")
                for who in order:
                    loads.append(loadavg())
                    if who == "v":
                        ms, out = run([args.bench, *ours_spec, "--isa", args.isa])
                        ours.append(ms)
                        peak = float(re.search(r"peak_gflops=([\d.]+)", out).group(1))
                        impl = re.search(r"impl=(\S+)", out).group(1)
                    else:
                        ms, _ = run([args.dnnl, *common], env=env)
                        theirs.append(ms)
            v, d = statistics.median(ours), statistics.median(theirs)
            gv, gd = flops(spec) / v * 1e-6, flops(spec) / d * 1e-6
            print(f"| {layer} | {thr} | {args.isa} ({impl}) | {v:.1f} | {d:.1f} | {gv:.1f} ({100 * gv / peak:.0f}%) "
                  f"| {gd:.1f} ({100 * gd / peak:.0f}%) | {d / v:.2f} | {statistics.median(loads):.1f} |", flush=True)
    print(f"\nFMA peak measured by voxinfer_bench_kernels for the ISA and thread count; rounds={args.rounds}, runs={args.runs}.")


if __name__ == "__main__":
    main()
