"""Image and sample-file I/O: grids for people, ADM ``.npz`` sample files and PNG folders for tools."""

from genzoo.io.folder import PngFolderWriter, open_sample_writer
from genzoo.io.images import load_image, save_grid, save_image, to_uint8
from genzoo.io.npz import NpzWriter, read_npz_images

__all__ = ["NpzWriter", "PngFolderWriter", "load_image", "open_sample_writer", "read_npz_images", "save_grid",
           "save_image", "to_uint8"]
