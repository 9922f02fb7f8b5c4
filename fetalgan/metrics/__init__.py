"""Image-quality metrics: pure functions over arrays/tensors, keyword-only options.

- ``inception``: the FID network (pytorch-fid's FIDInceptionV3) with offline weights lookup.
- ``frechet``: Fréchet distance (FID) and KID between feature sets.
- ``image``: PSNR, normalised mutual information, SSIM (unpaired sets) and LBPv.
- ``stats``: real-image statistics cached on disk, and ``TrainingMetrics`` for the trainer.

Submodules are imported on use, so importing this package costs nothing (no torch).
"""
