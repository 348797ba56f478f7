"""Export a trained classifier: ``python -m harness.export SOURCE OUT [--format F]``.

``SOURCE`` is a run folder (its best checkpoint), a checkpoint folder or pointer of any strategy,
an exported directory, or a Hugging Face V-JEPA 2 classifier directory. Formats:

  safetensors  (default) weights + model.json: harness.load_classifier(OUT) rebuilds the model
  hf           a transformers V-JEPA 2 video-classification directory (V-JEPA 2-shaped models)
  onnx         model.onnx: clips [B, views, 3, T, S, S] -> logits [B, classes], dynamic batch
  pt2          model.pt2 (torch.export), same input and output

Every format writes model.json: class names, preprocessing, the config, where it came from, and
the size and SHA-256 of the export's other files (loading refuses a file that differs). OUT is
written whole or not at all: into a temporary sibling folder renamed into place at the end. OUT
may be new, an empty folder or an earlier export (replaced); any other file or folder is refused.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from harness.core.errors import entry_point
from harness.core.options import source_and_out_parser

if TYPE_CHECKING:
    pass


#: the export formats (:data:`harness.export.formats.EXPORTERS` registers each; a test checks both
#: agree), named here so that ``--help`` does not import torch
FORMATS = ("hf", "onnx", "pt2", "safetensors")


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = source_and_out_parser("harness-export", __doc__, "source",
                                   "run folder, checkpoint, exported or Hugging Face directory")  # fmt: skip
    parser.add_argument("--format", default="safetensors", choices=FORMATS, help="default: safetensors")
    args = parser.parse_args(argv)
    from harness.export.writing import export

    written = export(args.source, args.out, args.format, args.weights)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
