"""dcgan: the paper's DCGAN (Radford et al. 2016), depth by resolution; no config section of
its own (it uses the shared ``nz``, ``ngf``, ``ndf``, ``lr_g``, ``lr_d``, ``betas``,
``real_label``). The networks are in :mod:`.model`."""

from __future__ import annotations

from fetalgan.models.registry import FamilySpec

# EMA off by default: the paper's study sampled the raw weights.
SPEC = FamilySpec(name="dcgan", module="fetalgan.models.dcgan.model", generators=("generator",))
