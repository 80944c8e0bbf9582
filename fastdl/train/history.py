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
        """Write a PNG of the loss and accuracy curves (needs matplotlib).

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
        figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
        for key, axis in (("loss", loss_axis), ("accuracy", accuracy_axis)):
            for prefix, style in (("train_", "-o"), ("val_", "-s")):
                values = self[prefix + key]
                if any(v is not None for v in values):
                    axis.plot(epochs, values, style, label=prefix.rstrip("_"), markersize=3)
            axis.set_xlabel("epoch")
            axis.set_ylabel(key)
            axis.grid(alpha=0.3)
            axis.legend()
        loss_axis.set_title("loss")
        accuracy_axis.set_title("accuracy")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        atomic_write_bytes(path, buffer.getvalue())
