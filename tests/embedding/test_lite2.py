"""EfficientNet-Lite2, the second backbone: whole LiteRT graphs whose output is the embedding, an
int8 and a float32 file, all 2136 values or the pooled 1280, the in-graph resize in front."""

import numpy as np
import pytest
from conftest import MODELS, SAMPLE, SHARED, shared

from fruitlens.embedding import backbones
from fruitlens.embedding.backbones.efficientnet import pixel_table, with_input_resize
from fruitlens.embedding.decode import decode_image
from fruitlens.embedding.embedder import Embedder

pytestmark = shared

LITE2 = ("efficientnet_lite2", "efficientnet_lite2_pooled", "efficientnet_lite2_fp32", "efficientnet_lite2_fp32_pooled")
GROCERY_VAL = SHARED / "data" / "grocerystore" / "val"


def load(name, **options):
    spec = backbones.get_spec(name)
    return backbones.load(spec, str(MODELS / spec.file.filename), threads=2, **options)


def fruits360(n, size=(260, 260), upscale=True):
    files = sorted((SAMPLE / "Test").glob("*/*.jpg"))[::97][:n]
    return np.stack([decode_image(f.read_bytes(), size, 10**8, upscale=upscale) for f in files])


def grocery(n):
    """Real shop photos (about 348x348), brought down to 260x260 as the chain does."""
    files = sorted(GROCERY_VAL.rglob("*.jpg"))[::23][:n]
    return np.stack([decode_image(f.read_bytes(), (260, 260), 10**8) for f in files])


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("name", LITE2)
def test_embeddings_are_float32_of_the_specs_length_and_batch_size_does_not_change_them(name):
    model = load(name)
    images = fruits360(5)
    whole = model.embed(images)
    dim = 1280 if name.endswith("_pooled") else 2136
    assert whole.shape == (5, dim) == (5, model.spec.embedding_dim) and whole.dtype == np.float32
    assert model.spec.input_size == (260, 260) and model.resizes_in_graph
    np.testing.assert_array_equal(whole, np.concatenate([model.embed(images[i : i + 1]) for i in range(5)]))
    assert np.linalg.matrix_rank(whole) == 5  # different fruits, different embeddings
    assert np.isfinite(whole).all() and whole[:, :1280].std() > 0.05


def test_pooled_is_the_first_1280_values_of_the_multiscale_embedding():
    images = fruits360(3)
    for multi, pooled in (
        ("efficientnet_lite2", "efficientnet_lite2_pooled"),
        ("efficientnet_lite2_fp32", "efficientnet_lite2_fp32_pooled"),
    ):
        np.testing.assert_array_equal(load(multi).embed(images)[:, :1280], load(pooled).embed(images))


def test_int8_and_fp32_files_agree_on_real_shop_photos():
    images = grocery(12)
    assert images.shape == (12, 260, 260, 3)
    int8, fp32 = load("efficientnet_lite2").embed(images), load("efficientnet_lite2_fp32").embed(images)
    assert cosine(int8, fp32).min() > 0.9  # the quantized network sees what the float one sees
    assert cosine(int8[:, :1280], fp32[:, :1280]).min() > 0.9
    # and each photo is nearer its own float32 embedding than any other photo's
    c = (int8 / np.linalg.norm(int8, axis=1, keepdims=True)) @ (fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)).T
    assert (c.argmax(1) == np.arange(12)).all()


def test_int8_input_is_quantized_with_the_input_tensors_own_parameters():
    from ai_edge_litert.interpreter import Interpreter

    raw = (MODELS / "efficientnet_lite2_ms_int8.tflite").read_bytes()
    original = Interpreter(model_content=raw).get_input_details()[0]
    scale, zero_point = original["quantization"]
    assert original["dtype"] == np.int8 and scale == pytest.approx(0.99855, abs=1e-5) and zero_point == -128
    table = pixel_table(original)
    assert table.dtype == np.int8 and table[0] == -128 and table[255] == 127
    # each pixel's int8 value dequantizes back to within half a step of it
    assert np.abs((table.astype(np.float64) - zero_point) * scale - np.arange(256)).max() <= scale / 2 + 1e-9
    # the resize put in front takes int8 pixels of any size, with the network input's quantization
    resized = Interpreter(model_content=with_input_resize(raw, (260, 260))).get_input_details()[0]
    assert resized["dtype"] == np.int8 and resized["quantization"] == original["quantization"]
    assert resized["shape_signature"].tolist() == [-1, -1, -1, 3]
    fp32 = Interpreter(model_path=str(MODELS / "efficientnet_lite2_ms_fp32.tflite")).get_input_details()[0]
    np.testing.assert_array_equal(pixel_table(fp32), np.arange(256, dtype=np.float32))


@pytest.mark.parametrize("name", ["efficientnet_lite2", "efficientnet_lite2_fp32"])
def test_small_photos_are_resized_in_the_graph_close_to_pillow_and_full_size_ones_pass_unchanged(name):
    model = load(name)
    network = load(name, resize_in_graph=False)  # the converted network alone
    small = fruits360(6, upscale=False)
    assert small.shape == (6, 100, 100, 3)  # Fruits-360 photos stay at their own size
    pillow = fruits360(6)  # the same photos upscaled by Pillow to 260x260
    got, reference = model.embed(small), network.embed(pillow)
    assert cosine(got, reference).min() > 0.99 and not np.array_equal(got, reference)
    np.testing.assert_array_equal(model.embed(pillow), reference)  # 260 x 260 passes the resize unchanged
    with pytest.raises(ValueError, match="takes 260x260"):
        network.embed(small)


def test_lite2_names_the_products_choice_and_the_embedder_records_the_specs_own_name():
    assert backbones.ALIASES["lite2"] == backbones.PRODUCT_BACKBONE == "efficientnet_lite2"
    assert backbones.get_spec("lite2") is backbones.get_spec(backbones.PRODUCT_BACKBONE)
    assert backbones.DEFAULT_BACKBONE == "mobilenet_v2_multiscale"  # the chain's default stays the fast one
    embedder = Embedder.resolve("lite2", backbone_file=str(MODELS))
    assert embedder.params["backbone"] == "efficientnet_lite2"
    assert embedder.params["input_size"] == [260, 260]
    assert embedder.file == str(MODELS / "efficientnet_lite2_ms_int8.tflite")
    photo = (sorted((SAMPLE / "Test").glob("*/*.jpg"))[0]).read_bytes()
    assert embedder.decode(photo).shape == (100, 100, 3)  # the graph resizes: no Pillow upscale
    assert embedder.embed_bytes(photo).shape == (2136,)
    # the same embedder from a model's recorded params (what predict, classify and serve do)
    again = Embedder.for_params(embedder.params, backbone_file=str(MODELS))
    np.testing.assert_array_equal(again.embed_bytes(photo), embedder.embed_bytes(photo))


def test_a_smaller_image_size_runs_lite2_with_the_same_embedding_length():
    spec = backbones.at_size(backbones.get_spec("efficientnet_lite2"), 192)
    model = backbones.load(spec, str(MODELS / spec.file.filename), threads=2)
    out = model.embed(fruits360(2, size=(192, 192)))
    assert out.shape == (2, 2136) and np.isfinite(out).all()


@pytest.mark.parametrize("name", ["efficientnet_lite2_pooled", "efficientnet_lite2_fp32"])
def test_export_puts_a_uint8_input_in_front_and_gives_the_backbones_embedding(name):
    """`export`'s part for these graphs (int8 input: QUANTIZE; float32: CAST; the output dequantized
    and sliced): the same embedding as the backbone, from uint8 pixels."""
    from ai_edge_litert.interpreter import Interpreter

    from fruitlens.engine.export import _whole_backbone

    spec = backbones.get_spec(name)
    head, embedding, original = _whole_backbone(spec, str(MODELS / spec.file.filename))
    head.graph.outputs = np.array([embedding], np.int32)
    exported = Interpreter(model_content=head.pack(len(original) + (1 << 20)))
    exported.allocate_tensors()
    detail = exported.get_input_details()[0]
    assert detail["dtype"] == np.uint8 and detail["shape"].tolist() == [1, 260, 260, 3]
    model = load(name)
    for pixels in grocery(3):
        exported.set_tensor(detail["index"], pixels[None])
        exported.invoke()
        got = exported.get_tensor(exported.get_output_details()[0]["index"])
        np.testing.assert_array_equal(got, model.embed(pixels[None]))
