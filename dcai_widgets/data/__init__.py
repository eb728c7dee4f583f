"""Item sets by modality and loaders for common formats; the bundled demo is scikit-learn's digits."""
from .items import KINDS, ImageItems, ItemSet, TableItems, TextItems, VectorItems
from .loaders import ImagesResizedWarning, load_digits, load_image_folder, load_mnist, load_npz, load_table

__all__ = [
           "KINDS",
           "ImageItems",
           "ImagesResizedWarning",
           "ItemSet",
           "TableItems",
           "TextItems",
           "VectorItems",
           "load_digits",
           "load_image_folder",
           "load_mnist",
           "load_npz",
           "load_table",
]
