import pytest
import torch

from fetalgan.config import TrainConfig
from fetalgan.models import build
from fetalgan.models.dcgan.model import Discriminator, Generator


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_shapes_for_every_resolution(resolution):
    nets = build(TrainConfig(resolution=resolution, ngf=8, ndf=8, nz=16))
    g, d = nets["generator"], nets["discriminator"]
    x = g(torch.randn(3, 16, 1, 1))
    assert x.shape == (3, 1, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (3,)


def test_depth_grows_with_resolution():
    def n_convs(module):
        return sum(
            isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in module.modules()
        )

    assert n_convs(Generator(64)) == 5  # the PyTorch DCGAN example's generator at 64 px
    assert n_convs(Generator(128)) == 6 and n_convs(Discriminator(256)) == 7


def test_init_is_dcgan():
    torch.manual_seed(0)
    nets = build(TrainConfig(resolution=64))
    g, d = nets["generator"], nets["discriminator"]
    convs = torch.cat(
        [
            m.weight.detach().flatten()
            for m in g.modules()
            if isinstance(m, torch.nn.ConvTranspose2d)
        ]
    )
    bns = torch.cat(
        [m.weight.detach().flatten() for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    )
    assert abs(float(convs.mean())) < 1e-3 and float(convs.std()) == pytest.approx(0.02, rel=0.05)
    assert float(bns.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(bns.std()) == pytest.approx(0.02, rel=0.2)


def test_unknown_model_and_resolution():
    with pytest.raises(ValueError, match="unknown model 'stylegan'"):
        build(TrainConfig(model="stylegan"))
    with pytest.raises(ValueError, match="power of two"):
        Generator(96)
