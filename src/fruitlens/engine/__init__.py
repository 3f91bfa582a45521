"""The identification engine: a classifier trained on embeddings, and answering photos with it.

- `train`: candidates fitted with Spark ML, chosen on validation, thresholds, the portable export;
- `model`: `PortableModel`, the trained classifier as NumPy arrays with the "not sure" rules;
- `nearest`: exact cosine search with a principal-axes bound (novelty, similar images);
- `predict`: photos -> answers without Spark or a JVM (`Identifier`);
- `classify`: many photos -> predictions inside Spark tasks.
"""
