"""TensorBoard events without TensorFlow (tensorboardX) plus metrics.jsonl, written by process 0 only."""
import json
import os

import jax
import numpy as np
from clu import metrics as clu_metrics
from tensorboardX import SummaryWriter


def window_means(window: list[dict]) -> dict[str, float]:
    """The mean of every metric over the steps of a logging window (clu.metrics.Average)."""
    return {k: float(clu_metrics.Average.from_model_output(np.asarray([m[k] for m in window])).compute())
            for k in window[0]}


class Writer:
    def __init__(self, workdir: str):
        main = jax.process_index() == 0
        self._tb = SummaryWriter(os.path.join(workdir, "tb")) if main else None
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a") if main else None

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        if self._tb is not None:
            self._tb.close()
            self._jsonl.close()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, float(value), step)
            self._tb.flush()
            self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
            self._jsonl.flush()

    def images(self, step: int, name: str, images: np.ndarray) -> None:
        """uint8 NHWC batch -> one image per sample under `name`."""
        if self._tb is not None:
            self._tb.add_images(name, images, step, dataformats="NHWC")
