"""fruitlens: fruit photos -> pretrained-CNN embeddings -> StandardScaler + PCA, on Spark; the
identification engine trained on them; the service that answers one photo.

Packages, one role each (docs/architecture.md maps them one to one):
- `storage`: where data lives (local or s3://), part files, manifests, atomic publishing;
- `embedding`: one photo -> one embedding (decode, backbones, their files, the `Embedder`);
- `chain`: the distributed featurize chain (listing, incremental plan, partition runner);
- `reduction`: StandardScaler + PCA on Spark ML;
- `engine`: the identification engine (train on Spark ML, the portable model, predict, classify);
- `serve`: the HTTP service and its page;
- `spark`: the Spark edge (session, progress, datasets <-> Spark, shipping fruitlens to executors);
- `emr`: the AWS EMR kit.
Top level: `config` (every setting and default), `schemas` (every row schema), `jobs` (one job
context per command), `report`, `cli`.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.2.0"  # the only place the version is written (pyproject.toml reads it; CHANGELOG.md)


class FruitlensError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""

    exit_code = 2


def note(message: str) -> None:
    """One line on stderr that the user should read but that stops nothing (a renamed option,
    an old folder name still accepted)."""
    print(f"fruitlens: note: {message}", file=sys.stderr, flush=True)


# Spark ML saves a Python stage under its module path: classifier folders saved before the package
# layout (0.1's flat modules) name `fruitlens.sparkml.ArrayToVector`. They load through this alias
# until 0.3.0 (CHANGELOG.md).
_MOVED = {"fruitlens.sparkml": "fruitlens.reduction.sparkml"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in _MOVED else None

    def create_module(self, spec):
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module):
        pass


sys.meta_path.append(_MovedModules())
