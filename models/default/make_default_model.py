#!/usr/bin/env python3
"""Builds models/default/: the model bundled in car-runtime.

It is NOT a trained network. It is a hand-written centre-seeking controller
expressed as an ONNX graph, so the simulated car drives out of the box:

  lower half of the 160x120 grey camera image
  -> brightness above the dark road (white border lines, centre line)
  -> centroid of that brightness across the image width, c in [-1, 1]
  -> target steering angle = -GAIN * c * 30 deg (steer towards the centroid:
     the borders' centroid moves right when the car is left of centre or
     heading left)
  -> scores -(target - angle_i)^2 over a 7-entry discrete action space,
     softmax, as a DeepRacer PPO head outputs probabilities.

It has the DeepRacer input contract (NHWC [1,120,160,1], raw 0-255 floats,
FRONT_FACING_CAMERA) and a standard model_metadata.json, so it exercises the
same loading, preprocessing and action-mapping code as a trained model.
Replace it with a trained model for real racing.

Run: python3 models/default/make_default_model.py  (needs the `onnx` package)
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ANGLES = [-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0]
SPEED = 1.0
GAIN = 2.0
THRESHOLD = 110.0
ROW0 = 60  # rows 60..119: the road nearest the car

W, H = 160, 120
x = ((np.arange(W, dtype=np.float32) - (W - 1) / 2) / ((W - 1) / 2)).reshape(1, W)

inits = [
    numpy_helper.from_array(np.array([0, ROW0, 0, 0], dtype=np.int64), "starts"),
    numpy_helper.from_array(np.array([1, H, W, 1], dtype=np.int64), "ends"),
    numpy_helper.from_array(np.array([THRESHOLD], dtype=np.float32), "thr"),
    numpy_helper.from_array(np.array([1, 3], dtype=np.int64), "axes_hc"),
    numpy_helper.from_array(x, "xpos"),
    numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    numpy_helper.from_array(np.array([1e-3], dtype=np.float32), "eps"),
    numpy_helper.from_array(np.array([-GAIN * 30.0], dtype=np.float32), "gain"),
    numpy_helper.from_array(np.array([-30.0], dtype=np.float32), "lo"),
    numpy_helper.from_array(np.array([30.0], dtype=np.float32), "hi"),
    numpy_helper.from_array(np.array(ANGLES, dtype=np.float32).reshape(1, -1), "angles"),
    numpy_helper.from_array(np.array([-0.02], dtype=np.float32), "sharp"),
]
nodes = [
    helper.make_node("Slice", ["input", "starts", "ends"], ["band"]),
    helper.make_node("Sub", ["band", "thr"], ["shifted"]),
    helper.make_node("Relu", ["shifted"], ["bright"]),
    helper.make_node("ReduceSum", ["bright", "axes_hc"], ["mass"], keepdims=0),  # [1,160]
    helper.make_node("Mul", ["mass", "xpos"], ["moment"]),
    helper.make_node("ReduceSum", ["moment", "axis1"], ["num"], keepdims=1),  # [1,1]
    helper.make_node("ReduceSum", ["mass", "axis1"], ["den0"], keepdims=1),
    helper.make_node("Add", ["den0", "eps"], ["den"]),
    helper.make_node("Div", ["num", "den"], ["centroid"]),
    helper.make_node("Mul", ["centroid", "gain"], ["target0"]),
    helper.make_node("Max", ["target0", "lo"], ["target1"]),
    helper.make_node("Min", ["target1", "hi"], ["target"]),
    helper.make_node("Sub", ["target", "angles"], ["diff"]),  # [1,7]
    helper.make_node("Mul", ["diff", "diff"], ["sq"]),
    helper.make_node("Mul", ["sq", "sharp"], ["logits"]),
    helper.make_node("Softmax", ["logits"], ["policy"], axis=1),
]
graph = helper.make_graph(
    nodes,
    "centre_seeking_controller",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, H, W, 1])],
    [helper.make_tensor_value_info("policy", TensorProto.FLOAT, [1, len(ANGLES)])],
    initializer=inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="car-runtime")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, os.path.join(HERE, "model.onnx"))

meta = {
    "action_space": [
        {"index": i, "steering_angle": a, "speed": SPEED} for i, a in enumerate(ANGLES)
    ],
    "action_space_type": "discrete",
    "sensor": ["FRONT_FACING_CAMERA"],
    "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
    "training_algorithm": "clipped_ppo",
    "version": "5",
}
with open(os.path.join(HERE, "model_metadata.json"), "w") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")
print("wrote", os.path.join(HERE, "model.onnx"))
