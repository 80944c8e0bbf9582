"""Training history: one row of metrics per epoch, saved as JSON/CSV and plotted."""
import csv
import io
import json

from fastdl._io import atomic_write_bytes


class History:
    """Per-epoch records (dicts of floats) with file output."""

    def __init__(self, records=None):
        self.records = list(records or [])

    def append(self, record):
        self.records.append(dict(record))

    def __getitem__(self, key):
        """The column ``key`` as a list (``history['val_loss']``)."""
        return [record.get(key) for record in self.records]

    def __len__(self):
        return len(self.records)

    def keys(self):
        keys = []
        for record in self.records:
            keys.extend(k for k in record if k not in keys)
        return keys

    def to_json(self, path):
        atomic_write_bytes(path, json.dumps(self.records, indent=1).encode())

    def to_csv(self, path):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.keys())
        writer.writeheader()
        writer.writerows(self.records)
        atomic_write_bytes(path, buffer.getvalue().encode())

    @classmethod
    def from_json(cls, path):
        with open(path) as f:
            return cls(json.load(f))

    def plot(self, path):
        """Write a PNG of the loss curves and of each logged metric's (needs matplotlib).

        One panel per quantity found in the records (``loss``, ``accuracy``,
        ``mean_iou``), train and validation in each.

        Raises
        ------
        ImportError
            With the install command, when matplotlib is missing.
        """
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError('History.plot needs matplotlib: pip install "fastdl[plot]"') \
                from error
        epochs = self["epoch"]
        quantities = [key for key in ("loss", "accuracy", "mean_iou")
                      if key == "loss" or any("train_" + key in record or "val_" + key in record
                                              for record in self.records)]
        figure, axes = plt.subplots(1, len(quantities), figsize=(5 * len(quantities), 4),
                                    squeeze=False)
        for key, axis in zip(quantities, axes[0]):
            for prefix, style in (("train_", "-o"), ("val_", "-s")):
                values = self[prefix + key]
                if any(v is not None for v in values):
                    axis.plot(epochs, values, style, label=prefix.rstrip("_"), markersize=3)
            axis.set_xlabel("epoch")
            axis.set_ylabel(key)
            axis.set_title(key.replace("_", " "))
            axis.grid(alpha=0.3)
            axis.legend()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        atomic_write_bytes(path, buffer.getvalue())
