"""The Flax FID Inception against `pytorch_fid.inception` built with random weights (no download).

Needs the `[torch-check]` extra (torch, torchvision, pytorch-fid); skipped without it.
"""
import numpy as np
import pytest

from scm_jax.eval import convert_inception, extractor, inception
from tests.torch_check import import_reference


def _random_fid_inception(fid, monkeypatch):
    """pytorch_fid's own InceptionV3 (pool3 block) and the Inception3 it wraps, with random weights.

    Batch-norm scales, shifts and running statistics are random too: the statistics are those of one batch of
    noise, so activations stay O(1) through the 94 layers.
    """
    import torch
    import torchvision

    monkeypatch.setattr(fid, "load_state_dict_from_url", lambda *args, **kwargs: {})
    monkeypatch.setattr(torchvision.models.inception.Inception3, "load_state_dict", lambda *args, **kwargs: None)
    built = []
    make = fid.fid_inception_v3
    monkeypatch.setattr(fid, "fid_inception_v3", lambda: built.append(make()) or built[-1])
    torch.manual_seed(0)
    pool3 = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    net = built[0]
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
        torch.nn.init.uniform_(bn.bias, -0.2, 0.2)
        bn.momentum = 1.0  # running statistics := those of the next batch
    pool3.train()
    with torch.no_grad():
        pool3(torch.rand(2, 3, 299, 299))
    pool3.eval()
    return pool3, net


def test_resize_matches_torch_bilinear_up_and_down():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    for size in (32, 320):
        x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
        want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear",
                             align_corners=False).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(np.asarray(inception.resize_bilinear(x)), want, atol=1e-5)


def test_flax_inception_matches_pytorch_fid(tmp_path, monkeypatch):
    fid = import_reference("pytorch_fid.inception")
    import torch

    torch.set_num_threads(2)
    pool3, net = _random_fid_inception(fid, monkeypatch)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # pytorch_fid's ToTensor range
        want_features = pool3(x)[0].flatten(1)
        want_logits = net.fc(want_features).numpy()
    want_features = want_features.numpy()

    # The converter's command line, on the torch state dict as pytorch_fid's weights file holds it.
    pth, npz = str(tmp_path / "pt_inception.pth"), str(tmp_path / "inception_fid.npz")
    torch.save(net.state_dict(), pth)
    convert_inception.main([f"--torch_weights={pth}", f"--out={npz}"])
    features, logits = extractor.get_extractor("inception", weights_path=npz).features_and_logits(images)

    assert features.shape == (2, inception.FEATURE_DIM) and logits.shape == (2, inception.NUM_CLASSES)
    assert np.abs(features - want_features).max() <= 1e-4 * np.abs(want_features).max()
    assert np.abs(logits - want_logits).max() <= 1e-4 * np.abs(want_logits).max()


def test_converter_refuses_foreign_state_dicts():
    with pytest.raises(ValueError, match="unexpected entry 'layer1.0.conv1.weight'"):
        convert_inception.convert_state_dict({"layer1.0.conv1.weight": np.zeros((1, 1, 1, 1))})
