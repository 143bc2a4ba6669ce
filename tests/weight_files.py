"""Shared check of the weights loaders (`load_vae`, `load_dinov2`): a bad file fails with one line naming the fix."""
import numpy as np
import pytest

from scm_jax.models import weights


def assert_bad_files_refused(load, tmp_path, converter: str) -> None:
    """A missing file names `converter`; a corrupt one and one of another network (Inception names) say so."""
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    weights.save_arrays(str(tmp_path / "other.npz"), {"fc.kernel": np.zeros((2, 2))})
    cases = (("missing.npz", FileNotFoundError, converter), ("corrupt.npz", ValueError, "not a readable weights"),
             ("other.npz", ValueError, "does not fit the network: missing"))
    for name, error, match in cases:
        with pytest.raises(error, match=match) as raised:
            load(str(tmp_path / name))
        assert "\n" not in str(raised.value)
