"""Does a change keep every number? Runs the README's commands with one checkout's code on the same
small inputs, then digests what a user gets, so two checkouts can be compared byte for byte.

    .venv/bin/python scripts/same_numbers.py run CHECKOUT WORK      # CHECKOUT's src/ on the sample -> WORK/digest.json
    .venv/bin/python scripts/same_numbers.py compare WORK_A WORK_B  # every difference, or "identical"

What runs (with `PYTHONPATH=CHECKOUT/src`, this environment's packages): `run` on 220 Fruits-360
photos (10 classes), `featurize --views 2` on 96 GroceryStore photos (train and val), `train` on both
collections with the builtin catalogue, `predict --json`, `classify`, `index`, `export`, and the
service's OpenAPI document and answers (identify, species, health) through its ASGI app. The digest
holds every dataset's rows (sorted by path, values hashed), the reports without times, run ids and
versions, and the answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
VOLATILE = {
    "run_id",
    "seconds",
    "started",
    "finished",
    "elapsed_s",
    "versions",
    "time",
    "times",
    "wall_s",
    "stages",
    "created",
    "python",
    "host",
    "duration_s",
    "spark_ui",
    "generated",
    "when",
    "started_at",
    "finished_at",
    "application_id",
}


def sh(checkout: Path, *args: str, cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"), FRUITLENS_MODEL_DIR=str(SHARED / "models"))
    done = subprocess.run([sys.executable, "-m", "fruitlens", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"fruitlens {' '.join(args)} -> rc {done.returncode}\n{done.stderr[-3000:]}")
    return done.stdout


def inputs(work: Path) -> tuple[Path, Path, list[Path]]:
    fruits, shop = work / "in" / "fruits", work / "in" / "shop"
    src = SHARED / "data" / "fruits-360-sample"
    for split, n in (("Training", 16), ("Test", 6)):
        for cls in sorted(os.listdir(src / split))[:10]:
            (fruits / split / cls).mkdir(parents=True, exist_ok=True)
            for name in sorted(os.listdir(src / split / cls))[:n]:
                os.symlink(src / split / cls / name, fruits / split / cls / name)
    gs = SHARED / "data" / "grocerystore"
    for split, n in (("train", 10), ("val", 2)):
        for cls in (
            "Fruit/Apple/Granny-Smith",
            "Fruit/Banana",
            "Fruit/Kiwi",
            "Fruit/Lemon",
            "Vegetables/Carrots",
            "Packages/Juice/Tropicana-Apple-Juice",
            "Fruit/Orange",
            "Fruit/Lime",
        ):
            if not (gs / split / cls).is_dir():
                continue
            (shop / split / cls).mkdir(parents=True, exist_ok=True)
            for name in sorted(p for p in os.listdir(gs / split / cls) if p.endswith(".jpg"))[:n]:
                os.symlink(gs / split / cls / name, shop / split / cls / name)
    photos = [
        fruits / "Test" / c / sorted(os.listdir(fruits / "Test" / c))[0] for c in sorted(os.listdir(fruits / "Test"))
    ]
    photos += sorted((shop / "val").rglob("*.jpg"))[:6]
    return fruits, shop, photos


def digest_value(v) -> str:
    return hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:16]


def digest_dataset(folder: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.rglob("*.parquet"))
    files = [f for f in files if "/_" not in str(f.relative_to(folder)) and not f.name.startswith("_")]
    if not files:
        return {}
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    rows = table.to_pylist()
    key = "path" if "path" in table.column_names else table.column_names[0]
    rows.sort(key=lambda r: (str(r.get(key)), str(r.get("view", ""))))
    cols = {c: digest_value([r[c] for r in rows]) for c in table.column_names}
    return {"rows": len(rows), "schema": str(table.schema), "columns": cols}


def scrub(obj):
    if isinstance(obj, dict):
        return {
            k: scrub(v)
            for k, v in obj.items()
            if k not in VOLATILE and not k.endswith("_s") and not k.endswith("seconds")
        }
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    if isinstance(obj, str) and ("/tmp/" in obj or "/work/" in obj):
        return obj.split("/in/")[-1].split("/out")[-1]
    return obj


def service_answers(checkout: Path, model: Path, index: Path, photos: list[Path]) -> dict:
    code = f"""
import json, sys
sys.path.insert(0, {str(checkout / "src")!r})
from fastapi.testclient import TestClient
from fruitlens.config import ServeConfig
from fruitlens.serve.service import load_service
from fruitlens.serve.app import create_app
info = ({str(SHARED / "data" / "fruits-360-meta")!r}, {str(SHARED / "data" / "grocerystore")!r})
cfg = ServeConfig(model={str(model)!r}, index={str(index)!r}, backbone_file={str(SHARED / "models")!r}, info=info)
svc = load_service(cfg, say=lambda *a, **k: None)
app = create_app(svc)
c = TestClient(app)
out = {{"openapi": app.openapi()}}
photos = {[str(p) for p in photos]!r}
for lang in ("en", "fr"):
    for i, p in enumerate(photos[:4]):
        upload = [("photo", (p.rsplit("/", 1)[-1], open(p, "rb"), "image/jpeg"))]
        r = c.post("/api/v1/identify?lang=" + lang, files=upload)
        out[f"identify_{{lang}}_{{i}}"] = [r.status_code, r.json()]
    r = c.get("/api/v1/species?lang=" + lang)
    out["species_" + lang] = [r.status_code, r.json()]
r = c.post("/api/v1/identify", files=[("photo", ("x.jpg", b"not an image", "image/jpeg"))])
out["identify_bad"] = [r.status_code, r.json()]
r = c.get("/api/v1/health")
out["health"] = [r.status_code, r.json()]
r = c.get("/")
out["page"] = [r.status_code, len(r.content)]
print(json.dumps(out))
"""
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"service: rc {done.returncode}\n{done.stderr[-3000:]}")
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    for k, v in answers.items():  # photo ids are random per request
        if k.startswith("identify_") and isinstance(v[1], dict):
            for p in v[1].get("photos", []) or []:
                p.pop("id", None)
            v[1].pop("photo_id", None)
            v[1].pop("photo_ids", None)
            v[1].pop("timing_ms", None)
    return scrub(answers)


def run(checkout: Path, dest: Path) -> None:
    work = Path("/tmp/fruitlens-same-numbers")  # one place for every checkout: paths (and what hashes them) agree
    for folder in (work, dest):
        if folder.exists():
            shutil.rmtree(folder)
    work.mkdir(parents=True)
    fruits, shop, photos = inputs(work)
    bf = ["--backbone-file", str(SHARED / "models")]
    sh(checkout, "run", str(fruits), str(work / "out_fruits"), "--quiet", *bf, cwd=work)
    sh(checkout, "featurize", str(shop), str(work / "out_shop"), "--views", "2", "--quiet", *bf, cwd=work)
    sh(
        checkout,
        "train",
        str(work / "out_fruits"),
        str(work / "out_shop"),
        str(work / "model"),
        "--catalogue",
        "builtin",
        "--target-precision",
        "0.9",
        "--quiet",
        cwd=work,
    )
    pred = json.loads(
        sh(checkout, "predict", "--model", str(work / "model"), "--json", *bf, *map(str, photos), cwd=work)
    )
    sh(checkout, "classify", "--model", str(work / "model"), str(shop), str(work / "classified"), "--quiet", cwd=work)
    sh(checkout, "index", str(work / "out_fruits"), "--model", str(work / "model"), cwd=work)
    sh(checkout, "export", str(work / "model"), str(work / "fruit.tflite"), *bf, cwd=work)
    digest = {"predict": scrub(pred)}
    for ds in sorted(p for p in work.rglob("_SUCCESS")):
        rel = re.sub(r"_[0-9a-f]{12}/", "/", str(ds.parent.relative_to(work)) + "/").rstrip(
            "/"
        )  # Spark ML's stage uids
        if any(ds.parent.glob("*.parquet")) or any(ds.parent.rglob("*.parquet")):
            digest["dataset " + rel] = digest_dataset(ds.parent)
    for rep in sorted(work.rglob("report.json")):
        digest["report " + str(rep.relative_to(work))] = scrub(json.loads(rep.read_text()))
    for f in ("model/portable.npz", "fruit.tflite"):
        if (work / f).exists():
            digest["bytes " + f] = hashlib.sha256((work / f).read_bytes()).hexdigest()
    digest["service"] = service_answers(checkout, work / "model", work / "out_fruits", photos)
    (work / "digest.json").write_text(json.dumps(digest, indent=1, sort_keys=True, default=str))
    shutil.move(work, dest)
    print(f"{dest / 'digest.json'}: {len(digest)} entries")


def compare(a: Path, b: Path) -> int:
    da, db = (json.loads((p / "digest.json").read_text()) for p in (a, b))
    diffs = []

    def walk(x, y, where):
        if type(x) is not type(y):
            diffs.append(f"{where}: {str(x)[:200]} != {str(y)[:200]}")
        elif isinstance(x, dict):
            for k in sorted(set(x) | set(y)):
                if k in VOLATILE:
                    continue
                if k not in x or k not in y:
                    diffs.append(f"{where}.{k}: only in {'B' if k not in x else 'A'}")
                else:
                    walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        elif x != y:
            diffs.append(f"{where}: {str(x)[:200]} != {str(y)[:200]}")

    walk(da, db, "")
    print("\n".join(diffs) if diffs else f"identical: {len(da)} entries")
    return 1 if diffs else 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("run", "compare"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "run":
        run(Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve())
    else:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
