"""Data: sources that build a :class:`DataBundle`, and the device-resident loader.

Every source is a ``_target_`` class with ``load(cache_dir: pathlib.Path) -> DataBundle``.
"""

from robustdiag.data.bundle import DataBundle, ImageData, channel_stats, resize_images
from robustdiag.data.digits import Digits
from robustdiag.data.hf import HFImageSource, HubUnreachableError
from robustdiag.data.loader import Augment, DeviceLoader
from robustdiag.data.subset import balanced_subset
from robustdiag.data.synthetic import Synthetic

__all__ = [
    "Augment",
    "DataBundle",
    "DeviceLoader",
    "Digits",
    "HFImageSource",
    "HubUnreachableError",
    "ImageData",
    "Synthetic",
    "balanced_subset",
    "channel_stats",
    "resize_images",
]
