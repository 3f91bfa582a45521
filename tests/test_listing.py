from pathlib import Path

import pytest

from fruitlens import FruitlensError
from fruitlens.listing import label_and_split, list_images


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


def test_input_folder_named_test_gives_its_split():
    assert label_and_split(("Kiwi", "k.jpg"), "Test") == ("Kiwi", "test")
    assert label_and_split(("Kiwi", "k.jpg"), "fruits") == ("Kiwi", None)


def test_missing_input_and_file_input_are_clear_errors(tmp_path):
    with pytest.raises(FruitlensError, match="INPUT not found"):
        list_images(str(tmp_path / "nope"))
    with pytest.raises(FruitlensError, match="must be a folder"):
        list_images(str(touch(tmp_path / "x.jpg")))
