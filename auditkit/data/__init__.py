"""Data loading: one module per ``--data`` format, each a built-in plugin answering
``auditkit_load_data``; :func:`auditkit.data.loaders.load_data` is the Python entry point."""

# The built-in data formats, each owning the specs of its form (no two own the same spec).
DATA_FORMATS = (
    "auditkit.data.synthetic_spec",
    "auditkit.data.torchvision_datasets",
    "auditkit.data.image_folder",
    "auditkit.data.coco",
    "auditkit.data.factory",
)
