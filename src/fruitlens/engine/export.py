"""`fruitlens export MODEL FILE.tflite`: one LiteRT file holding the backbone and the classifier,
so a phone app or a robot's computer identifies a fruit offline with any LiteRT runtime.

The file is the backbone's own graph as `featurize` runs it: a MobileNetV2's int8 graph cut at its
pooled tensor (the multiscale averages computed in the graph), or EfficientNet-Lite2's whole graph
(its output is the embedding) behind a QUANTIZE (int8 file: uint8 pixels to its int8 input) or a
CAST (float32 file: 0..255), its output DEQUANTIZE'd and SLICE'd to the backbone's values, so the
file's input is uint8 pixels for every backbone. Then the classifier, as float32 operators:
DEQUANTIZE and CONCATENATION (the embedding), SUB and MUL (the scaler), FULLY_CONNECTED (the PCA,
the logistic regression or the perceptron's layers, LOGISTIC between), SOFTMAX. Two more outputs
need nothing but builtin operators: the families' probabilities (FULLY_CONNECTED with the 0/1
species -> family matrix) and the novelty (L2_NORMALIZATION, FULLY_CONNECTED against the model's
reference inputs, stored as float16 and DEQUANTIZE'd, REDUCE_MAX, 1 - max).

- input: one RGB uint8 image, (1, height, width, 3) at the size the file declares (the model's:
  224x224 for the MobileNetV2s, 260x260 for EfficientNet-Lite2): the photo resized to it (bilinear,
  the whole photo);
- outputs: `probabilities` (1, classes) in the order of the model's classes (`model.json`),
  `family_probabilities` (1, families) in the order of `families` below, `novelty` (1,);
- the metadata entry `fruitlens` (JSON): classes, families, each class's family, the thresholds
  (species, family, novelty) and how to read them: the species when its probability reaches
  `threshold`, else the family when its probability reaches `family_threshold`, else "not sure";
  always "not sure" when `novelty` is above `novelty_threshold`.

It answers on the whole photo: a model that averages several views in `predict` (`views` in
model.json) answers a little differently from this file; `fruitlens export` reports how often
both name the same species on the photos given to check it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from .. import FruitlensError
from ..embedding.backbones import efficientnet, litert
from ..embedding.decode import DecodeError, decode_image
from ..embedding.views import Views
from ..storage.location import Location
from .model import PortableModel
from .predict import Identifier

METADATA = "fruitlens"


def export_model(model: PortableModel, spec, backbone_file: str) -> bytes:
    """The LiteRT flatbuffer of backbone + classifier (see the module's docstring)."""
    if len(model.mean) != spec.embedding_dim:
        raise FruitlensError(
            f"export: the model takes {len(model.mean)} values, the backbone {spec.name} gives {spec.embedding_dim}"
        )
    if spec.factory is litert.LiteRTBackbone:
        head, cut = _backbone(spec, backbone_file)
        embedding = _embedding(head, spec)
    elif spec.factory is efficientnet.WholeGraphBackbone:
        head, embedding, cut = _whole_backbone(spec, backbone_file)
    else:
        raise FruitlensError(f"export: the backbone {spec.name} is not a LiteRT model")
    classifier = _classifier(head, model, embedding, spec.embedding_dim)
    families = _families(head, model, classifier.probabilities)
    novelty = _novelty(head, model, classifier.inputs)
    head.graph.outputs = np.array([classifier.probabilities, families, novelty], np.int32)
    head.add_metadata(METADATA, _metadata(model, spec))
    return head.pack(len(cut) + model.refs.nbytes + (1 << 20))


class _Head:
    """The backbone's graph (a flatbuffer object tree) the classifier's tensors and operators are
    added to, named `fruitlens/head/...`; each method returns the index of the tensor it adds."""

    def __init__(self, tf, schema):
        self.tf, self.schema = tf, schema
        self.graph = tf.subgraphs[0]

    def op(self, builtin, version, inputs, out, options_type=None, options=None) -> int:
        o = litert.operator(self.schema, litert.opcode(self.tf, self.schema, builtin, version), inputs, [out])
        if options_type is not None:
            o.builtinOptionsType, o.builtinOptions = options_type, options
        self.graph.operators.append(o)
        return out

    def act(self, name, shape) -> int:
        return litert.tensor(self.tf, self.graph, self.schema, f"fruitlens/head/{name}", shape)

    def const(self, name, values: np.ndarray, dtype=None) -> int:
        schema = self.schema
        values = np.ascontiguousarray(values, np.float32 if dtype is None else np.float16)
        kind = schema.TensorType.FLOAT32 if dtype is None else schema.TensorType.FLOAT16
        return litert.tensor(
            self.tf, self.graph, schema, f"fruitlens/head/{name}", list(values.shape), kind, values.tobytes()
        )

    def int32(self, name, values: np.ndarray) -> int:
        return litert.constant(self.tf, self.graph, self.schema, f"fruitlens/head/{name}", np.array(values, np.int32))

    def fully_connected(self, name, x, weights, bias, out_dim) -> int:
        schema = self.schema
        options = schema.FullyConnectedOptionsT()
        options.fusedActivationFunction = schema.ActivationFunctionType.NONE
        return self.op(
            schema.BuiltinOperator.FULLY_CONNECTED,
            1,
            [x, weights, bias if bias is not None else -1],
            self.act(name, [1, out_dim]),
            schema.BuiltinOptions.FullyConnectedOptions,
            options,
        )

    def add_metadata(self, name: str, info: dict) -> None:
        entry = self.schema.MetadataT()
        entry.name = name.encode()
        entry.buffer = litert.buffer(self.tf, self.schema, json.dumps(info).encode())
        self.tf.metadata = [*(self.tf.metadata or []), entry]

    def pack(self, size_hint: int) -> bytes:
        import flatbuffers

        builder = flatbuffers.Builder(size_hint)
        builder.Finish(self.tf.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


class _Classifier(NamedTuple):
    inputs: int  # the classifier's inputs (scaled, projected): what the novelty compares with the references
    probabilities: int


def _backbone(spec, backbone_file: str) -> tuple[_Head, bytes]:
    """The backbone's int8 graph cut at its pooled tensor (and the stages' averages), its input at
    the spec's size; and the cut flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    with open(backbone_file, "rb") as f:
        original = f.read()
    stages = [*filter(None, spec.options_dict.get("stage_tensors", "").split("|"))]
    cut, _ = litert.cut_at_tensors(original, [spec.option("pooled_tensor"), *stages], len(stages))
    head = _Head(schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(cut, 0)), schema)
    width, height = spec.input_size
    source = head.graph.tensors[int(head.graph.inputs[0])]
    if list(source.shape[1:3]) != [height, width]:  # --image-size: the network at another size
        source.shape = np.array([1, height, width, int(source.shape[-1])], np.int32)
    return head, cut


def _embedding(head: _Head, spec) -> int:
    """The embedding: the pooled output dequantized, then the stages' averages (already float32)."""
    schema, graph = head.schema, head.graph
    outputs = [int(i) for i in graph.outputs]
    pooled = outputs[0]
    width_pooled = int(graph.tensors[pooled].shape[-1])
    pooled_f = head.op(
        schema.BuiltinOperator.DEQUANTIZE,
        2,
        [pooled],
        head.act("pooled_4d", [int(d) for d in graph.tensors[pooled].shape]),
    )
    if len(graph.tensors[pooled].shape) != 2:  # (1, 1, 1, 1280): flatten to (1, 1280)
        reshape = schema.ReshapeOptionsT()
        reshape.newShape = [-1, width_pooled]
        shape = head.int32("pooled_shape", [-1, width_pooled])
        pooled_f = head.op(
            schema.BuiltinOperator.RESHAPE,
            1,
            [pooled_f, shape],
            head.act("pooled", [1, width_pooled]),
            schema.BuiltinOptions.ReshapeOptions,
            reshape,
        )
    parts = [pooled_f] + outputs[1:]
    dim = spec.embedding_dim
    if len(parts) == 1:
        return parts[0]
    concat = schema.ConcatenationOptionsT()
    concat.axis = 1
    return head.op(
        schema.BuiltinOperator.CONCATENATION,
        1,
        parts,
        head.act("embedding", [1, dim]),
        schema.BuiltinOptions.ConcatenationOptions,
        concat,
    )


def _whole_backbone(spec, backbone_file: str) -> tuple[_Head, int, bytes]:
    """A backbone whose graph ends in the embedding (EfficientNet-Lite2, float32 or int8 input):
    the whole graph at the spec's size, a uint8 input in front converted to the network's input
    as `embed` does (int8: QUANTIZE from uint8 pixels to the input's own scale and zero point;
    float32: CAST to 0..255), its output DEQUANTIZE'd (int8) and SLICE'd to the spec's values.
    Returns the head, the embedding (float32 (1, embedding_dim)) and the file's bytes."""
    from ai_edge_litert import schema_py_generated as schema

    with open(backbone_file, "rb") as f:
        original = f.read()
    head = _Head(efficientnet.read_model(original), schema)
    graph = head.graph
    width, height = spec.input_size
    network_input = int(graph.inputs[0])
    source = graph.tensors[network_input]
    channels = int(source.shape[-1])
    source.shape = np.array([1, height, width, channels], np.int32)
    pixels = litert.tensor(
        head.tf, graph, schema, "fruitlens/pixels", [1, height, width, channels], schema.TensorType.UINT8
    )
    if source.type == schema.TensorType.FLOAT32:
        cast = schema.CastOptionsT()
        cast.inDataType, cast.outDataType = schema.TensorType.UINT8, schema.TensorType.FLOAT32
        code = litert.opcode(head.tf, schema, schema.BuiltinOperator.CAST, 1)
        convert = litert.operator(schema, code, [pixels], [network_input])
        convert.builtinOptionsType, convert.builtinOptions = schema.BuiltinOptions.CastOptions, cast
    else:  # the pixels as a uint8 tensor of scale 1, zero point 0, requantized to the network's input
        identity = schema.QuantizationParametersT()
        identity.scale = np.array([1.0], np.float32)
        identity.zeroPoint = np.array([0], np.int64)
        graph.tensors[pixels].quantization = identity
        code = litert.opcode(head.tf, schema, schema.BuiltinOperator.QUANTIZE, 2)
        convert = litert.operator(schema, code, [pixels], [network_input])
    graph.operators.insert(0, convert)
    graph.inputs = np.array([pixels], np.int32)
    output = int(graph.outputs[0])
    width_out = int(graph.tensors[output].shape[-1])
    embedding = output
    if graph.tensors[output].type != schema.TensorType.FLOAT32:
        embedding = head.op(schema.BuiltinOperator.DEQUANTIZE, 2, [output], head.act("backbone_output", [1, width_out]))
    start, stop = efficientnet.values_slice(spec)
    if (start, stop) != (0, width_out):
        embedding = head.op(
            schema.BuiltinOperator.SLICE,
            1,
            [embedding, head.int32("slice_begin", [0, start]), head.int32("slice_size", [1, stop - start])],
            head.act("embedding", [1, stop - start]),
            schema.BuiltinOptions.SliceOptions,
            schema.SliceOptionsT(),
        )
    return head, embedding, original


def _classifier(head: _Head, model: PortableModel, x: int, dim: int) -> _Classifier:
    """The scaler (std 0 -> 0, as Spark's), the projection, the layers (LOGISTIC between), SOFTMAX."""
    schema = head.schema
    inv = np.where(model.std > 0, 1.0 / np.where(model.std > 0, model.std, 1.0), 0.0)
    x = head.op(
        schema.BuiltinOperator.SUB,
        1,
        [x, head.const("mean", model.mean[None])],
        head.act("centred", [1, dim]),
        schema.BuiltinOptions.SubOptions,
        schema.SubOptionsT(),
    )
    x = head.op(
        schema.BuiltinOperator.MUL,
        1,
        [x, head.const("inverse_std", inv[None])],
        head.act("scaled", [1, dim]),
        schema.BuiltinOptions.MulOptions,
        schema.MulOptionsT(),
    )
    if model.projection is not None:
        x = head.fully_connected(
            "pca", x, head.const("components", model.projection.T), None, model.projection.shape[1]
        )
    inputs = x
    for i, (w, b) in enumerate(model.layers):
        x = head.fully_connected(f"layer_{i}", x, head.const(f"weights_{i}", w), head.const(f"bias_{i}", b), w.shape[0])
        if i < len(model.layers) - 1:
            x = head.op(schema.BuiltinOperator.LOGISTIC, 1, [x], head.act(f"hidden_{i}", [1, w.shape[0]]))
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    probabilities = head.op(
        schema.BuiltinOperator.SOFTMAX,
        1,
        [x],
        head.act("probabilities", [1, len(model.classes)]),
        schema.BuiltinOptions.SoftmaxOptions,
        softmax,
    )
    head.graph.tensors[probabilities].name = b"probabilities"
    return _Classifier(inputs, probabilities)


def _families(head: _Head, model: PortableModel, probabilities: int) -> int:
    """The families' probabilities: the species' summed by family (the 0/1 membership matrix)."""
    names = model._family_names
    membership = np.zeros((len(names), len(model.classes)), np.float32)
    membership[model.family_index, np.arange(len(model.classes))] = 1.0
    families = head.fully_connected("families", probabilities, head.const("membership", membership), None, len(names))
    head.graph.tensors[families].name = b"family_probabilities"
    return families


def _novelty(head: _Head, model: PortableModel, inputs: int) -> int:
    """1 - the cosine to the nearest reference (float16 references, as the model keeps them)."""
    schema, graph = head.schema, head.graph
    m = inputs_dim = model.refs.shape[1]
    l2 = schema.L2NormOptionsT()
    unit = head.op(
        schema.BuiltinOperator.L2_NORMALIZATION,
        1,
        [inputs],
        head.act("unit_inputs", [1, inputs_dim]),
        schema.BuiltinOptions.L2NormOptions,
        l2,
    )
    refs16 = head.const("references_f16", model.refs, dtype=np.float16)
    refs = head.op(
        schema.BuiltinOperator.DEQUANTIZE,
        2,
        [refs16],
        litert.tensor(head.tf, graph, schema, "fruitlens/head/references", [len(model.refs), m]),
    )
    graph.tensors[refs].shapeSignature = np.array([len(model.refs), m], np.int32)  # not a batch dimension
    cosines = head.fully_connected("cosines", unit, refs, None, len(model.refs))
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = False
    best = head.op(
        schema.BuiltinOperator.REDUCE_MAX,
        1,
        [cosines, head.int32("axis_1", [1])],
        head.act("best_cosine", [1]),
        schema.BuiltinOptions.ReducerOptions,
        reducer,
    )
    novelty = head.op(
        schema.BuiltinOperator.SUB,
        1,
        [head.const("one", np.ones(1)), best],
        head.act("novelty", [1]),
        schema.BuiltinOptions.SubOptions,
        schema.SubOptionsT(),
    )
    graph.tensors[novelty].name = b"novelty"
    return novelty


def _metadata(model: PortableModel, spec) -> dict:
    """The `fruitlens` metadata entry: the names, the thresholds and how to read them."""
    width, height = spec.input_size
    return {
        "format": "fruitlens export 1",
        "input": {
            "shape": [1, height, width, 3],
            "dtype": "uint8",
            "preprocessing": "RGB, the whole photo resized to it (bilinear)",
        },
        "outputs": ["probabilities", "family_probabilities", "novelty"],
        "classes": model.classes,
        "families": model._family_names,
        "family_of_class": model.families,
        "threshold": model.threshold,
        "family_threshold": model.family_threshold if np.isfinite(model.family_threshold) else None,
        "novelty_threshold": model.novelty_threshold,
        "views_in_predict": model.views,
        "embedding_params": model.embedding_params,
        "rules": "not sure if novelty > novelty_threshold; else the species if its probability >= threshold; "
        "else the family if its probability >= family_threshold; else not sure",
    }


def read_metadata(content: bytes) -> dict:
    """The `fruitlens` metadata entry of an exported file."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode())
    raise FruitlensError("not a file `fruitlens export` wrote (no fruitlens metadata)")


class Exported:
    """An exported file run by LiteRT: photo pixels (at the file's size) -> (probabilities,
    family probabilities, novelty). What a phone app does, in Python."""

    def __init__(self, content: bytes, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.info = read_metadata(content)
        with litert._native_stderr_silenced():
            self.interpreter = Interpreter(model_content=content, num_threads=threads)
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        by_name = {o["name"]: o["index"] for o in self.interpreter.get_output_details()}
        self._outputs = [by_name[n] for n in self.info["outputs"]]

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(pixels[None], np.uint8))
        self.interpreter.invoke()
        probs, fams, nov = (self.interpreter.get_tensor(i) for i in self._outputs)
        return probs[0].copy(), fams[0].copy(), float(nov.reshape(-1)[0])


def export(model_dir: str, dest: str, check: list[str] = (), backbone_file: str | None = None, s3=None) -> dict:
    """Write the exported file at `dest` (a local path); with `check` photos, run it on them with
    LiteRT beside `predict` and say how often both name the same species."""
    identifier = Identifier.load(model_dir, s3, backbone_file, threads=1)
    spec = identifier.embedder.spec
    t0 = time.perf_counter()
    content = export_model(identifier.model, spec, identifier.embedder.file)
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise FruitlensError(f"export: no folder {folder} to write {dest} in")
    tmp = dest + ".part"
    with open(tmp, "wb") as f:
        f.write(content)
    os.replace(tmp, dest)
    report = {
        "file": os.path.abspath(dest),
        "bytes": len(content),
        "seconds": round(time.perf_counter() - t0, 2),
        "input": [1, spec.input_size[1], spec.input_size[0], 3],
        "classes": len(identifier.model.classes),
    }
    if check:
        exported = Exported(content)
        whole = Identifier(identifier.model, replace(identifier.embedder, views=Views()))
        same = same_whole = n = 0
        latency = []
        for p in check:
            try:
                data = Location.of(p, s3).read_bytes()
                pixels = decode_image(data, spec.input_size, identifier.embedder.max_pixels)
            except (DecodeError, OSError, FruitlensError):
                continue
            t1 = time.perf_counter()
            probs, _, _ = exported.run(pixels)
            latency.append(time.perf_counter() - t1)
            top = identifier.model.classes[int(probs.argmax())]
            same += top == identifier.identify(data).predicted
            same_whole += top == whole.identify(data).predicted
            n += 1
        report["check"] = {
            "photos": n,
            "same_top1_as_predict": round(same / n, 4) if n else None,
            "same_top1_as_predict_on_the_whole_photo": round(same_whole / n, 4) if n else None,
            "views_predict_averages": identifier.model.views,
            "latency_ms_p50": round(float(np.median(latency)) * 1e3, 2) if latency else None,
        }
    return report
