"""Meshes with the slow "dcn" axis and rule-set selection errors, on 8 fake CPU devices (and TPU v5p chips
described by libtpu, where it is installed)."""
import importlib.util

import jax
import pytest

from configs import imagenet512
from scm_jax.parallel.mesh import AXES, make_mesh, mesh_from_config, mesh_shape
from scm_jax.parallel.sharding import rules_for


def test_mesh_from_config_simulates_dcn_slices_as_device_blocks():
    config = imagenet512.get_config("scd,smoke")
    config.mesh.update(dcn=2, data=1, fsdp=-1)
    mesh = mesh_from_config(config.mesh)
    assert mesh.axis_names == AXES and dict(mesh.shape) == {"dcn": 2, "data": 1, "fsdp": 4, "tensor": 1}
    assert [d.id for d in mesh.devices[1].flat] == [d.id for d in jax.devices()[4:]]


@pytest.mark.parametrize("sizes, dcn, message", [
    ((-1, 3, 1), 1, "cannot fill 8 devices"),
    ((2, 2, 1), 1, "uses 4 devices"),
    ((-1, 1, 1), 3, "mesh.dcn=3 must be a positive divisor"),
    ((-1, -1, 1), 1, "at most one -1"),
])
def test_mesh_shape_errors_name_the_fix(sizes, dcn, message):
    with pytest.raises(ValueError, match=message):
        mesh_shape(*sizes, 8, dcn)


def test_rule_set_selection_errors():
    assert rules_for("fsdp_tp", make_mesh(1, 4, 2))
    with pytest.raises(ValueError, match="unknown; use one of"):
        rules_for("zero3", make_mesh(1, 8, 1))
    with pytest.raises(ValueError, match="never splits over mesh axes \\['tensor'\\].*mesh.rules='fsdp_tp'"):
        rules_for("fsdp", make_mesh(1, 4, 2))
    with pytest.raises(ValueError, match="never splits over mesh axes \\['tensor'\\]"):
        rules_for("dp", make_mesh(4, 1, 2))


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")
def test_multi_slice_tpu_topology_gets_a_hybrid_mesh():
    from scm_jax.cli.plan import plan_devices
    devices = plan_devices("v5p:2x2x1", num_slices=2)
    mesh = make_mesh(1, -1, 1, devices, dcn=2)
    assert [{d.slice_index for d in s.flat} for s in mesh.devices] == [{0}, {1}]
    with pytest.raises(ValueError, match="set mesh.dcn=2"):
        make_mesh(1, -1, 1, devices)
