"""Linear probe: how well do an encoder's features separate a folder-per-class dataset?

``DATASET/<class>/*.jpg`` -> features (the same streaming code as ``xmodal embed``) -> a
standardised multinomial logistic regression (scikit-learn) trained on a stratified split ->
accuracy, balanced accuracy and per-class precision/recall/F1 on the held-out part (or on a
separate ``test_dir`` with the same class folders).
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.encoders import Encoder
from xmodal.encoders.representation import parse_representation
from xmodal.errors import XmodalError
from xmodal.pipelines.features.stream import Embedded, image_features
from xmodal.pipelines.sources import Item, Skipped, SourcePolicy, iter_inputs
from xmodal.pipelines.workers import DECODE_TIMEOUT

log = logging.getLogger(__name__)

INSTALL_HINT = "the linear probe needs scikit-learn: pip install 'xmodal[probe]'"


@dataclass(frozen=True)
class ProbeConfig:
    representation: str = "embedding"
    test_size: float = 0.2
    seed: int = 0
    C: float = 1.0  # inverse regularisation strength of the logistic regression
    test_dir: str | None = None  # a given test split; None: a stratified held-out share
    batch_size: int = 32
    workers: int | None = None
    decode_timeout: float = DECODE_TIMEOUT  # seconds per input to be read and decoded
    max_iter: int = 2000
    follow_links: bool = False  # take symbolic links that lead out of their class folder


@dataclass(frozen=True)
class ClassScore:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ProbeReport:
    """Held-out scores; ``chance`` is the accuracy of always answering the commonest class."""

    classes: tuple[str, ...]
    n_train: int
    n_test: int
    dim: int
    accuracy: float
    balanced_accuracy: float
    chance: float
    per_class: tuple[ClassScore, ...]
    failed: int
    representation: str
    text: str  # scikit-learn's classification_report

    def summary(self) -> str:
        return (
            f"accuracy {self.accuracy:.3f} (balanced {self.balanced_accuracy:.3f}; chance "
            f"{self.chance:.3f}) on {self.n_test} held-out images, trained on {self.n_train}; "
            f"{len(self.classes)} classes, {self.representation} features of dim {self.dim}"
            + (f"; {self.failed} images failed to decode" if self.failed else "")
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_class"] = {s.name: {k: v for k, v in asdict(s).items() if k != "name"}
                             for s in self.per_class}  # fmt: skip
        return data


def class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise XmodalError(
            f"no such dataset folder: {root}; pass a folder with one subfolder per class"
        )
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass(frozen=True)
class ClassImages:
    """Features of ``root/<class>/*`` with their labels, and what produced no row."""

    features: np.ndarray
    labels: np.ndarray
    names: list[str]
    failed: int
    links_skipped: int  # symbolic links out of their class folder, left out by policy

    def hint(self) -> str:
        """Why images may be missing, for an error about too few of them."""
        if not self.links_skipped:
            return ""
        return (
            f"; {self.links_skipped} symlinks pointing outside their class folder were skipped "
            "(pass --follow-links to take them)"
        )


def dataset_features(
    encoder: Encoder, root: Path, config: ProbeConfig, classes: list[str] | None = None
) -> ClassImages:
    """Features, labels and class names of ``root/<class>/*``, with what produced no row."""
    folders = class_folders(root)
    names = classes if classes is not None else [f.name for f in folders]
    unknown = sorted({f.name for f in folders} - set(names))
    if unknown:
        raise XmodalError(f"{root} has classes the training set lacks: {', '.join(unknown)}")
    if classes is None and len(names) < 2:
        raise XmodalError(
            f"{root} holds {len(names)} class folder(s); a probe needs at least 2 "
            "(DATASET/<class>/<images>)"
        )
    index = {name: i for i, name in enumerate(names)}
    pending: defaultdict[str, deque[int]] = defaultdict(deque)  # uri -> labels in flight
    policy = SourcePolicy(follow_links=config.follow_links)
    links = 0

    def inputs() -> Iterator[Item | Skipped]:
        nonlocal links
        for folder in folders:
            for entry in iter_inputs([str(folder)], policy):
                if isinstance(entry, Item):
                    pending[entry.uri].append(index[folder.name])
                elif entry.reason == "outside-root":
                    links += 1
                yield entry

    rows, labels, failed = [], [], 0
    representation = parse_representation(config.representation)
    stream = image_features(
        encoder,
        inputs(),
        representation,
        batch_size=config.batch_size,
        workers=config.workers,
        timeout=config.decode_timeout,
    )
    for event in stream:
        if isinstance(event, Embedded):
            rows.append(event.vectors)
            labels.extend(_take(pending, item.uri) for item in event.items)
        elif event.status == "failed":
            _take(pending, event.uri)
            failed += 1
            log.warning("failed: %s", event.message)
    dim = encoder.feature_dim(config.representation, "image")
    features = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
    if links:
        log.info("%d symlinks pointing outside their class folder were skipped", links)
    return ClassImages(features, np.asarray(labels, np.int64), names, failed, links)


def _take(pending: defaultdict[str, deque[int]], uri: str) -> int:
    labels = pending[uri]
    label = labels.popleft()
    if not labels:
        del pending[uri]
    return label


def run_probe(
    encoder: Encoder, dataset: str | Path, config: ProbeConfig = ProbeConfig()
) -> ProbeReport:
    """Features of ``dataset`` -> logistic regression -> held-out scores."""
    if not 0.0 < config.test_size < 1.0:
        raise XmodalError(f"--test-size must be between 0 and 1, got {config.test_size}")
    sklearn = _sklearn()
    train = dataset_features(encoder, Path(dataset), config)
    x, y, names, failed = train.features, train.labels, train.names, train.failed
    if config.test_dir:
        test = dataset_features(encoder, Path(config.test_dir), config, names)
        x_test, y_test = test.features, test.labels
        x_train, y_train, failed = x, y, failed + test.failed
        _check_counts(y_train, names, 1, "training set", train.hint())
        if not len(y_test):
            raise XmodalError(
                f"the test folder {config.test_dir} holds no decodable images{test.hint()}"
            )
    else:
        _check_split(y, names, config.test_size, train.hint())
        x_train, x_test, y_train, y_test = sklearn.model_selection.train_test_split(
            x, y, test_size=config.test_size, random_state=config.seed, stratify=y
        )
    return _fit_and_score(sklearn, x_train, y_train, x_test, y_test, names, config, failed)


def _fit_and_score(
    sklearn: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    names: list[str],
    config: ProbeConfig,
    failed: int,
) -> ProbeReport:
    metrics = sklearn.metrics
    model = sklearn.pipeline.make_pipeline(
        sklearn.preprocessing.StandardScaler(),
        sklearn.linear_model.LogisticRegression(C=config.C, max_iter=config.max_iter),
    )
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    labels = list(range(len(names)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_test, predicted, labels=labels, zero_division=0
    )
    commonest = Counter(y_train.tolist()).most_common(1)[0][0]
    return ProbeReport(
        classes=tuple(names),
        n_train=len(y_train),
        n_test=len(y_test),
        dim=int(x_train.shape[1]),
        accuracy=float(metrics.accuracy_score(y_test, predicted)),
        balanced_accuracy=float(metrics.balanced_accuracy_score(y_test, predicted)),
        chance=float(np.mean(y_test == commonest)),
        per_class=tuple(
            ClassScore(n, float(p), float(r), float(f), int(s))
            for n, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
        ),
        failed=failed,
        representation=str(parse_representation(config.representation)),
        text=metrics.classification_report(
            y_test, predicted, labels=labels, target_names=names, digits=3, zero_division=0
        ),
    )


def _check_counts(y: np.ndarray, names: list[str], least: int, where: str, hint: str = "") -> None:
    counts = np.bincount(y, minlength=len(names))
    short = [f"{names[i]} ({int(c)})" for i, c in enumerate(counts) if c < least]
    if short:
        raise XmodalError(
            f"the {where} needs at least {least} decodable images per class; too few in: "
            f"{', '.join(short)}{hint}"
        )


def _check_split(y: np.ndarray, names: list[str], test_size: float, hint: str = "") -> None:
    _check_counts(y, names, 2, "dataset", hint)
    n_test = math.ceil(test_size * len(y))
    if n_test < len(names) or len(y) - n_test < len(names):
        raise XmodalError(
            f"{len(y)} images cannot be split so that both parts hold every one of the "
            f"{len(names)} classes at --test-size {test_size}; add images, change --test-size "
            "or give a test split with --test DIR"
        )


def _sklearn() -> Any:
    try:
        import sklearn.linear_model
        import sklearn.metrics
        import sklearn.model_selection
        import sklearn.pipeline
        import sklearn.preprocessing
    except ImportError as exc:
        raise XmodalError(INSTALL_HINT) from exc
    return sklearn
