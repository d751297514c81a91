"""brainchop's MeshNet (model5_gw_ae) in plain PyTorch, built from its TF.js model.json and
weights: times a 256^3 forward, checks the argmax against brainchop's reference labels, and can
export the module to ONNX for ONNX Runtime (ort_bench.js of the performance anchors).

  python3 benchmarks/meshnet_torch.py --data DATA/brainchop_meshnet --threads 2 --runs 3 \
      [--export meshnet.onnx]

Prints 'torch median_ms=... min_ms=... times_ms=...' like voxinfer bench. Needs python3-torch.
"""
import json, sys, time, os, gzip, argparse
import numpy as np
import torch
ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--export", default="")
a = ap.parse_args()
torch.set_num_threads(a.threads)
d = os.path.join(a.data, "model5_gw_ae")
mj = json.load(open(os.path.join(d, "model.json")))
raw = np.fromfile(os.path.join(d, "group1-shard1of1.bin"), dtype="<f4")
ws, off = {}, 0
for w in mj["weightsManifest"][0]["weights"]:
    n = int(np.prod(w["shape"])); ws[w["name"]] = raw[off:off + n].reshape(w["shape"]); off += n
mods = []
for l in mj["modelTopology"]["model_config"]["config"]["layers"]:
    c = l["config"]; name = c["name"]
    if l["class_name"] == "Activation":
        assert c["activation"] == "relu"; mods.append(torch.nn.ReLU()); continue
    if l["class_name"] != "Conv3D": continue
    k = ws[name + "/kernel"]; b = ws[name + "/bias"]
    dil = c["dilation_rate"][0]; ks = k.shape[0]
    conv = torch.nn.Conv3d(k.shape[3], k.shape[4], ks, padding=dil * (ks // 2), dilation=dil)
    conv.weight.data = torch.from_numpy(np.ascontiguousarray(k.transpose(4, 3, 0, 1, 2)))
    conv.bias.data = torch.from_numpy(b.copy())
    mods.append(conv)
    if c.get("activation") == "relu": mods.append(torch.nn.ReLU())
net = torch.nn.Sequential(*mods).eval()
def nii(p):
    import struct
    b = gzip.open(p).read(); vox = int(struct.unpack("<f", b[108:112])[0]); dim = struct.unpack("<8h", b[40:56]); dt = struct.unpack("<h", b[70:72])[0]
    return np.frombuffer(b[vox:], dtype={2: np.uint8}[dt]).reshape(dim[3], dim[2], dim[1]).transpose(2, 1, 0)
v = nii(os.path.join(a.data, "input/t1_crop.nii.gz")).astype(np.float32)
x = torch.from_numpy(((v - v.min()) / (v.max() - v.min()))[None, None].copy())
ref = nii(os.path.join(a.data, "expected/t1_crop_model5_gw_ae_labels.nii.gz"))
times = []
with torch.inference_mode():
    for r in range(a.runs + 1):
        t = time.perf_counter(); y = net(x); dt = (time.perf_counter() - t) * 1000
        if r: times.append(dt)
        print(f"run {r} {dt:.0f} ms", flush=True)
    lab = y.argmax(1)[0].numpy()
print("agree", (lab == ref).mean())
if times:  # --runs 0: one untimed forward (for --export)
    print(f"torch median_ms={np.median(times):.1f} min_ms={min(times):.1f} times_ms=" + ";".join(f"{t:.1f}" for t in times))
if a.export:
    torch.onnx.export(net, x[:, :, :64, :64, :64], a.export, opset_version=13, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {2: "D", 3: "H", 4: "W"}, "output": {2: "D", 3: "H", 4: "W"}})
