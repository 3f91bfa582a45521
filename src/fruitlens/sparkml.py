"""Spark ML stages fruitlens adds: `ArrayToVector` lets a saved PipelineModel take the `embedding`
column (array<float>) as it is in the embeddings dataset. Pure Python (saved with Spark ML's
DefaultParamsWriter), so `PipelineModel.load` needs fruitlens importable on the driver."""

from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable


class ArrayToVector(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """array<float|double> column -> ML vector column."""

    @keyword_only
    def __init__(self, *, inputCol: str = "embedding", outputCol: str = "features"):
        super().__init__()
        self._setDefault(inputCol="embedding", outputCol="features")
        self._set(**self._input_kwargs)

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector

        return dataset.withColumn(self.getOutputCol(), array_to_vector(dataset[self.getInputCol()]))
