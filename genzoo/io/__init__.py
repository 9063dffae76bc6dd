"""Image and sample-file I/O: grids for people, ADM ``.npz`` sample files and PNG folders for tools."""

from genzoo.io.atomic import (
    atomic_folder,
    atomic_output,
    check_output_file,
    check_output_folder,
)
from genzoo.io.folder import PngFolderWriter, open_sample_writer
from genzoo.io.images import check_image_name, from_uint8, load_image, save_grid, save_image, to_uint8
from genzoo.io.npz import NpzWriter, read_npz_images

__all__ = ["NpzWriter", "PngFolderWriter", "atomic_folder", "atomic_output", "check_image_name",
           "check_output_file", "check_output_folder", "from_uint8", "load_image", "open_sample_writer",
           "read_npz_images", "save_grid", "save_image", "to_uint8"]
