"""The neighbour index: exact and approximate search, the embeddings it accepts, the saved
(memory-mapped) index."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from fruitlens import FruitlensError
from fruitlens.engine.model import PortableModel
from fruitlens.serve.index import NeighbourIndex
from fruitlens.storage.location import Location

from .support import Server, photo_of, post_photo


def test_ann_option_finds_the_exact_neighbours_on_a_small_index(built):
    model = PortableModel.load_folder(str(built / "model"))
    exact = NeighbourIndex.load(Location.of(str(built / "index")), model)
    approx = NeighbourIndex.load(Location.of(str(built / "index")), model, ann=True)
    assert approx.kind.startswith("approximate") and exact.kind == "exact"
    hits = total = 0
    for i in range(0, len(exact), 10):
        q = exact.vectors[i]
        e = exact.search(q, 8)
        a = approx.search(q, 8)
        assert e[0].entry.id == exact.entries[i].id and e[0].similarity == pytest.approx(1.0, abs=1e-5)
        hits += len({n.entry.id for n in e} & {n.entry.id for n in a})
        total += 8
        assert [n.similarity for n in a] == sorted((n.similarity for n in a), reverse=True)
    assert hits / total >= 0.95


def test_index_made_with_other_embeddings_is_refused(built, tmp_path):
    model = PortableModel.load_folder(str(built / "model"))
    shutil.copytree(built / "index" / "embeddings", tmp_path / "idx" / "embeddings")
    manifest = json.loads((tmp_path / "idx" / "embeddings" / "_SUCCESS").read_text())
    manifest["params"]["model_sha256"] = "0" * 64
    (tmp_path / "idx" / "embeddings" / "_SUCCESS").write_text(json.dumps(manifest))
    with pytest.raises(FruitlensError, match="index's embeddings were made with"):
        NeighbourIndex.load(Location.of(str(tmp_path / "idx")), model)
    with pytest.raises(FruitlensError, match="no embeddings dataset"):
        NeighbourIndex.load(Location.of(str(tmp_path / "nothing")), model)


def test_a_saved_index_is_built_once_updated_incrementally_and_memory_mapped_by_serve(built, tmp_path):
    from fruitlens.serve.saved_index import SavedIndex, build

    out = tmp_path / "out"
    shutil.copytree(built / "index", out)
    model = PortableModel.load_folder(str(built / "model"))
    first = build(Location.of(str(out)), model)
    assert first["added"] == 120 and not first["incremental"]
    again = build(Location.of(str(out)), model)
    assert again["incremental"] and again["added"] == 0 and again["kept"] == 120
    exact = NeighbourIndex.load(Location.of(str(out)), model)
    saved = SavedIndex.open(Location.of(str(out)), model)
    hits = total = 0
    for i in range(0, len(exact), 7):
        want = {n.entry.id for n in exact.search(exact.vectors[i], 8)}
        got = saved.search(exact.vectors[i], 8)
        hits += len(want & {n.entry.id for n in got})
        total += 8
        assert got[0].entry.path == exact.entries[i].path and got[0].similarity == pytest.approx(1.0, abs=2e-3)
    assert hits / total >= 0.95
    assert saved.entry(exact.entries[3].id).path == exact.entries[3].path and saved.entry("0" * 16) is None
    s = Server(built, tmp_path / "serve.log", "--ann", index=str(out))
    try:
        assert "saved index memory-mapped" in s.log.read_text()
        with httpx.Client(base_url=s.url, timeout=60) as c:
            a = post_photo(c, photo_of("Tomato 1").read_bytes()).json()
            assert a["similar"][0]["label"] == "Tomato 1" and c.get(a["similar"][0]["url"]).status_code == 200
    finally:
        s.stop()
