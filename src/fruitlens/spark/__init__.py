"""The Spark edge: everything that starts or talks to Spark, so the rest stays plain Python.

- `session`: the SparkSession (local mode, any master, or spark-submit's);
- `progress`: progress bars and log lines from Spark's status tracker;
- `datasets`: fruitlens datasets <-> Spark DataFrames (native reads where the JVM can, writes
  through the tasks so publishing keeps its guarantees);
- `packaging`: fruitlens shipped to the executors of a cluster.
"""
