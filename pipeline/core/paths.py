"""Every file the stages read or write, relative to the project root; mirrors ``dvc.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    @property
    def dataset_spec(self) -> Path:
        """Sources and checksums of the dataset's files: a dependency of ingest, not a param."""
        return self.root / "datasets" / "fashion-mnist.yaml"

    @property
    def raw_dir(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def processed_dir(self) -> Path:
        return self.root / "data" / "processed"

    def split(self, name: str) -> Path:
        """``train``, ``val`` or ``test`` arrays: ``x`` uint8 pixels, ``y`` uint8 labels."""
        return self.processed_dir / f"{name}.npz"

    @property
    def model(self) -> Path:
        """The best epoch's checkpoint, in the tutorial's HDF5 format."""
        return self.root / "models" / "best-model.h5"

    @property
    def keras_model(self) -> Path:
        """The same model as a self-contained ``.keras`` file with the class names: what predict loads."""
        return self.root / "models" / "model.keras"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def samples_png(self) -> Path:
        return self.reports_dir / "preprocess" / "samples.png"

    @property
    def class_counts_csv(self) -> Path:
        return self.reports_dir / "preprocess" / "class_counts.csv"

    @property
    def train_live_dir(self) -> Path:
        """DVCLive's folder of the train stage: ``metrics.json`` (the epoch running, then the kept one)
        and ``plots/`` (each metric per epoch, the learning-curve figures)."""
        return self.reports_dir / "train"

    @property
    def loss_png(self) -> Path:
        """The tutorial's figure: train vs validation loss per epoch."""
        return self.train_live_dir / "plots" / "images" / "loss.png"

    @property
    def accuracy_png(self) -> Path:
        return self.train_live_dir / "plots" / "images" / "accuracy.png"

    @property
    def evaluate_live_dir(self) -> Path:
        """DVCLive's folder of the evaluate stage: ``metrics.json`` and ``plots/``."""
        return self.reports_dir / "evaluate"

    @property
    def metrics_json(self) -> Path:
        """The test scores: loss, accuracy and macro F1 (evaluate)."""
        return self.evaluate_live_dir / "metrics.json"

    @property
    def train_metrics_json(self) -> Path:
        """The kept epoch: its number (``step``, from 1) and its val loss and accuracy (train)."""
        return self.train_live_dir / "metrics.json"

    @property
    def per_class_json(self) -> Path:
        """Precision, recall and F1 of each test class, in label order: a plot, not metrics, so
        ``dvc exp show`` keeps to the headline numbers."""
        return self.evaluate_live_dir / "plots" / "custom" / "per_class.json"

    @property
    def confusion_json(self) -> Path:
        """Each test image's actual and predicted class (DVCLive's confusion matrix data)."""
        return self.evaluate_live_dir / "plots" / "sklearn" / "confusion_matrix.json"

    @property
    def confusion_png(self) -> Path:
        return self.evaluate_live_dir / "plots" / "images" / "confusion_matrix.png"

    @property
    def f1_png(self) -> Path:
        return self.evaluate_live_dir / "plots" / "images" / "per_class_f1.png"

    def output_folders(self) -> list[Path]:
        """Where the stages write: a killed run's temporary files are looked for here."""
        return [self.root / "data", self.root / "models", self.reports_dir]

    def figures(self) -> dict[str, Path]:
        """The PNGs people look at, by title, in pipeline order."""
        return {
            "First training image of each class": self.samples_png,
            "Loss per epoch": self.loss_png,
            "Accuracy per epoch": self.accuracy_png,
            "Confusion matrix (test set)": self.confusion_png,
            "Per-class F1 (test set)": self.f1_png,
        }
