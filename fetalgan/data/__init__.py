"""Training data: real datasets (HC18, FETAL_PLANES_DB, any folder), the procedural phantom,
a decoded-tensor cache, and batched augmentation. Heavy imports (torch) stay inside functions.
"""

from fetalgan.data.augment import augment_batch
from fetalgan.data.datasets import (
    ImageSet,
    dataset_key,
    detect_kind,
    list_files,
    list_hc18,
    list_planes,
    list_real_files,
    load_folder,
    load_reference_images,
    load_training_images,
    real_data,
)
from fetalgan.data.phantom import make_phantom, write_phantom_dir

__all__ = [
    "ImageSet",
    "augment_batch",
    "dataset_key",
    "detect_kind",
    "list_files",
    "list_hc18",
    "list_planes",
    "list_real_files",
    "load_folder",
    "load_reference_images",
    "load_training_images",
    "make_phantom",
    "real_data",
    "write_phantom_dir",
]
