"""Checks an image batch handed to a feature extractor and says how its pixels map to [-1, 1].

Accepted: NHWC arrays of uint8 in [0, 255], or floats in [-1, 1] or in [0, 255]. Floats that all lie in [0, 1]
are refused as ambiguous (a [0, 1] batch read as [-1, 1] would silently shift every feature).
Sample files (`require_uint8`) are stricter: uint8 only, the error naming the conversion that fixes them.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PixelRange:
    """Maps raw pixel values to [-1, 1] as `x * scale + offset`."""

    scale: float
    offset: float


FROM_0_255 = PixelRange(scale=1 / 127.5, offset=-1.0)
FROM_SIGNED_UNIT = PixelRange(scale=1.0, offset=0.0)


def check_images(images: np.ndarray) -> PixelRange:
    """Validates rank, channels, dtype and value range of an NHWC batch; returns its pixel range."""
    if images.ndim != 4:
        raise ValueError(
            f"images must be NHWC (rank 4), got shape {images.shape}: add a batch axis (images[None]) for one "
            "image, or a channel axis (images[..., None]) for grayscale")
    if images.shape[-1] not in (1, 3):
        raise ValueError(
            f"images must have 1 or 3 channels in the last axis (NHWC), got shape {images.shape}; "
            "convert NCHW with images.transpose(0, 2, 3, 1)")
    if images.dtype == np.uint8:
        return FROM_0_255
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("images contain NaN or inf")
    if -1.0 <= lo < 0.0 and hi <= 1.0:
        return FROM_SIGNED_UNIT
    if lo >= 0.0 and 1.0 < hi <= 255.0:
        return FROM_0_255
    raise ValueError(
        f"float images must lie in [-1, 1] or [0, 255], got values in [{lo:.4g}, {hi:.4g}]. Clip samples to "
        "[-1, 1]; floats all in [0, 1] are ambiguous: pass uint8, or 2 * x - 1")



def require_uint8(images: np.ndarray, source: str) -> np.ndarray:
    """Sample files (ADM .npz, PNG folders) hold uint8 [0, 255]; anything else is refused with its conversion."""
    if images.dtype == np.uint8:
        return images
    numeric = np.issubdtype(images.dtype, np.number) and images.size > 0
    lo, hi = (float(images.min()), float(images.max())) if numeric else (np.nan, np.nan)
    if -1.0 <= lo and hi <= 1.0:
        fix = ("convert [-1, 1] samples with scm_jax.samplers.images.to_uint8(x), [0, 1] ones with "
               "np.rint(255 * x).astype(np.uint8)")
    elif 0.0 <= lo and hi <= 255.0:
        fix = "convert them with np.rint(x).astype(np.uint8)"
    else:
        fix = ("the values lie outside [-1, 1] and [0, 255]: clip the samples to [-1, 1], then convert with "
               "scm_jax.samplers.images.to_uint8(x)")
    raise ValueError(f"{source} holds {images.dtype} images with values in [{lo:.4g}, {hi:.4g}], not uint8 "
                     f"pixels in [0, 255]; {fix}")
