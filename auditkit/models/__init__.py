"""Model loading: one module per ``--model`` format, each a built-in plugin answering
``auditkit_load_model``; :func:`auditkit.models.loaders.load_model` is the Python entry point."""

# The built-in model formats, each owning the specs of its form (no two own the same spec).
MODEL_FORMATS = (
    "auditkit.models.torchvision_names",
    "auditkit.models.timm_names",
    "auditkit.models.factory",
    "auditkit.models.exported",
    "auditkit.models.torchscript",
    "auditkit.models.pickled",
    "auditkit.models.onnx_file",
    "auditkit.models.http_endpoint",
)
