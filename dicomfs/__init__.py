"""dicomfs: a DICOM receiver, an index that never drifts from the disk, and a FUSE mount."""

__version__ = "0.1.0"
