"""Embedding: one photo -> one embedding, the same way everywhere.

- `embedder`: `Embedder`, the one path from image bytes to an embedding (backbone at its size,
  its file resolved and checked once, the decode rule, a small pool of interpreters) used by
  featurize's tasks, `predict`, `classify` and `serve`;
- `decode`: bytes -> RGB pixels, or a reason why not;
- `backbones`: the networks (LiteRT MobileNetV2s and EfficientNet-Lite2) behind the `Backbone` interface;
- `backbone_file`: a backbone's file: the override, the cache, the download, the sha256.
"""
