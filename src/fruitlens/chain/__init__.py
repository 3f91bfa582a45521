"""The featurize chain: images under INPUT -> `embeddings/` + `errors/`, distributed with Spark,
incremental and resumable, every input exactly once.

- `listing`: what is under INPUT (identity, label, split), links and loops, S3 prefixes;
- `incremental`: what OUTPUT already holds vs the inputs: what to embed, keep, rewrite;
- `mapper`: records -> embeddings or errors, reads and decodes ahead of inference;
- `runner`: one partition in plain Python (read, decode, embed, write parts);
- `featurize`: the Spark wiring around the runner, and publishing.
"""
