"""evault.store: one storage node's slices, fingerprints and statements, crash-safe on disk.

``base`` holds the seam (:class:`SliceStore` and friends); ``disk`` the implementation on a
local file system with an SQLite index.
"""

from evault.store.base import (
    FsckReport,
    ListPage,
    ObjectRecord,
    SliceReader,
    SliceStore,
    SliceWriter,
)
from evault.store.disk import DiskSliceReader, DiskSliceStore, DiskSliceWriter

__all__ = [
    "DiskSliceReader",
    "DiskSliceStore",
    "DiskSliceWriter",
    "FsckReport",
    "ListPage",
    "ObjectRecord",
    "SliceReader",
    "SliceStore",
    "SliceWriter",
]
