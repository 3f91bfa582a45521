"""MobileNetV2 (ImageNet) as int8 TFLite models run by LiteRT with XNNPACK.

The published models end in a 1001-way classifier. We cut the graph at the global-average-pooled
tensor (1280 values) by rewriting the flatbuffer with the schema that ships with LiteRT, so the
classifier never runs, and dequantize the int8 output to float32.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..model_store import ModelFile
from .base import BackboneSpec

CORAL = "https://github.com/google-coral/test_data/raw/master/"


class LiteRTBackbone:
    def __init__(self, spec: BackboneSpec, model_path: str, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.spec = spec
        with open(model_path, "rb") as f:
            content, self.cut_tensor = cut_at_tensor(f.read(), spec.option("pooled_tensor"))
        with _native_stderr_silenced():  # LiteRT prints an INFO line per interpreter on fd 2
            self._interpreter = Interpreter(model_content=content, num_threads=threads)
            self._input = self._interpreter.get_input_details()[0]
            self._batch = 0
            self.embed(np.zeros((1, *spec.input_size[::-1], 3), np.uint8))  # delegate set up here

    def embed(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n == 0:
            return np.zeros((0, self.spec.embedding_dim), np.float32)
        if n != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], [n, *batch.shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = n
            self._output = self._interpreter.get_output_details()[0]
        self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(batch, np.uint8))
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output["index"]).reshape(n, -1)
        scale, zero_point = self._output["quantization"]
        if scale:
            return ((raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(
                np.float32
            )
        return raw.astype(np.float32)


@contextlib.contextmanager
def _native_stderr_silenced():
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cut_at_tensor(model_bytes: bytes, tensor_name: str) -> tuple[bytes, str]:
    """Rewrite a .tflite model so its only output is the tensor named `tensor_name` (exact, or a
    `;`-separated alias of a fused tensor) and every operator after it is dropped."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    graph = model.subgraphs[0]
    matches = [
        i
        for i, t in enumerate(graph.tensors)
        if tensor_name in t.name.decode().split(";") and len(t.shape) in (2, 4)
    ]
    if not matches:
        raise ValueError(f"tensor {tensor_name!r} not found in the model")
    # A fused name can alias the reshape constant too; the pooled tensor is the activation (4-D
    # or 2-D with the largest element count).
    target = max(matches, key=lambda i: int(np.prod(graph.tensors[i].shape)))
    producer = next(j for j, op in enumerate(graph.operators) if target in list(op.outputs))
    graph.operators = graph.operators[: producer + 1]
    graph.outputs = np.array([target], dtype=np.int32)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), graph.tensors[target].name.decode()


MOBILENET_V2 = BackboneSpec(
    name="mobilenet_v2",
    description="TF2 MobileNetV2 1.0 224, ImageNet, int8 post-training quantized (Google)",
    model_file=ModelFile(
        filename="tf2_mobilenet_v2_1.0_224_ptq.tflite",
        url=CORAL + "tf2_mobilenet_v2_1.0_224_ptq.tflite",
        sha256="5d3137241276e79c86d14a74fe43581398ae0e815191d3dba45495b810840e8c",
        license="Apache-2.0",
    ),
    input_size=(224, 224),
    embedding_dim=1280,
    factory=LiteRTBackbone,
    options=(("pooled_tensor", "MobileNetV2/top/GlobalPool/Mean"),),
)

MOBILENET_V2_TF1 = BackboneSpec(
    name="mobilenet_v2_tf1",
    description="TF1 MobileNetV2 1.0 224, ImageNet, quantization-aware trained uint8 (Google)",
    model_file=ModelFile(
        filename="mobilenet_v2_1.0_224_quant.tflite",
        url=CORAL + "mobilenet_v2_1.0_224_quant.tflite",
        sha256="7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
        license="Apache-2.0",
    ),
    input_size=(224, 224),
    embedding_dim=1280,
    factory=LiteRTBackbone,
    options=(("pooled_tensor", "MobilenetV2/Logits/AvgPool"),),
)
