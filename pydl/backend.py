"""Process-wide settings shared by the layers, as keras.backend / keras.config.

    pydl.set_image_data_format("channels_last")   # image layers built from now on read (N, H, W, C)
    pydl.image_data_format()                      # -> "channels_last"

The image data format is the default of every image layer's `data_format` argument (Conv2D,
pooling, UpSampling2D, ...) and of BatchNormalization's `axis`. A layer resolves it when it is
created and records the result in its config, so changing the default later does not change
layers that exist or models that are saved. pydl's default is "channels_first" (NCHW).
"""
from __future__ import annotations

DATA_FORMATS = ("channels_first", "channels_last")

_image_data_format = "channels_first"


def _check_format(value, name: str, who: str) -> str:
    if not isinstance(value, str) or value.lower() not in DATA_FORMATS:
        raise ValueError(f"[{who}] {name} must be 'channels_first' (N, C, H, W) or 'channels_last' (N, H, W, C), "
                         f"got {value!r}")
    return value.lower()


def image_data_format() -> str:
    """The default data format of image layers: "channels_first" (NCHW) or "channels_last" (NHWC)."""
    return _image_data_format


def set_image_data_format(data_format) -> str:
    """Set the default data format of image layers created from now on; returns the previous one."""
    global _image_data_format
    fmt = _check_format(data_format, "data_format", "set_image_data_format")
    previous, _image_data_format = _image_data_format, fmt
    return previous


def normalize_data_format(data_format, who: str) -> str:
    """A layer's data_format argument resolved: None is the current image_data_format()."""
    if data_format is None:
        return _image_data_format
    return _check_format(data_format, "data_format", who)


__all__ = ["image_data_format", "set_image_data_format", "normalize_data_format", "DATA_FORMATS"]
