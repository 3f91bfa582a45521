"""Storage: where data lives and how a dataset becomes visible.

- `location`: `Location`, a path or URI resolved once (local, file://, s3://) with its S3 options
  and a lazy filesystem; one-line storage errors; the reasons a read can fail.
- `writer`: Parquet part files written by tasks into a run's staging area (`Target`, `PartWriter`).
- `manifest`: the `_SUCCESS` manifest, written and read only here.
- `dataset`: the one reader of a dataset (`Dataset.at(location)`): its manifest, files, params,
  schema, rows, pyarrow tables, a `pyarrow.dataset`, a Spark DataFrame.
- `publish`: the accepted parts made the new version atomically (local rename; object store:
  copy in, manifest last, delete the rest).
"""
