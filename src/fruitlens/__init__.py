"""fruitlens: fruit photos -> pretrained-CNN embeddings -> StandardScaler + PCA, on Spark."""

__version__ = "0.1.0"


class FruitlensError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""

    exit_code = 2
