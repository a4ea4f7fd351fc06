#!/usr/bin/env python3
"""Writes the tiny hand-made ONNX models the runtime tests use, next to this file.

    python3 crates/runtime/tests/data/make_models.py

Needs only the `onnx` package (fixtures/requirements.txt pins it). The output is deterministic;
the .onnx files are committed so the tests need no Python.

    dtypes.onnx          one Identity per verinet dtype: x_<dtype>[n] -> y_<dtype>[n]
    undeclared_shape.onnx  Relu x[batch,3] -> y, y's type declared without a shape
    string_input.onnx    Identity on a string tensor (a dtype verinet tensors cannot carry)
    unknown_op.onnx      a node whose operator no runtime knows
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
OPSET = [helper.make_opsetid("", 17)]

DTYPES = {
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "float16": TensorProto.FLOAT16,
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
}


def save(name: str, graph: onnx.GraphProto, check: bool = True) -> None:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="verinet-runtime-tests")
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    (HERE / name).write_bytes(model.SerializeToString())


def main() -> None:
    nodes, inputs, outputs = [], [], []
    for name, code in DTYPES.items():
        inputs.append(helper.make_tensor_value_info(f"x_{name}", code, ["n"]))
        outputs.append(helper.make_tensor_value_info(f"y_{name}", code, ["n"]))
        nodes.append(helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"], name=f"id_{name}"))
    save("dtypes.onnx", helper.make_graph(nodes, "dtypes", inputs, outputs))

    save(
        "undeclared_shape.onnx",
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"], name="relu")],
            "undeclared_shape",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        ),
        check=False,  # onnx's checker now wants output shapes; runtimes accept graphs without
    )

    save(
        "string_input.onnx",
        helper.make_graph(
            [helper.make_node("Identity", ["s"], ["t"], name="id")],
            "string_input",
            [helper.make_tensor_value_info("s", TensorProto.STRING, [1])],
            [helper.make_tensor_value_info("t", TensorProto.STRING, [1])],
        ),
    )

    save(
        "unknown_op.onnx",
        helper.make_graph(
            [helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery")],
            "unknown_op",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        ),
        check=False,
    )


if __name__ == "__main__":
    main()
