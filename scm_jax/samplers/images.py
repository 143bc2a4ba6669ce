"""Samples in [-1, 1] -> uint8 NHWC (the ADM evaluator's format) -> a PNG grid."""
import math

import numpy as np
from PIL import Image


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8 [0, 255] with the usual (x + 1) * 127.5 rounding and clipping."""
    return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 [rows * H, columns * W, C] image (missing cells black)."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * columns, h, w, c), np.uint8)
    canvas[:n] = images
    return canvas.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, columns * w, c)


def save_grid(path: str, images: np.ndarray) -> None:
    g = grid(images)
    Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g).save(path)
