"""Image and sample-file I/O: grids for people, ADM ``.npz`` sample files for tools."""

from genzoo.io.images import load_image, save_grid, save_image, to_uint8
from genzoo.io.npz import NpzWriter, read_npz_images

__all__ = ["NpzWriter", "load_image", "read_npz_images", "save_grid", "save_image", "to_uint8"]
