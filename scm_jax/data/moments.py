"""Mean and covariance of rows streamed in batches (float64), for sets larger than memory: the per-channel scale
of a latent data set and the reference statistics of a feature network."""
import numpy as np


class Moments:
    """Running mean and (unbiased) covariance of D-dimensional rows. Sums are taken about the first batch's mean,
    so a large mean does not cancel the variance's digits."""

    def __init__(self):
        self.count, self._shift, self._sum, self._outer = 0, None, None, None

    def add(self, rows: np.ndarray) -> "Moments":
        """Adds rows [N, D]; returns self."""
        rows = np.asarray(rows, np.float64)
        if rows.ndim != 2 or (self._shift is not None and rows.shape[1] != self._shift.shape[0]):
            raise ValueError(f"expected rows [N, D] of one D, got shape {rows.shape}")
        if self._shift is None:
            self._shift = rows.mean(axis=0)
            self._sum, self._outer = np.zeros_like(self._shift), np.zeros((rows.shape[1],) * 2)
        centred = rows - self._shift
        self.count += len(rows)
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        return self

    @property
    def mean(self) -> np.ndarray:
        return self._shift + self._sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"need at least 2 rows for a covariance, got {self.count}")
        d = self._sum / self.count
        return (self._outer - self.count * np.outer(d, d)) / (self.count - 1)
