"""`fruitlens export MODEL FILE.tflite`: one LiteRT file holding the backbone and the classifier,
so a phone app or a robot's computer identifies a fruit offline with any LiteRT runtime.

The file is the backbone's own int8 graph (cut at its pooled tensor, the multiscale averages
computed in the graph, as `featurize` does), followed by the classifier as float32 operators:
DEQUANTIZE and CONCATENATION (the embedding), SUB and MUL (the scaler), FULLY_CONNECTED (the PCA,
the logistic regression or the perceptron's layers, LOGISTIC between), SOFTMAX. Two more outputs
need nothing but builtin operators: the families' probabilities (FULLY_CONNECTED with the 0/1
species -> family matrix) and the novelty (L2_NORMALIZATION, FULLY_CONNECTED against the model's
reference inputs, stored as float16 and DEQUANTIZE'd, REDUCE_MAX, 1 - max).

- input: one RGB uint8 image, (1, height, width, 3) at the size the file declares (the model's,
  224x224 by default): the photo resized to it (bilinear, the whole photo);
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

import numpy as np

from .. import FruitlensError
from ..embedding.backbones import litert
from .model import PortableModel

METADATA = "fruitlens"


def export_model(model: PortableModel, spec, backbone_file: str) -> bytes:
    """The LiteRT flatbuffer of backbone + classifier (see the module's docstring)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    if spec.factory is not litert.LiteRTBackbone:
        raise FruitlensError(f"export: the backbone {spec.name} is not a LiteRT model")
    with open(backbone_file, "rb") as f:
        original = f.read()
    stages = [*filter(None, spec.options_dict.get("stage_tensors", "").split("|"))]
    cut, _ = litert.cut_at_tensors(original, [spec.option("pooled_tensor"), *stages], len(stages))
    tf = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(cut, 0))
    graph = tf.subgraphs[0]
    width, height = spec.input_size
    source = graph.tensors[int(graph.inputs[0])]
    if list(source.shape[1:3]) != [height, width]:  # --image-size: the network at another size
        source.shape = np.array([1, height, width, int(source.shape[-1])], np.int32)
    outputs = [int(i) for i in graph.outputs]

    def op(builtin, version, inputs, out, options_type=None, options=None):
        o = litert.operator(schema, litert.opcode(tf, schema, builtin, version), inputs, [out])
        if options_type is not None:
            o.builtinOptionsType, o.builtinOptions = options_type, options
        graph.operators.append(o)
        return out

    def act(name, shape):
        return litert.tensor(tf, graph, schema, f"fruitlens/head/{name}", shape)

    def const(name, values: np.ndarray, dtype=None):
        values = np.ascontiguousarray(values, np.float32 if dtype is None else np.float16)
        return litert.tensor(tf, graph, schema, f"fruitlens/head/{name}", list(values.shape),
                             schema.TensorType.FLOAT32 if dtype is None else schema.TensorType.FLOAT16, values.tobytes())

    def fully_connected(name, x, weights, bias, out_dim):
        options = schema.FullyConnectedOptionsT()
        options.fusedActivationFunction = schema.ActivationFunctionType.NONE
        return op(schema.BuiltinOperator.FULLY_CONNECTED, 1, [x, weights, bias if bias is not None else -1],
                  act(name, [1, out_dim]), schema.BuiltinOptions.FullyConnectedOptions, options)

    # the embedding: the pooled output dequantized, then the stages' averages (already float32)
    pooled = outputs[0]
    width_pooled = int(graph.tensors[pooled].shape[-1])
    pooled_f = op(schema.BuiltinOperator.DEQUANTIZE, 2, [pooled],
                  act("pooled_4d", [int(d) for d in graph.tensors[pooled].shape]))
    if len(graph.tensors[pooled].shape) != 2:  # (1, 1, 1, 1280): flatten to (1, 1280)
        reshape = schema.ReshapeOptionsT()
        reshape.newShape = [-1, width_pooled]
        pooled_f = op(schema.BuiltinOperator.RESHAPE, 1,
                      [pooled_f, litert.constant(tf, graph, schema, "fruitlens/head/pooled_shape",
                                                 np.array([-1, width_pooled], np.int32))],
                      act("pooled", [1, width_pooled]), schema.BuiltinOptions.ReshapeOptions, reshape)
    parts = [pooled_f] + outputs[1:]
    dim = spec.embedding_dim
    if len(model.mean) != dim:
        raise FruitlensError(f"export: the model takes {len(model.mean)} values, the backbone {spec.name} gives {dim}")
    x = parts[0]
    if len(parts) > 1:
        concat = schema.ConcatenationOptionsT()
        concat.axis = 1
        x = op(schema.BuiltinOperator.CONCATENATION, 1, parts, act("embedding", [1, dim]),
               schema.BuiltinOptions.ConcatenationOptions, concat)
    # the scaler (std 0 -> 0, as Spark's), the projection, the layers
    inv = np.where(model.std > 0, 1.0 / np.where(model.std > 0, model.std, 1.0), 0.0)
    x = op(schema.BuiltinOperator.SUB, 1, [x, const("mean", model.mean[None])], act("centred", [1, dim]),
           schema.BuiltinOptions.SubOptions, schema.SubOptionsT())
    x = op(schema.BuiltinOperator.MUL, 1, [x, const("inverse_std", inv[None])], act("scaled", [1, dim]),
           schema.BuiltinOptions.MulOptions, schema.MulOptionsT())
    if model.projection is not None:
        x = fully_connected("pca", x, const("components", model.projection.T), None, model.projection.shape[1])
    inputs = x
    for i, (w, b) in enumerate(model.layers):
        x = fully_connected(f"layer_{i}", x, const(f"weights_{i}", w), const(f"bias_{i}", b), w.shape[0])
        if i < len(model.layers) - 1:
            x = op(schema.BuiltinOperator.LOGISTIC, 1, [x], act(f"hidden_{i}", [1, w.shape[0]]))
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    probabilities = op(schema.BuiltinOperator.SOFTMAX, 1, [x], act("probabilities", [1, len(model.classes)]),
                       schema.BuiltinOptions.SoftmaxOptions, softmax)
    graph.tensors[probabilities].name = b"probabilities"
    # the families: probabilities summed by family
    names = model._family_names
    membership = np.zeros((len(names), len(model.classes)), np.float32)
    membership[model.family_index, np.arange(len(model.classes))] = 1.0
    families = fully_connected("families", probabilities, const("membership", membership), None, len(names))
    graph.tensors[families].name = b"family_probabilities"
    # the novelty: 1 - the cosine to the nearest reference (float16 references, as the model keeps them)
    m = inputs_dim = model.refs.shape[1]
    l2 = schema.L2NormOptionsT()
    unit = op(schema.BuiltinOperator.L2_NORMALIZATION, 1, [inputs], act("unit_inputs", [1, inputs_dim]),
              schema.BuiltinOptions.L2NormOptions, l2)
    refs16 = const("references_f16", model.refs, dtype=np.float16)
    refs = op(schema.BuiltinOperator.DEQUANTIZE, 2, [refs16], litert.tensor(
        tf, graph, schema, "fruitlens/head/references", [len(model.refs), m]))
    graph.tensors[refs].shapeSignature = np.array([len(model.refs), m], np.int32)  # not a batch dimension
    cosines = fully_connected("cosines", unit, refs, None, len(model.refs))
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = False
    best = op(schema.BuiltinOperator.REDUCE_MAX, 1, [cosines, litert.constant(tf, graph, schema, "fruitlens/head/axis_1",
                                                                                np.array([1], np.int32))],
              act("best_cosine", [1]), schema.BuiltinOptions.ReducerOptions, reducer)
    novelty = op(schema.BuiltinOperator.SUB, 1, [const("one", np.ones(1)), best], act("novelty", [1]),
                 schema.BuiltinOptions.SubOptions, schema.SubOptionsT())
    graph.tensors[novelty].name = b"novelty"
    graph.outputs = np.array([probabilities, families, novelty], np.int32)

    info = {"format": "fruitlens export 1", "input": {"shape": [1, height, width, 3], "dtype": "uint8",
                                                     "preprocessing": "RGB, the whole photo resized to it (bilinear)"},
            "outputs": ["probabilities", "family_probabilities", "novelty"], "classes": model.classes,
            "families": names, "family_of_class": model.families, "threshold": model.threshold,
            "family_threshold": model.family_threshold if np.isfinite(model.family_threshold) else None,
            "novelty_threshold": model.novelty_threshold, "views_in_predict": model.views,
            "embedding_params": model.embedding_params,
            "rules": "not sure if novelty > novelty_threshold; else the species if its probability >= threshold; "
                     "else the family if its probability >= family_threshold; else not sure"}
    entry = schema.MetadataT()
    entry.name = METADATA.encode()
    entry.buffer = litert.buffer(tf, schema, json.dumps(info).encode())
    tf.metadata = [*(tf.metadata or []), entry]
    builder = flatbuffers.Builder(len(cut) + model.refs.nbytes + (1 << 20))
    builder.Finish(tf.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


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
    import os
    import time
    from dataclasses import replace

    from ..embedding.decode import DecodeError, decode_image
    from ..embedding.views import Views
    from ..storage.location import Location
    from .predict import Identifier

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
    report = {"file": os.path.abspath(dest), "bytes": len(content), "seconds": round(time.perf_counter() - t0, 2),
              "input": [1, spec.input_size[1], spec.input_size[0], 3], "classes": len(identifier.model.classes)}
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
        report["check"] = {"photos": n, "same_top1_as_predict": round(same / n, 4) if n else None,
                           "same_top1_as_predict_on_the_whole_photo": round(same_whole / n, 4) if n else None,
                           "views_predict_averages": identifier.model.views,
                           "latency_ms_p50": round(float(np.median(latency)) * 1e3, 2) if latency else None}
    return report
