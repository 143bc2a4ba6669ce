"""Shared check of the weights loaders (`load_vae`, `load_dinov2`): a bad file fails with one line naming the fix."""
import numpy as np
import pytest

from scm_jax.models import weights


def assert_bad_files_refused(load, tmp_path, converter: str) -> None:
    """A missing file names `converter`; a corrupt one, one of another network (Inception names) and one of
    another configurable network (a config this loader does not take) say so, and name `converter`."""
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    weights.save_arrays(str(tmp_path / "other.npz"), {"fc.kernel": np.zeros((2, 2))})
    weights.save_arrays(str(tmp_path / "configured.npz"), {"fc.kernel": np.zeros((2, 2))}, {"depth_of_other": 2})
    cases = (("missing.npz", FileNotFoundError, converter), ("corrupt.npz", ValueError, "not a readable weights"),
             ("other.npz", ValueError, r"weights of another network \(.* does not fit the network: missing"),
             ("configured.npz", ValueError, r"weights of another network \(.*depth_of_other"))
    for name, error, match in cases:
        with pytest.raises(error, match=match) as raised:
            load(str(tmp_path / name))
        assert "\n" not in str(raised.value) and converter in str(raised.value)
