"""MobileNetV2 (ImageNet) as int8 TFLite models run by LiteRT with XNNPACK.

The published models end in a 1001-way classifier. We cut the graph at the global-average-pooled
tensor (1280 values) by rewriting the flatbuffer with the schema that ships with LiteRT, so the
classifier never runs, and dequantize the int8 output to float32.

The multi-scale variant (the default) also makes the last output of each earlier stage a graph
output (7x7x320 ... 112x112x16 activations) and averages each over its spatial positions, so one
pass gives the pooled 1280 values followed by 712 averages of the earlier stages: colour and
texture that the last layer, trained to name ImageNet objects, has averaged away. The stages are
computed anyway; the averages are computed inside the graph (DEQUANTIZE + MEAN operators added to
the flatbuffer, run by XNNPACK), so only 712 floats leave the interpreter, not the activations. They
equal the exact average of the int8 activations dequantized within 1e-5 (float32 sums). On the
validation split it took the logistic regression from 96.9% to 99.0% (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..backbone_file import BackboneFile
from .base import BackboneSpec

CORAL = "https://github.com/google-coral/test_data/raw/master/"


class LiteRTBackbone:
    """`resize_in_graph` (the default): the graph starts with a bilinear resize to the spec's input
    size, so `embed` takes images of any height x width (the same within one batch); images already
    at the input size pass through it unchanged (bit-identical embeddings). False: the published
    network alone, which takes only the input size (the benchmarks' "model alone")."""

    def __init__(self, spec: BackboneSpec, model_path: str, threads: int, resize_in_graph: bool = True):
        from ai_edge_litert.interpreter import Interpreter

        self.spec = spec
        self.resizes_in_graph = resize_in_graph
        stages = [*filter(None, spec.options_dict.get("stage_tensors", "").split("|"))]
        with open(model_path, "rb") as f:
            # The stages are averaged inside the graph (float32, by XNNPACK): see cut_at_tensors.
            content, self.cut_tensors = cut_at_tensors(
                f.read(),
                [spec.option("pooled_tensor"), *stages],
                len(stages),
                resize_to=spec.input_size if resize_in_graph else None,
            )
        self.cut_tensor = self.cut_tensors[0]
        with _native_stderr_silenced():  # LiteRT prints an INFO line per interpreter on fd 2
            self._interpreter = Interpreter(model_content=content, num_threads=threads)
            self._input = self._interpreter.get_input_details()[0]
            self._shape = None
            self.embed(np.zeros((1, *spec.input_size[::-1], 3), np.uint8))  # delegate set up here
        dim = sum(int(o["shape"][-1]) for o in self._outputs)
        if dim != spec.embedding_dim:
            raise ValueError(f"{spec.name}: the cut model gives {dim} values, the spec says {spec.embedding_dim}")

    def embed(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n == 0:
            return np.zeros((0, self.spec.embedding_dim), np.float32)
        if reshaped(self, batch):  # a new batch size or image size
            by_name = {o["name"]: o for o in self._interpreter.get_output_details()}
            # The spec's order; the averaged stages' outputs are named after the added MEAN.
            found = [by_name.get(name) for name in self.cut_tensors]
            self._outputs = [
                o if o is not None else by_name[f"fruitlens/spatial_mean/{k}"] for k, o in enumerate(found)
            ]
        self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(batch, np.uint8))
        self._interpreter.invoke()
        parts = []
        for out in self._outputs:
            raw = self._interpreter.get_tensor(out["index"]).reshape(n, -1)
            if raw.dtype == np.float32:  # a stage's spatial average, computed in the graph
                parts.append(raw)
                continue
            scale, zero_point = out["quantization"]  # the pooled output, int8
            values = raw.astype(np.float32)
            if scale:
                values = (values - np.float32(zero_point)) * np.float32(scale)
            parts.append(values)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def reshaped(backbone, batch: np.ndarray) -> bool:
    """Size the backbone's interpreter for `batch` (refused when its images are not the input size
    and the graph does not resize them): True when the batch's shape is new, so the interpreter was
    resized and its outputs must be looked up again. The LiteRT backbones' one rule for it."""
    spec = backbone.spec
    if batch.shape[1:3] != spec.input_size[::-1] and not backbone.resizes_in_graph:
        raise ValueError(
            f"{spec.name} takes {spec.input_size[0]}x{spec.input_size[1]} images "
            f"without its in-graph resize, got {batch.shape[2]}x{batch.shape[1]}"
        )
    if batch.shape == backbone._shape:
        return False
    backbone._interpreter.resize_tensor_input(backbone._input["index"], list(batch.shape))
    backbone._interpreter.allocate_tensors()
    backbone._shape = batch.shape
    return True


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
    content, names = cut_at_tensors(model_bytes, [tensor_name])
    return content, names[0]


def cut_at_tensors(
    model_bytes: bytes, tensor_names: list[str], averaged: int = 0, resize_to: tuple[int, int] | None = None
) -> tuple[bytes, list[str]]:
    """Rewrite a .tflite model so its outputs are the named tensors, in that order, and every
    operator after the last of them is dropped. Returns the model and the tensors' full names.

    The last `averaged` names must be 4-D activations (n, h, w, c): their outputs become float32
    (n, c), each the activation dequantized and averaged over its h x w positions by operators
    added to the graph (DEQUANTIZE, then MEAN along the rows and MEAN over them), so the interpreter (XNNPACK)
    computes them and the large activations never leave it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    graph = model.subgraphs[0]
    produced = {int(o): j for j, op in enumerate(graph.operators) for o in op.outputs}
    targets = []
    for tensor_name in tensor_names:
        matches = [
            i
            for i, t in enumerate(graph.tensors)
            if tensor_name in t.name.decode().split(";") and len(t.shape) in (2, 4) and i in produced
        ]
        if not matches:
            raise ValueError(f"tensor {tensor_name!r} not found in the model")
        # A fused name can alias the reshape constant too; the tensor wanted is the activation
        # (4-D or 2-D with the largest element count).
        targets.append(max(matches, key=lambda i: int(np.prod(graph.tensors[i].shape))))
    graph.operators = graph.operators[: max(produced[t] for t in targets) + 1]
    names = [graph.tensors[t].name.decode() for t in targets]
    outputs = list(targets)
    if averaged:
        dequantize = opcode(model, schema, schema.BuiltinOperator.DEQUANTIZE, 2)  # version 2: int8 input
        mean = opcode(model, schema, schema.BuiltinOperator.MEAN, 1)  # float
        columns = constant(model, graph, schema, "fruitlens/axis_2", np.array([2], np.int32))
        rows = constant(model, graph, schema, "fruitlens/axis_1", np.array([1], np.int32))
        for k in range(len(targets) - averaged, len(targets)):
            source = graph.tensors[targets[k]]
            if len(source.shape) != 4:
                raise ValueError(f"tensor {names[k]!r} is not a 4-D activation: cannot average it")
            shape = [int(d) for d in source.shape]
            floats = tensor(model, graph, schema, f"fruitlens/dequantized/{k}", shape)
            row_means = tensor(model, graph, schema, f"fruitlens/row_mean/{k}", [shape[0], shape[1], shape[3]])
            averages = tensor(model, graph, schema, f"fruitlens/spatial_mean/{k}", [shape[0], shape[3]])
            graph.operators.append(operator(schema, dequantize, [targets[k]], [floats]))
            # Along each row, then over the rows: float32 sums of at most 112 terms, which keeps
            # the rounding near 1e-6 where one mean over 112 x 112 positions drifts to ~1e-4.
            for tensor_in, axis, tensor_out in ((floats, columns, row_means), (row_means, rows, averages)):
                op = operator(schema, mean, [tensor_in, axis], [tensor_out])
                op.builtinOptionsType = schema.BuiltinOptions.ReducerOptions
                op.builtinOptions = schema.ReducerOptionsT()
                op.builtinOptions.keepDims = False
                graph.operators.append(op)
            outputs[k] = averages
    graph.outputs = np.array(outputs, dtype=np.int32)
    if resize_to is not None:
        resize_input(model, graph, schema, resize_to)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), names


def resize_input(model, graph, schema, size: tuple[int, int]) -> None:
    """Put a RESIZE_BILINEAR (half-pixel centres, as Pillow's bilinear) in front of the graph: the
    new input takes images of any height x width, the network sees them at `size` (width, height).
    Upscaling small photos here costs a fraction of what Pillow's resize costs in the decoder.
    The new input has the old one's type and quantization (uint8, int8 or float32 pixels): a
    bilinear resize commutes with the affine quantization, up to rounding."""
    old = int(graph.inputs[0])
    source = graph.tensors[old]
    pixels = tensor(model, graph, schema, "fruitlens/pixels", [1, 1, 1, int(source.shape[-1])], source.type)
    graph.tensors[pixels].shapeSignature = np.array([-1, -1, -1, int(source.shape[-1])], np.int32)
    graph.tensors[pixels].quantization = source.quantization
    width, height = size
    target = constant(model, graph, schema, "fruitlens/resize_to", np.array([height, width], np.int32))
    op = operator(schema, opcode(model, schema, schema.BuiltinOperator.RESIZE_BILINEAR, 3), [pixels, target], [old])
    op.builtinOptionsType = schema.BuiltinOptions.ResizeBilinearOptions
    op.builtinOptions = schema.ResizeBilinearOptionsT()
    op.builtinOptions.alignCorners = False
    op.builtinOptions.halfPixelCenters = True
    graph.operators.insert(0, op)
    graph.inputs = np.array([pixels], np.int32)


def opcode(model, schema, builtin: int, version: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def buffer(model, schema, data: bytes | None = None) -> int:
    buffer = schema.BufferT()
    if data is not None:
        buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def tensor(model, graph, schema, name: str, shape: list[int], dtype=None, data: bytes | None = None) -> int:
    tensor = schema.TensorT()
    tensor.name = name.encode()
    tensor.shape = np.array(shape, np.int32)
    if data is None:  # an activation: its batch dimension follows the input's
        tensor.shapeSignature = np.array([-1, *shape[1:]], np.int32)
    tensor.type = schema.TensorType.FLOAT32 if dtype is None else dtype
    tensor.buffer = buffer(model, schema, data)
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def constant(model, graph, schema, name: str, values: np.ndarray) -> int:
    return tensor(model, graph, schema, name, list(values.shape), schema.TensorType.INT32, values.tobytes())


def operator(schema, opcode: int, inputs: list[int], outputs: list[int]):
    op = schema.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = np.array(inputs, np.int32)
    op.outputs = np.array(outputs, np.int32)
    return op


MOBILENET_V2 = BackboneSpec(
    name="mobilenet_v2",
    description="TF2 MobileNetV2 1.0 224, ImageNet, int8 post-training quantized (Google)",
    file=BackboneFile(
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
    file=BackboneFile(
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

# The last output of each stage before the top, deepest first (7x7x320, 7x7x160, 14x14x96,
# 14x14x64, 28x28x32, 56x56x24, 112x112x16): their spatial averages follow the pooled 1280 values.
_TF2_STAGES = (
    "MobileNetV2/expanded_conv_17/project/batch_norm/FusedBatchNormV3",
    "MobileNetV2/expanded_conv_16/add/add",
    "MobileNetV2/expanded_conv_13/add/add",
    "MobileNetV2/expanded_conv_10/add/add",
    "MobileNetV2/expanded_conv_6/add/add",
    "MobileNetV2/expanded_conv_3/add/add",
    "MobileNetV2/expanded_conv_1/project/batch_norm/FusedBatchNormV3",
)

MOBILENET_V2_MULTISCALE = BackboneSpec(
    name="mobilenet_v2_multiscale",
    description="TF2 MobileNetV2 1.0 224 (as mobilenet_v2): the pooled 1280 values + the spatial average of "
    "the last output of its 7 earlier stages (320+160+96+64+32+24+16), one pass",
    file=MOBILENET_V2.file,
    input_size=(224, 224),
    embedding_dim=1280 + 320 + 160 + 96 + 64 + 32 + 24 + 16,
    factory=LiteRTBackbone,
    options=(("pooled_tensor", "MobileNetV2/top/GlobalPool/Mean"), ("stage_tensors", "|".join(_TF2_STAGES))),
)
