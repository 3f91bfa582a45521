"""The real download path: a local HTTP server plays the public URL."""

import functools
import http.server
import shutil
import threading

import pytest
from conftest import MODELS, shared

from fruitlens import FruitlensError
from fruitlens.embedding import backbone_file as model_store
from fruitlens.embedding.backbones import get_spec

pytestmark = shared

SPEC = get_spec("mobilenet_v2").file


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """Serves a folder over HTTP on loopback; counts GET requests."""
    root = tmp_path / "mirror"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv(model_store.MODEL_DIR_ENV, raising=False)
    monkeypatch.setenv(model_store.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(model_store.BASE_URL_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    yield root, hits
    server.shutdown()


def test_downloads_once_verifies_and_caches(mirror):
    root, hits = mirror
    shutil.copy(MODELS / SPEC.filename, root / SPEC.filename)
    path = model_store.resolve(SPEC)
    assert path.parent == model_store.cache_dir()
    assert model_store.sha256_of(path) == SPEC.sha256
    assert model_store.resolve(SPEC) == path
    assert hits == [f"/{SPEC.filename}"]  # the second call used the cache


def test_tampered_download_is_refused_and_not_cached(mirror):
    root, _ = mirror
    data = bytearray((MODELS / SPEC.filename).read_bytes())
    data[1000] ^= 0xFF
    (root / SPEC.filename).write_bytes(bytes(data))
    with pytest.raises(FruitlensError, match="sha256"):
        model_store.resolve(SPEC)
    assert not list(model_store.cache_dir().iterdir())


def test_unreachable_source_says_how_to_pass_a_local_model(mirror):
    with pytest.raises(FruitlensError, match="--backbone-file PATH"):
        model_store.resolve(SPEC)  # the mirror is empty: 404


def test_local_override_file_or_folder_is_verified(tmp_path, monkeypatch):
    monkeypatch.delenv(model_store.MODEL_DIR_ENV, raising=False)
    assert model_store.resolve(SPEC, str(MODELS)) == MODELS / SPEC.filename
    assert model_store.resolve(SPEC, str(MODELS / SPEC.filename)) == MODELS / SPEC.filename
    wrong = tmp_path / SPEC.filename
    wrong.write_bytes(b"not a model")
    with pytest.raises(FruitlensError, match="expected"):
        model_store.resolve(SPEC, str(wrong))
    with pytest.raises(FruitlensError, match="no backbone file"):
        model_store.resolve(SPEC, str(tmp_path / "missing.tflite"))


def test_model_dir_env_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv(model_store.MODEL_DIR_ENV, str(MODELS))
    assert model_store.resolve(SPEC) == MODELS / SPEC.filename
    monkeypatch.setenv(model_store.MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(FruitlensError, match=model_store.MODEL_DIR_ENV):
        model_store.resolve(SPEC)
