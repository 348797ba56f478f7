"""Using a trained classifier: load it from any source (:func:`load_classifier`) and export it
(``python -m harness.export SOURCE OUT --format safetensors|hf|onnx|pt2``)."""

__all__ = ["Preprocessing", "load_classifier"]


def __getattr__(name: str):
    """``Preprocessing`` / ``load_classifier`` on first use (``--help`` does not import torch)."""
    if name in __all__:
        from harness.export import model_io

        return getattr(model_io, name)
    raise AttributeError(f"module 'harness.export' has no attribute {name!r}")
