"""The LiteRT MobileNetV2 backbone, cut at the pooled tensor."""

import io

import numpy as np
import pytest
from conftest import MODELS, SAMPLE, shared
from PIL import Image

from fruitlens.embedding import backbones
from fruitlens.embedding.backbones.litert import cut_at_tensor
from fruitlens.embedding.decode import decode_image

pytestmark = shared


def sample_images(n):
    files = sorted((SAMPLE / "Test").glob("*/*.jpg"))[::97][:n]
    return np.stack([decode_image(f.read_bytes(), (224, 224), 10**8) for f in files])


@pytest.mark.parametrize(
    "name,dim", [("mobilenet_v2_multiscale", 1992), ("mobilenet_v2", 1280), ("mobilenet_v2_tf1", 1280)]
)
def test_embeddings_are_float32_of_the_backbones_size_and_batch_size_does_not_change_them(name, dim):
    spec = backbones.get_spec(name)
    model = backbones.load(spec, str(MODELS / spec.file.filename), threads=2)
    images = sample_images(7)
    whole = model.embed(images)
    assert whole.shape == (7, dim) == (7, spec.embedding_dim) and whole.dtype == np.float32
    one_by_one = np.concatenate([model.embed(images[i : i + 1]) for i in range(7)])
    np.testing.assert_array_equal(whole, one_by_one)
    assert (whole[:, :1280] >= 0).all()  # pooled ReLU6 activations
    assert np.linalg.matrix_rank(whole) == 7  # different fruits, different embeddings


def test_multiscale_embedding_is_the_pooled_one_then_each_stages_spatial_average():
    from ai_edge_litert.interpreter import Interpreter

    multi = backbones.get_spec("mobilenet_v2_multiscale")
    path = str(MODELS / multi.file.filename)
    images = sample_images(3)
    got = backbones.load(multi, path, threads=2).embed(images)
    plain = backbones.load(backbones.get_spec("mobilenet_v2"), path, threads=2).embed(images)
    np.testing.assert_array_equal(got[:, :1280], plain)  # the same pooled values, one pass
    # Each stage's part = the stage's activation (read from the full, uncut graph), dequantized and
    # averaged over its positions: computed here the slow, obvious way.
    full = Interpreter(model_path=path, experimental_preserve_all_tensors=True)
    full.allocate_tensors()
    by_name = {t["name"]: t for t in full.get_tensor_details()}
    stages = multi.option("stage_tensors").split("|")
    for i, image in enumerate(images):
        full.set_tensor(full.get_input_details()[0]["index"], image[None])
        full.invoke()
        offset = 1280
        for stage in stages:
            detail = next(t for n, t in by_name.items() if stage in n.split(";") and len(t["shape"]) == 4)
            scale, zero = detail["quantization"]
            expected = ((full.get_tensor(detail["index"]).astype(np.float64) - zero) * scale).mean(axis=(0, 1, 2))
            np.testing.assert_allclose(got[i, offset : offset + len(expected)], expected, rtol=1e-5, atol=1e-5)
            offset += len(expected)
        assert offset == multi.embedding_dim


def test_graph_is_cut_so_the_classifier_never_runs():
    raw = (MODELS / "tf2_mobilenet_v2_1.0_224_ptq.tflite").read_bytes()
    cut, name = cut_at_tensor(raw, "MobileNetV2/top/GlobalPool/Mean")
    assert "GlobalPool/Mean" in name
    from ai_edge_litert.interpreter import Interpreter

    full, small = Interpreter(model_content=raw), Interpreter(model_content=cut)
    assert full.get_output_details()[0]["shape"].tolist() == [1, 1001]
    assert small.get_output_details()[0]["shape"].tolist() == [1, 1, 1, 1280]
    assert len(small._get_ops_details()) < len(full._get_ops_details())
    with pytest.raises(ValueError, match="not found"):
        cut_at_tensor(raw, "no/such/tensor")


def test_unknown_backbone_is_a_clear_error():
    from fruitlens import FruitlensError

    with pytest.raises(FruitlensError, match="unknown backbone"):
        backbones.get_spec("resnet9000")


def test_image_size_runs_the_backbone_at_that_size_with_the_same_embedding_length():
    from fruitlens import FruitlensError

    spec = backbones.get_spec("mobilenet_v2_multiscale")
    assert backbones.at_size(spec, None) is spec and backbones.at_size(spec, 224) is spec
    small = backbones.at_size(spec, 160)
    assert small.input_size == (160, 160) and small.embedding_dim == spec.embedding_dim
    model = backbones.load(small, str(MODELS / spec.file.filename), threads=2)
    files = sorted((SAMPLE / "Test").glob("*/*.jpg"))[::97][:3]
    at_160 = model.embed(np.stack([decode_image(f.read_bytes(), (160, 160), 10**8) for f in files]))
    at_224 = model.embed(sample_images(3))  # the same interpreter takes another size too
    assert at_160.shape == at_224.shape == (3, 1992) and not np.allclose(at_160, at_224)
    np.testing.assert_array_equal(
        at_160, model.embed(np.stack([decode_image(f.read_bytes(), (160, 160), 10**8) for f in files]))
    )
    with pytest.raises(FruitlensError, match="at least 32"):
        backbones.at_size(spec, 16)


def test_stage_averages_are_computed_in_the_graph():
    from ai_edge_litert.interpreter import Interpreter

    from fruitlens.embedding.backbones.litert import cut_at_tensors

    spec = backbones.get_spec("mobilenet_v2_multiscale")
    stages = spec.option("stage_tensors").split("|")
    raw = (MODELS / spec.file.filename).read_bytes()
    content, _ = cut_at_tensors(raw, [spec.option("pooled_tensor"), *stages], len(stages))
    outputs = Interpreter(model_content=content).get_output_details()
    # the pooled int8 tensor, then one float32 (1, channels) average per stage: no activation leaves the graph
    assert [o["shape"].tolist() for o in outputs] == [
        [1, 1, 1, 1280],
        *[[1, c] for c in (320, 160, 96, 64, 32, 24, 16)],
    ]
    assert [o["dtype"] for o in outputs[1:]] == [np.float32] * 7


def test_small_photos_are_resized_in_the_graph_close_to_pillow_and_full_size_ones_pass_unchanged():
    spec = backbones.get_spec("mobilenet_v2_multiscale")
    path = str(MODELS / spec.file.filename)
    model = backbones.load(spec, path, threads=2)
    network = backbones.load(spec, path, threads=2, resize_in_graph=False)  # the published network alone
    files = sorted((SAMPLE / "Test").glob("*/*.jpg"))[::97][:8]
    small = np.stack([decode_image(f.read_bytes(), (224, 224), 10**8, upscale=False) for f in files])
    assert small.shape == (8, 100, 100, 3)  # Fruits-360 photos stay at their own size
    pillow = sample_images(8)  # the same photos upscaled by Pillow
    got, reference = model.embed(small), network.embed(pillow)
    cosine = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.995 and not np.array_equal(got, reference)  # pixels within 1, not equal
    np.testing.assert_array_equal(model.embed(pillow), reference)  # 224 x 224 passes the resize unchanged
    with pytest.raises(ValueError, match="takes 224x224"):
        network.embed(small)
    # a photo larger than the input is still brought down by Pillow (antialiased), never by the graph
    big = Image.new("RGB", (4000, 3000), (200, 30, 30))
    buf = io.BytesIO()
    big.save(buf, "JPEG")
    assert decode_image(buf.getvalue(), (224, 224), 10**8, upscale=False).shape == (224, 224, 3)


def test_a_partition_of_mixed_image_sizes_is_embedded_one_inference_per_size(tmp_path):
    from fruitlens.chain.mapper import MapperStats, Record, embed_records
    from fruitlens.embedding.embedder import Embedder
    from fruitlens.schemas import ImageRef

    embedder = Embedder.resolve("mobilenet_v2_multiscale", backbone_file=str(MODELS))
    sizes = [(100, 100), (64, 48), (100, 100), (640, 480), (224, 224), (64, 48)]
    records = []
    for i, (w, h) in enumerate(sizes):
        p = tmp_path / f"{i}.png"
        img = Image.open(sorted((SAMPLE / "Test").glob("*/*.jpg"))[i * 300]).resize((w, h))
        img.save(p)
        records.append(Record(ImageRef(path=str(p), label=None, split=None, size_bytes=p.stat().st_size)))
    stats = MapperStats()
    out = [r for batch in embed_records(records, embedder, stats, batch_size=16, io_threads=4) for r in batch]
    assert [r.path for r in out] == [r.path for r in records] and all(r.reason is None for r in out)
    assert stats.images == 6 and stats.batches == 3  # 100x100, 64x48, 224x224 (640x480 brought down to it)
    # the same photo alone gives the same embedding as inside the mixed batch
    alone = [
        r
        for b in embed_records(
            [Record(ImageRef(path=records[1].path, label=None, split=None, size_bytes=0))],
            embedder,
            MapperStats(),
            batch_size=16,
            io_threads=4,
        )
        for r in b
    ]
    np.testing.assert_allclose(alone[0].embedding, out[1].embedding, rtol=0, atol=1e-6)
