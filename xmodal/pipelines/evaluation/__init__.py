"""Zero-shot retrieval evaluation: datasets, cached embeddings, recall, sweeps, reports, plots."""

from xmodal.pipelines.evaluation.datasets import CaptionSet, DatasetError, load_dataset
from xmodal.pipelines.evaluation.embed import EmbeddedSet, embed_dataset
from xmodal.pipelines.evaluation.sweep import EvalConfig, EvalReport, EvalRow, evaluate

__all__ = [
    "CaptionSet",
    "DatasetError",
    "EmbeddedSet",
    "EvalConfig",
    "EvalReport",
    "EvalRow",
    "embed_dataset",
    "evaluate",
    "load_dataset",
]
