"""Listing local folders: labels, splits, identity, links, loops and odd names. No ../shared."""

import os
from pathlib import Path

import pytest

from fruitlens import FruitlensError
from fruitlens.chain.listing import Problem, label_and_split, list_local
from fruitlens.schemas import real_path
from fruitlens.storage.location import Location


def list_images(uri: str):
    return list_local(Location.of(uri))


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_label_is_parent_folder_and_split_from_training_test_any_case(tmp_path):
    touch(tmp_path / "Training" / "Apple Braeburn" / "a.jpg")
    touch(tmp_path / "TEST" / "Banana" / "b.JPEG")
    touch(tmp_path / "test" / "Banana" / "sub" / "c.png")
    touch(tmp_path / "loose" / "Kiwi" / "d.webp")
    touch(tmp_path / "e.bmp")
    listing = list_images(str(tmp_path))
    got = {Path(r.path).name: (r.label, r.split) for r in listing.images}
    assert got == {
        "a.jpg": ("Apple Braeburn", "train"),
        "b.JPEG": ("Banana", "test"),
        "c.png": ("sub", "test"),
        "d.webp": ("Kiwi", None),
        "e.bmp": (tmp_path.name, None),
    }


def test_the_split_folder_names_most_datasets_use(tmp_path):
    # GroceryStore's layout: split / kind / coarse class / fine class / photo
    touch(tmp_path / "train" / "Fruit" / "Apple" / "Granny-Smith" / "g.jpg")
    touch(tmp_path / "Val" / "Fruit" / "Banana" / "b.jpg")
    touch(tmp_path / "VALIDATION" / "Kiwi" / "k.jpg")
    touch(tmp_path / "test" / "Vegetables" / "Leek" / "l.jpg")
    touch(tmp_path / "valley" / "Fig" / "f.jpg")  # only whole folder names count
    got = {Path(r.path).name: (r.label, r.split) for r in list_images(str(tmp_path)).images}
    assert got == {
        "g.jpg": ("Granny-Smith", "train"),
        "b.jpg": ("Banana", "validation"),
        "k.jpg": ("Kiwi", "validation"),
        "l.jpg": ("Leek", "test"),
        "f.jpg": ("Fig", None),
    }


def test_other_and_hidden_files_are_not_inputs_but_are_counted(tmp_path):
    touch(tmp_path / "Banana" / "ok.jpg")
    touch(tmp_path / "Banana" / "notes.txt")
    touch(tmp_path / "Banana" / "LICENSE")
    touch(tmp_path / "Banana" / ".DS_Store")
    listing = list_images(str(tmp_path))
    assert [Path(r.path).name for r in listing.images] == ["ok.jpg"]
    assert dict(listing.skipped) == {".txt": 1, "(none)": 1}


def test_sizes_and_absolute_paths_also_for_file_uri(tmp_path):
    touch(tmp_path / "Training" / "Kiwi" / "k.jpg", b"12345")
    listing = list_images(f"file://{tmp_path}")
    (ref,) = listing.images
    assert ref.path == str(tmp_path / "Training" / "Kiwi" / "k.jpg")
    assert ref.size_bytes == 5
    assert ref.modified_ns == (tmp_path / "Training" / "Kiwi" / "k.jpg").stat().st_mtime_ns
    assert ref.etag is None and ref.path_bytes is None


def test_input_folder_named_test_gives_its_split():
    assert label_and_split(("Kiwi", "k.jpg"), "Test") == ("Kiwi", "test")
    assert label_and_split(("Kiwi", "k.jpg"), "fruits") == ("Kiwi", None)


def test_missing_input_and_file_input_are_clear_errors(tmp_path):
    with pytest.raises(FruitlensError, match="INPUT not found"):
        list_images(str(tmp_path / "nope"))
    with pytest.raises(FruitlensError, match="must be a folder"):
        list_images(str(touch(tmp_path / "x.jpg")))


def test_linked_split_and_class_folders_are_followed(tmp_path):
    """A dataset assembled from several disks: Training -> another disk, a class -> elsewhere."""
    disk2 = tmp_path / "disk2"
    touch(disk2 / "fruits" / "Training" / "Kiwi" / "k1.jpg")
    touch(disk2 / "fruits" / "Training" / "Kiwi" / "k2.jpg")
    touch(tmp_path / "disk3" / "Banana" / "b.jpg")
    root = tmp_path / "dataset"
    (root / "Test").mkdir(parents=True)
    (root / "Training").symlink_to(disk2 / "fruits" / "Training", target_is_directory=True)
    (root / "Test" / "Banana").symlink_to(tmp_path / "disk3" / "Banana", target_is_directory=True)
    listing = list_images(str(root))
    got = {r.path: (r.label, r.split) for r in listing.images}
    assert got == {
        str(root / "Training" / "Kiwi" / "k1.jpg"): ("Kiwi", "train"),
        str(root / "Training" / "Kiwi" / "k2.jpg"): ("Kiwi", "train"),
        str(root / "Test" / "Banana" / "b.jpg"): ("Banana", "test"),
    }
    assert not listing.problems and not listing.skipped


def test_link_loops_are_reported_once_and_not_followed(tmp_path):
    touch(tmp_path / "in" / "Kiwi" / "k.jpg")
    (tmp_path / "in" / "Kiwi" / "again").symlink_to(tmp_path / "in", target_is_directory=True)
    (tmp_path / "in" / "self.jpg").symlink_to(tmp_path / "in" / "self.jpg")  # resolves to itself
    listing = list_images(str(tmp_path / "in"))
    assert [r.path for r in listing.images] == [str(tmp_path / "in" / "Kiwi" / "k.jpg")]
    reasons = {Path(p.path).name: (p.reason, p.detail) for p in listing.problems}
    assert set(reasons) == {"again", "self.jpg"}
    assert reasons["again"][0] == "symlink loop" and str(tmp_path / "in") in reasons["again"][1]
    assert reasons["self.jpg"][0] == "symlink loop"


def test_broken_links_say_so(tmp_path):
    touch(tmp_path / "in" / "Kiwi" / "k.jpg")
    (tmp_path / "in" / "Kiwi" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "in" / "Training").symlink_to(tmp_path / "unplugged-disk")  # a folder link, no extension
    (tmp_path / "in" / "Kiwi" / "notes.txt").symlink_to(tmp_path / "nowhere.txt")  # not an input
    listing = list_images(str(tmp_path / "in"))
    problems = sorted(listing.problems, key=lambda p: p.path)
    assert [(Path(p.path).name, p.reason) for p in problems] == [
        ("gone.jpg", "broken link"),
        ("Training", "broken link"),
    ]
    assert "nowhere.jpg" in problems[0].detail and "does not exist" in problems[0].detail
    assert problems[0].label == "Kiwi"
    assert dict(listing.skipped) == {".txt": 1}


def test_non_utf8_file_names_keep_their_exact_bytes(tmp_path):
    raw = os.fsencode(str(tmp_path / "in" / "Kiwi")) + b"/caf\xe9-\xff.jpg"  # Latin-1, not UTF-8
    os.makedirs(tmp_path / "in" / "Kiwi")
    with open(raw, "wb") as f:
        f.write(b"abc")
    (ref,) = list_images(str(tmp_path / "in")).images
    assert ref.path.endswith("Kiwi/caf\\xe9-\\xff.jpg")  # readable, valid UTF-8
    ref.path.encode("utf-8")
    assert ref.path_bytes == raw
    with open(real_path(ref.path, ref.path_bytes), "rb") as f:  # the exact file, not a look-alike
        assert f.read() == b"abc"
    assert ref.label == "Kiwi" and ref.size_bytes == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder_is_a_problem_not_a_crash(tmp_path):
    touch(tmp_path / "in" / "Kiwi" / "k.jpg")
    touch(tmp_path / "in" / "Secret" / "s.jpg")
    os.chmod(tmp_path / "in" / "Secret", 0)
    try:
        listing = list_images(str(tmp_path / "in"))
    finally:
        os.chmod(tmp_path / "in" / "Secret", 0o755)
    assert [Path(r.path).name for r in listing.images] == ["k.jpg"]
    assert [(p.reason, p.detail) for p in listing.problems] == [("unreadable folder", "permission denied")]


def test_fifo_with_an_image_name_is_not_opened(tmp_path):
    touch(tmp_path / "in" / "Kiwi" / "k.jpg")
    os.mkfifo(tmp_path / "in" / "Kiwi" / "pipe.jpg")
    listing = list_images(str(tmp_path / "in"))
    assert [Path(r.path).name for r in listing.images] == ["k.jpg"]
    assert [p.reason for p in listing.problems] == ["unreadable"]
    assert isinstance(listing.problems[0], Problem)
