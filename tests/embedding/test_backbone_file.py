"""The real download path: a local HTTP server plays the public URL."""

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest
from conftest import MODELS, SAMPLE, shared

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


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(directory, hits=None):
    """A real HTTP server on loopback serving `directory`; its base URL. `hits` collects GET paths."""

    class Handler(_Quiet):
        def do_GET(self):
            if hits is not None:
                hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A loopback HTTP server playing the project's release page: it serves ../shared/models, the
    very files the release publishes; FRUITLENS_MODEL_BASE_URL points at it, the cache is empty."""
    hits = []
    with serving(MODELS, hits) as url:
        monkeypatch.delenv(model_store.MODEL_DIR_ENV, raising=False)
        monkeypatch.setenv(model_store.CACHE_DIR_ENV, str(tmp_path / "cache"))
        monkeypatch.setenv(model_store.BASE_URL_ENV, url)
        yield hits


def test_lite2_files_download_from_the_release_checked_and_cached(release):
    from fruitlens.embedding.embedder import Embedder

    lite2 = get_spec("lite2").file
    assert lite2.url.startswith(model_store.RELEASES) and lite2.url.endswith("/efficientnet_lite2_ms_int8.tflite")
    embedder = Embedder.resolve("lite2")  # what `featurize --backbone lite2` does first
    assert embedder.file == str(model_store.cache_dir() / lite2.filename)
    assert model_store.sha256_of(embedder.file) == lite2.sha256 == model_store.sha256_of(MODELS / lite2.filename)
    assert embedder.embed_bytes(next((SAMPLE / "Test").glob("*/*.jpg")).read_bytes()).shape == (2136,)
    assert Embedder.resolve("efficientnet_lite2_pooled").file == embedder.file  # the same file, from the cache
    Embedder.resolve("efficientnet_lite2_fp32")
    assert release == ["/efficientnet_lite2_ms_int8.tflite", "/efficientnet_lite2_ms_fp32.tflite"]


def corrupted_lite2(folder):
    lite2 = get_spec("lite2").file
    data = bytearray((MODELS / lite2.filename).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the weights
    folder.mkdir(parents=True, exist_ok=True)
    (folder / lite2.filename).write_bytes(bytes(data))
    return folder / lite2.filename


def test_a_corrupted_lite2_copy_is_refused_in_one_line(release, tmp_path, monkeypatch):
    lite2 = get_spec("lite2").file
    bad = corrupted_lite2(tmp_path / "bad")
    # a corrupted cached copy is not used: the release's file replaces it
    corrupted_lite2(model_store.cache_dir())
    assert model_store.sha256_of(model_store.resolve(lite2)) == lite2.sha256
    # a corrupted local copy (--backbone-file, $FRUITLENS_MODEL_DIR) is refused, in one line
    for override in (bad.parent, bad):
        with pytest.raises(FruitlensError, match="sha256") as refused:
            model_store.resolve(lite2, str(override))
        assert "\n" not in str(refused.value) and lite2.sha256 in str(refused.value)
    # and a corrupted download is refused and not cached
    monkeypatch.setenv(model_store.CACHE_DIR_ENV, str(tmp_path / "cache2"))
    with serving(bad.parent) as url:
        monkeypatch.setenv(model_store.BASE_URL_ENV, url + "/")
        with pytest.raises(FruitlensError, match="not using it") as refused:
            model_store.resolve(lite2)
    assert "\n" not in str(refused.value)
    assert not list(model_store.cache_dir().iterdir())


def test_the_cli_refuses_a_corrupted_lite2_download_in_one_line(tmp_path):
    bad = corrupted_lite2(tmp_path / "mirror")
    env = {k: v for k, v in os.environ.items() if k != model_store.MODEL_DIR_ENV}
    with serving(bad.parent) as url:
        env.update({model_store.CACHE_DIR_ENV: str(tmp_path / "cache"), model_store.BASE_URL_ENV: url})
        res = subprocess.run(
            [sys.executable, "-m", "fruitlens", "featurize", SAMPLE / "Test", tmp_path / "out", "--backbone", "lite2"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if "sha256" in line]
    assert len(lines) == 1 and "efficientnet_lite2_ms_int8.tflite" in lines[0] and "not using it" in lines[0], (
        res.stderr
    )
