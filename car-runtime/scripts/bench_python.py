#!/usr/bin/env python3
"""The equivalent Python pipeline, for `car-runtime bench --python`.

Same frames, same model, same mapping as the Rust bench, done the way the
stock DeepRacer / DonkeyCar stacks do it: OpenCV decodes the full JPEG,
converts to grey and resizes (INTER_LINEAR) to the model's input, onnxruntime
runs the model, numpy does the stock action mapping. Prints one JSON object
in the Rust bench's shape.

Needs: opencv-python-headless, onnxruntime, numpy (pip).
"""
import argparse
import glob
import json
import os
import resource
import time

import cv2
import numpy as np
import onnxruntime as ort


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return 0.0
    k = max(0, min(len(xs) - 1, int(np.ceil(p / 100.0 * len(xs))) - 1))
    return xs[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames-dir", required=True)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=30)
    a = ap.parse_args()

    meta = json.load(open(os.path.join(a.model, "model_metadata.json")))
    space = meta["action_space"]
    if meta.get("action_space_type", "discrete") != "discrete":
        raise SystemExit("bench_python.py: only discrete action spaces")
    angles = np.array([x["steering_angle"] for x in space], np.float32)
    speeds = np.array([x["speed"] for x in space], np.float32)
    max_angle = float(np.abs(angles).max()) or 1.0
    vmax = float(speeds.max()) or 1.0
    ca, cb = -1.2 / vmax**2, 2.2 / vmax

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(a.model, "model.onnx"), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    nhwc = shape[3] in (1, 3)
    h, w, c = (shape[1], shape[2], shape[3]) if nhwc else (shape[2], shape[3], shape[1])

    files = sorted(glob.glob(os.path.join(a.frames_dir, "*.jpg")))
    data = [open(f, "rb").read() for f in files]
    stages = {k: [] for k in ["decode", "preprocess", "inference", "mapping", "actuate", "total"]}
    total = a.warmup + a.frames
    t_start = None
    for i in range(total):
        if i == a.warmup:
            t_start = time.perf_counter()
        buf = np.frombuffer(data[i % len(data)], np.uint8)
        t0 = time.perf_counter()
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        t1 = time.perf_counter()
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        if c == 1:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        x = img.astype(np.float32)
        x = x[None] if nhwc else x.transpose(2, 0, 1)[None]
        t2 = time.perf_counter()
        out = sess.run(None, {inp.name: x})[0][0]
        t3 = time.perf_counter()
        k = int(np.argmax(out))
        steer = float(np.clip(angles[k] / max_angle, -1, 1))
        v = float(speeds[k])
        throttle = float(np.clip(ca * v * v + cb * v, -1, 1))
        t4 = time.perf_counter()
        _ = (steer, throttle)  # the write to a null actuator
        t5 = time.perf_counter()
        if i >= a.warmup:
            ms = lambda d: d * 1e3
            stages["decode"].append(ms(t1 - t0))
            stages["preprocess"].append(ms(t2 - t1))
            stages["inference"].append(ms(t3 - t2))
            stages["mapping"].append(ms(t4 - t3))
            stages["actuate"].append(ms(t5 - t4))
            stages["total"].append(ms(t5 - t0))
    elapsed = time.perf_counter() - t_start
    print(json.dumps({
        "backend": "python-onnxruntime-" + ort.__version__ + "+opencv-" + cv2.__version__,
        "frames": a.frames,
        "fps": a.frames / elapsed,
        "stages_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in stages.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
