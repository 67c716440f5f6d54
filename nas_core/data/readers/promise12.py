"""PROMISE12 prostate MRI: CaseNN.mhd + CaseNN_segmentation.mhd (MetaImage, read by SimpleITK)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nas_core.data.imageio import read_sitk_size
from nas_core.data.readers.base import Reader
from nas_core.data.spec import Case, DatasetSpec

_IMAGE = re.compile(r"^(?P<case>Case\d+)\.mhd$", re.IGNORECASE)
_GLOBS = ("Case*.mhd", "*/Case*.mhd")  # the challenge ships cases in one folder or in parts


class Promise12Reader(Reader):
    """One MR channel; labels background and prostate."""

    name = "promise12"
    expects = "CaseNN.mhd (+ CaseNN_segmentation.mhd) (PROMISE12)"

    def _images(self, root: Path) -> list[Path]:
        found = {p for g in _GLOBS for p in root.glob(g) if _IMAGE.match(p.name)}
        return sorted(found)

    def detect(self, root: Path) -> bool:
        return bool(self._images(root))

    def scan(self, root: Path, **options: Any) -> DatasetSpec:
        cases = []
        for image in self._images(root):
            match = _IMAGE.match(image.name)
            assert match is not None  # _images keeps only names that match
            cid = match["case"]
            label = image.with_name(f"{cid}_segmentation.mhd")
            cases.append(Case(cid, (image,), label if label.is_file() else None))
        size = read_sitk_size(cases[0].image_paths[0]) if cases else ()
        return DatasetSpec(
            root=root,
            format=self.name,
            name=root.name,
            modality="MR",
            channel_names=("T2",),
            labels={0: "background", 1: "prostate"},
            cases=tuple(cases),
            synthetic=False,
            is_3d=len(size) >= 3 and size[2] > 1,
        )
