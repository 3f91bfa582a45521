"""The reduction: embeddings -> StandardScaler + PCA (Spark ML) -> `features/` and the fitted `pca/`.

- `sparkml`: the Spark ML stages fruitlens adds (`ArrayToVector`, `EigenPCA`) and the spectrum;
- `reduce`: the job: fit (or reuse) the scaler + PCA, project every row, save the model.
"""
