"""Using a trained classifier: load it from any source (:func:`load_classifier`) and export it
(``python -m harness.export SOURCE OUT --format safetensors|hf|onnx|pt2``)."""

from harness.export.model_io import Preprocessing, load_classifier

__all__ = ["Preprocessing", "load_classifier"]
