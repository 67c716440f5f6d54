"""The names of the dataset formats, in detection order, without their decoders.

Importing this module loads no image library (SimpleITK, pydicom, nibabel, PIL), so the
web tier can offer the names in its schema. The readers themselves are
`nas_core.data.readers.REGISTRY`; a test keeps the two equal, order included.
"""

FORMATS: tuple[str, ...] = ("nnunet", "promise12", "chaos_ct", "folder2d")
