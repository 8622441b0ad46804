#!/usr/bin/env python3
"""The stock-style Python pipeline, for comparison with `car-runtime bench`.

OpenCV decode -> resize to the model's input (INTER_LINEAR, as DeepRacer) ->
grayscale (cvtColor, ITU-R 601) -> onnxruntime (one intra-op thread) -> the
stock action mapping. Runs over a folder of 640x480 JPEGs and prints JSON:

  {"backend": "onnxruntime-python", "frames": N, "fps": ..,
   "stages_ms": {"decode": {"p50": .., "p99": ..}, "preprocess": {..},
                 "inference": {..}, "mapping": {..}, "total": {..}},
   "versions": {...}}

Needs: pip install onnxruntime opencv-python-headless numpy
"""
import argparse
import json
import os
import sys
import time


def percentile(values, q):
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def load_action_space(model_dir):
    with open(os.path.join(model_dir, "model_metadata.json")) as f:
        meta = json.load(f)
    kind = meta.get("action_space_type", "discrete")
    space = meta["action_space"]
    if kind == "continuous":
        steer, speed = space["steering_angle"], space["speed"]
        max_angle = max(abs(steer["low"]), abs(steer["high"]))
        vmax = max(speed["low"], speed["high"])
    else:
        max_angle = max(abs(a["steering_angle"]) for a in space)
        vmax = max(a["speed"] for a in space)
    return kind, space, max_angle, vmax


def make_mapper(model_dir, max_speed_scale):
    import numpy as np

    kind, space, max_angle, vmax = load_action_space(model_dir)
    a = -1.2 / (vmax * vmax) if vmax > 0 else 0.0
    b = 2.2 / vmax if vmax > 0 else 0.0

    def finish(index, angle, speed):
        steering = angle / max_angle if max_angle > 0 else 0.0
        throttle = max_speed_scale * min(1.0, max(-1.0, a * speed * speed + b * speed))
        return {"index": index, "steering_angle": angle, "speed": speed,
                "steering": steering, "throttle": throttle}

    if kind == "continuous":
        s_lo, s_hi = space["steering_angle"]["low"], space["steering_angle"]["high"]
        v_lo, v_hi = space["speed"]["low"], space["speed"]["high"]

        def mapper(out):
            x = np.clip(out.reshape(-1)[:2], -1.0, 1.0)
            angle = s_lo + (float(x[0]) + 1.0) * 0.5 * (s_hi - s_lo)
            speed = v_lo + (float(x[1]) + 1.0) * 0.5 * (v_hi - v_lo)
            return finish(None, angle, speed)
    else:
        def mapper(out):
            i = int(np.argmax(out.reshape(-1)))
            return finish(i, float(space[i]["steering_angle"]), float(space[i]["speed"]))
    return mapper


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder with model.onnx and model_metadata.json")
    ap.add_argument("--frames-dir", required=True, help="folder of 640x480 JPEG frames")
    ap.add_argument("--frames", type=int, default=0, help="frames to time (default: all, cycling to at least 200)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--max-speed", type=float, default=1.0, help="max_speed_scale in [0, 1]")
    args = ap.parse_args()

    try:
        import cv2
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(f"bench_python: missing package ({e}); pip install onnxruntime opencv-python-headless numpy", file=sys.stderr)
        return 77

    cv2.setNumThreads(1)
    names = sorted(n for n in os.listdir(args.frames_dir) if n.lower().endswith((".jpg", ".jpeg")))
    if not names:
        print(f"bench_python: no JPEG files in {args.frames_dir}", file=sys.stderr)
        return 2
    blobs = []
    for n in names:
        with open(os.path.join(args.frames_dir, n), "rb") as f:
            blobs.append(np.frombuffer(f.read(), dtype=np.uint8))

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(os.path.join(args.model, "model.onnx"), sess_options=opts,
                                providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    inp = sess.get_inputs()[0]
    shape = [1 if (not isinstance(d, int) or d < 0) else d for d in inp.shape]
    if shape[3] in (1, 3) and shape[1] not in (1, 3):
        layout, h, w, c = "NHWC", shape[1], shape[2], shape[3]
    else:
        layout, c, h, w = "NCHW", shape[1], shape[2], shape[3]
    mapper = make_mapper(args.model, args.max_speed)

    total = args.frames if args.frames > 0 else max(200, len(blobs))
    stages = {k: [] for k in ("decode", "preprocess", "inference", "mapping", "total")}
    for i in range(args.warmup + total):
        blob = blobs[i % len(blobs)]
        t0 = time.perf_counter()
        img = cv2.imdecode(blob, cv2.IMREAD_COLOR)  # BGR, like the stock camera node
        t1 = time.perf_counter()
        small = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        if c == 1:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)[:, :, None]
        else:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        x = small.astype(np.float32)
        if layout == "NCHW":
            x = np.transpose(x, (2, 0, 1))
        x = np.ascontiguousarray(x[None])
        t2 = time.perf_counter()
        out = sess.run(None, {inp.name: x})[0]
        t3 = time.perf_counter()
        action = mapper(out)
        t4 = time.perf_counter()
        if i >= args.warmup:
            for k, (a, b) in zip(("decode", "preprocess", "inference", "mapping", "total"),
                                 ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4))):
                stages[k].append((b - a) * 1e3)
    tot = sum(stages["total"]) / 1e3
    result = {
        "backend": "onnxruntime-python",
        "frames": total,
        "fps": total / tot if tot > 0 else 0.0,
        "load_ms": load_ms,
        "input": {"layout": layout, "width": w, "height": h, "channels": c},
        "stages_ms": {k: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for k, v in stages.items()},
        "last_action": action,
        "versions": {"onnxruntime": ort.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
