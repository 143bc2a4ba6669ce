"""TensorBoard events without TensorFlow (tensorboardX) plus metrics.jsonl, written by process 0 only.

The workdir may be any path etils.epath opens (a local directory, gs://, s3://, ...): object stores cannot append,
so there a file is rewritten whole at each flush (the metrics of a run are a few MB at most).
"""
import json
from typing import Any

import jax
import numpy as np
from clu import metrics as clu_metrics
from etils import epath
from tensorboardX import SummaryWriter, record_writer

REMOTE_SCHEMES = ("gs", "s3", "az", "hf")  # etils.epath's URL prefixes


def window_means(window: list[dict]) -> dict[str, float]:
    """The mean of every metric over the steps of a logging window (clu.metrics.Average)."""
    return {k: float(clu_metrics.Average.from_model_output(np.asarray([m[k] for m in window])).compute())
            for k in window[0]}


def logged(workdir: str, name: str, until: int) -> tuple[tuple[int, float], ...]:
    """(step, value) of the scalar `name` in the workdir's metrics.jsonl at steps <= `until` (a resumed run's
    history; () without the file; a line a crash cut short is skipped)."""
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return ()
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return tuple((r["step"], r[name]) for r in records if name in r and r["step"] <= until)


def is_remote(path: str) -> bool:
    """Whether `path` is an epath URL (gs://...) rather than a local path."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and scheme in REMOTE_SCHEMES


class RewrittenFile:
    """An append-only file on storage without append: the whole content is written again at each flush."""

    def __init__(self, path: epath.Path):
        self._path = path
        self._data = bytearray(path.read_bytes() if path.exists() else b"")

    def write(self, data: bytes | str) -> None:
        self._data += data.encode() if isinstance(data, str) else data

    def flush(self) -> None:
        self._path.write_bytes(bytes(self._data))

    def close(self) -> None:
        self.flush()


class _RewrittenEventsFactory:
    """tensorboardX's writer factory for epath URLs: no local directory named after the scheme."""

    def directory_check(self, path: str) -> None:
        epath.Path(path).mkdir(parents=True, exist_ok=True)

    def open(self, path: str) -> RewrittenFile:
        return RewrittenFile(epath.Path(path))


for _scheme in REMOTE_SCHEMES:
    record_writer.register_writer_factory(_scheme, _RewrittenEventsFactory())


def open_append(path: epath.Path):
    """A text file to append lines to, local or remote."""
    return RewrittenFile(path) if is_remote(str(path)) else open(path, "a")


class Writer:
    def __init__(self, workdir: str):
        main = jax.process_index() == 0
        self._tb = SummaryWriter(str(epath.Path(workdir) / "tb")) if main else None
        self._jsonl = open_append(epath.Path(workdir) / "metrics.jsonl") if main else None

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
            self._line({"step": step, **{k: float(v) for k, v in values.items()}})

    def report(self, step: int, name: str, fields: dict[str, Any]) -> None:
        """A block of facts (the start-up report): a `name` object in metrics.jsonl and a TensorBoard text."""
        if self._tb is not None:
            self._tb.add_text(name, "  \n".join(f"{k}: {v}" for k, v in fields.items()), step)
            self._tb.flush()
            self._line({"step": step, name: fields})

    def images(self, step: int, name: str, images: np.ndarray) -> None:
        """uint8 NHWC batch -> one image per sample under `name`."""
        if self._tb is not None:
            self._tb.add_images(name, images, step, dataformats="NHWC")

    def _line(self, record: dict) -> None:
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
