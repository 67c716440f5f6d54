"""Medical image datasets for Thrifty NAS: read, verify, slice, cache, augment and write back.

A plain numpy/PyTorch library (no service imports). ``open_dataset`` recognises
nnU-Net v2 / MSD, PROMISE12, CHAOS CT and 2D image/mask folders;
``verify_dataset`` reports every bad file; ``SliceDataset`` serves normalised 2D
slices for training; ``write_prediction`` writes masks in the input's format.
"""

from nas_core.data.augment import Augment
from nas_core.data.checks import Issue
from nas_core.data.dataset import SliceDataset
from nas_core.data.errors import DatasetError
from nas_core.data.frame import Frame, Placement
from nas_core.data.phantom import make_phantom_dataset
from nas_core.data.preprocess import (
    ABDOMEN_WINDOW,
    Normalisation,
    normalisation_for,
    normalise,
    prepare_case,
    resize_labels,
)
from nas_core.data.readers import REGISTRY, detect_format, get_reader, open_dataset
from nas_core.data.spec import Case, DatasetSpec, LoadedCase
from nas_core.data.splits import halve, split_cases
from nas_core.data.verify import VerificationReport, require_valid, verify_dataset
from nas_core.data.write import load_image_for_inference, write_prediction

__all__ = [
    "ABDOMEN_WINDOW",
    "REGISTRY",
    "Augment",
    "Case",
    "DatasetError",
    "DatasetSpec",
    "Frame",
    "Issue",
    "LoadedCase",
    "Normalisation",
    "Placement",
    "SliceDataset",
    "VerificationReport",
    "detect_format",
    "get_reader",
    "halve",
    "load_image_for_inference",
    "make_phantom_dataset",
    "normalisation_for",
    "normalise",
    "open_dataset",
    "prepare_case",
    "require_valid",
    "resize_labels",
    "split_cases",
    "verify_dataset",
    "write_prediction",
]
