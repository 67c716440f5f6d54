"""A torch Dataset of 2D slices from whole cases, decoded once and held in one tensor."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from nas_core.data.cache import cache_key, load_cached, save_cached
from nas_core.data.errors import DatasetError
from nas_core.data.frame import Frame, Placement
from nas_core.data.preprocess import Normalisation, prepare_case
from nas_core.data.readers import get_reader
from nas_core.data.spec import Case, DatasetSpec

log = logging.getLogger(__name__)

AugmentFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


class SliceDataset(Dataset):
    """Slices of the given cases, normalised and placed in the working frame (aspect ratio kept).

    Args:
        spec: the dataset, from ``open_dataset``.
        case_ids: cases to include (e.g. one side of ``split_cases``); every one needs a label.
        frame: the working frame [H, W] (and spacing) every slice is placed in; an int S
            is an S x S frame without spacing (each slice scaled to fit).
        normalisation: intensity scheme (``normalisation_for(spec.modality)``).
        augment: optional callable (image [C,S,S], label [S,S], generator) -> same shapes.
        cache_dir: optional folder for prepared slices; a later dataset with the same
            files and settings reads them instead of decoding.
        seed: seeds augmentation; item i of epoch e always gets the same draw
            (call ``set_epoch`` to vary it), whatever the DataLoader workers do.
        native: also keep each case's label map at its own size (``native_labels``), so
            evaluation scores the scan as it is rather than the resized slices.

    ``placements[c]`` is where case c's slices sit in the frame (to map predictions back).

    ``__getitem__(i)`` returns (image FloatTensor [C,H,W], label LongTensor [H,W],
    case_index int). The image is a view into the shared store: do not edit it in place.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        case_ids: Sequence[str],
        frame: Frame | int,
        normalisation: Normalisation,
        augment: AugmentFn | None = None,
        cache_dir: Path | None = None,
        seed: int = 0,
        native: bool = False,
    ) -> None:
        if not case_ids:
            raise DatasetError("SliceDataset needs at least one case id")
        self.spec = spec
        self.case_ids = list(case_ids)
        self.frame = frame if isinstance(frame, Frame) else Frame((frame, frame))
        self.placements: list[Placement] = []
        self.normalisation = normalisation
        self.augment = augment
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.seed = seed
        self.epoch = 0
        self.decode_count = 0
        self.native = native
        # Per case, the reference labels [D, H, W] at the case's own in-plane size (native=True),
        # and its voxel size along those axes in mm (None where the format has none).
        self.native_labels: list[torch.Tensor] | None = [] if native else None
        self.native_spacing: list[list[float] | None] | None = [] if native else None
        start = time.perf_counter()
        parts = [self._prepare(spec.case(cid)) for cid in self.case_ids]
        self._store(parts)
        log.info(
            "SliceDataset: %d cases, %d slices in a %s frame in %.2fs (%d files decoded)",
            len(self.case_ids),
            len(self),
            self.frame,
            time.perf_counter() - start,
            self.decode_count,
        )

    def _prepare(self, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
        if case.label_path is None:
            raise DatasetError(f"case {case.case_id!r} has no label; training needs one for every case")
        key = None
        if self.cache_dir is not None:
            key = cache_key(case, self.spec.format, self.frame.to_dict(), self.normalisation)
            cached = load_cached(self.cache_dir, case.case_id, key)
            if cached is not None and cached.labels is not None and cached.native_labels is not None:
                self._keep_native(cached.native_labels, cached.spacing)
                spacing = cached.spacing
                in_plane = None if spacing is None or len(spacing) < 2 else (spacing[-2], spacing[-1])
                height, width = cached.native_labels.shape[-2:]
                self.placements.append(self.frame.place((height, width), in_plane))
                return cached.images, cached.labels
        loaded = get_reader(self.spec.format).load(self.spec, case)
        self.decode_count += len(case.image_paths) + 1
        images, labels, where = prepare_case(loaded, self.frame, self.normalisation)
        self.placements.append(where)
        assert labels is not None  # a case without a label was refused above
        labels = labels.to(self._label_dtype())
        native = torch.as_tensor(loaded.label).to(self._label_dtype())
        spacing = loaded.geometry.get("spacing")
        spacing = None if spacing is None else [float(s) for s in reversed(spacing)][-native.dim():]  # (x,y,z)->(z,y,x)
        if key is not None and self.cache_dir is not None:
            save_cached(self.cache_dir, case.case_id, key, images, labels, native, spacing)
        self._keep_native(native, spacing)
        return images, labels

    def _keep_native(self, labels: torch.Tensor, spacing: list[float] | None) -> None:
        if self.native_labels is not None and self.native_spacing is not None:
            self.native_labels.append(labels)
            self.native_spacing.append(spacing if spacing is not None and len(spacing) == labels.dim() else None)

    def _label_dtype(self) -> torch.dtype:
        return torch.uint8 if max(self.spec.labels, default=0) < 256 else torch.int64

    def _store(self, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy every case into one preallocated tensor; keep per-case slice ranges."""
        channels = {p[0].shape[1] for p in parts}
        if len(channels) != 1:
            raise DatasetError(
                f"cases have different channel counts {sorted(channels)}; "
                "all cases of a dataset need the same channels"
            )
        total = sum(p[0].shape[0] for p in parts)
        h, w = self.frame.size
        self.images = torch.empty((total, channels.pop(), h, w), dtype=torch.float32)
        self.labels = torch.empty((total, h, w), dtype=self._label_dtype())
        self.case_index = torch.empty(total, dtype=torch.int64)
        self._ranges: list[range] = []
        at = 0
        for ci, (images, labels) in enumerate(parts):
            n = images.shape[0]
            self.images[at : at + n] = images
            self.labels[at : at + n] = labels
            self.case_index[at : at + n] = ci
            self._ranges.append(range(at, at + n))
            at += n

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (deterministically) for a new epoch."""
        self.epoch = epoch

    def foreground_slices(self) -> list[int]:
        """Indices of slices whose label shows any foreground class."""
        return torch.nonzero(self.labels.flatten(1).amax(1) > 0).flatten().tolist()

    def slices_of(self, case_index: int) -> list[int]:
        """Dataset indices of every slice of one case, in order (for per-volume Dice)."""
        return list(self._ranges[case_index])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, label = self.images[i], self.labels[i].long()
        if self.augment is not None:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) % 2**63)
            image, label = self.augment(image, label, g)
        return image, label, int(self.case_index[i])
