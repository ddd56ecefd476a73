"""Embeddings as features: ``xmodal embed`` (rows written to a folder) and ``xmodal probe``.

- ``stream``: images decoded in worker processes and encoded in batches; texts;
- ``embed``: the ``embed`` pipeline and its manifest;
- ``output``: the output folder (per-modality row sinks, PCA, final files);
- ``writers``: streaming, crash-safe ``.npy``/parquet/JSON writers;
- ``probe``: a linear probe over a folder-per-class dataset (scikit-learn, imported lazily).
"""

from xmodal.pipelines.features.embed import EmbedConfig, EmbedReport, check_config, embed_to_dir
from xmodal.pipelines.features.probe import ClassScore, ProbeConfig, ProbeReport, run_probe
from xmodal.pipelines.features.stream import Dropped, Embedded, image_features, read_texts

__all__ = [
    "ClassScore",
    "Dropped",
    "EmbedConfig",
    "EmbedReport",
    "Embedded",
    "ProbeConfig",
    "ProbeReport",
    "check_config",
    "embed_to_dir",
    "image_features",
    "read_texts",
    "run_probe",
]
