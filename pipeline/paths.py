"""Every file the stages read or write, relative to the project root; mirrors ``dvc.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    @property
    def params_valid(self) -> Path:
        """The validate stage's marker: every other stage depends on it."""
        return self.reports_dir / "validate" / "params-valid.txt"

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
    def history_csv(self) -> Path:
        return self.reports_dir / "train" / "history.csv"

    @property
    def loss_png(self) -> Path:
        return self.reports_dir / "train" / "loss.png"

    @property
    def accuracy_png(self) -> Path:
        return self.reports_dir / "train" / "accuracy.png"

    @property
    def metrics_json(self) -> Path:
        return self.reports_dir / "evaluate" / "metrics.json"

    @property
    def per_class_json(self) -> Path:
        """Precision, recall and F1 of each test class, in label order: a plot, not metrics, so
        ``dvc exp show`` keeps to the headline numbers."""
        return self.reports_dir / "evaluate" / "per_class.json"

    @property
    def predictions_csv(self) -> Path:
        return self.reports_dir / "evaluate" / "test_predictions.csv"

    @property
    def confusion_png(self) -> Path:
        return self.reports_dir / "evaluate" / "confusion_matrix.png"

    @property
    def f1_png(self) -> Path:
        return self.reports_dir / "evaluate" / "per_class_f1.png"

    def figures(self) -> dict[str, Path]:
        """The PNGs people look at, by title, in pipeline order."""
        return {
            "First training image of each class": self.samples_png,
            "Loss per epoch": self.loss_png,
            "Accuracy per epoch": self.accuracy_png,
            "Confusion matrix (test set)": self.confusion_png,
            "Per-class F1 (test set)": self.f1_png,
        }
