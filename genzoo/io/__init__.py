"""Image and sample-file I/O: grids for people, ADM ``.npz`` sample files for tools."""

from genzoo.io.atomic import (
    atomic_folder,
    atomic_output,
    check_output_file,
    check_output_folder,
)
from genzoo.io.images import check_image_name, load_image, save_grid, save_image, to_uint8
from genzoo.io.npz import NpzWriter, read_npz_images

__all__ = ["NpzWriter", "atomic_folder", "atomic_output", "check_image_name", "check_output_file",
           "check_output_folder", "load_image", "read_npz_images", "save_grid", "save_image", "to_uint8"]
