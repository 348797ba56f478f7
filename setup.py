"""Install harness: ``pip install -e .`` (add ``[test]`` for the test suite)."""

from setuptools import find_packages, setup

setup(
    name="harness",
    version="0.1.0",
    description="Fine-tune ViT video encoders (V-JEPA 2 style) into video classifiers, laptop to SLURM cluster.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["harness", "harness.*"]),
    install_requires=[
        # The range the code is tested with (lowest and highest: tests/test_install.py, README
        # "Installing into an existing environment"); constraints.txt pins the exact set CI uses.
        "torch>=2.9,<2.15",
        "torchvision>=0.24,<0.30",
        "numpy>=1.26",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "safetensors>=0.4",
        "braceexpand>=0.1.7",  # shard URL patterns, as webdataset expands them
        "pillow>=10.0",  # confusion-matrix PNG (torchvision depends on it too)
        "matplotlib>=3.7",  # harness.report.cli curves
        "wandb>=0.17",  # optional at run time (logging.wandb.enabled); offline without an account
        "tensorboard>=2.15",  # optional at run time (logging.tensorboard); torch's SummaryWriter writes to it
        "av>=12.0",  # PyAV: bundles FFmpeg (decoding, and libx264 encoding for the demo data)
        "torchcodec>=0.8",  # built per torch release (0.8 <-> torch 2.9); needs the system FFmpeg libraries
    ],
    extras_require={
        # huggingface_hub: DeepSpeed's zero_to_fp32.py (copied into its checkpoints) imports it.
        "deepspeed": ["deepspeed>=0.17", "huggingface_hub>=0.20"],
        # decord: no wheels for Linux aarch64 (GH200) or Apple silicon; data.decoder=auto picks among
        # the decoders installed (torchcodec, decord, PyAV)
        "decord": ["decord>=0.6.0"],
        # harness.export --format onnx (torch's exporter needs onnxscript; ONNX Runtime runs it)
        "onnx": ["onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.20"],
        # harness.export --format hf (transformers' VJEPA2ForVideoClassification: from 4.53)
        "hf": ["transformers>=4.53"],
        "test": [
            "pytest>=8.0",
            "hypothesis>=6.100",
            "pytest-timeout>=2.3",
            "ruff>=0.6",
            "packaging>=23",  # tests/test_install.py reads setup.py's requirement ranges
            "deepspeed>=0.17",
            "huggingface_hub>=0.20",
            "decord>=0.6.0",  # every decoder is tested where it installs
            "webdataset>=0.2",  # only to prove our shards read with the reference reader
            # V-JEPA 2 compatibility is tested against the foreign code itself:
            "transformers>=4.53",  # VJEPA2Model / VJEPA2ForVideoClassification (save_pretrained)
            "cc-vjepa2==0.0.3",  # V-JEPA 2's src (models, VideoDataset) as a package
            "timm>=0.9",  # imported by V-JEPA 2's modules
            "pandas>=2.0",  # imported by V-JEPA 2's VideoDataset
            "onnx>=1.17",  # the onnx export, run back with ONNX Runtime
            "onnxscript>=0.3",
            "onnxruntime>=1.20",
        ],
    },
    entry_points={
        "console_scripts": [
            "harness-train=harness.train:main",
            "harness-evaluate=harness.evaluate.cli:main",
            "harness-consolidate=harness.consolidate.cli:main",
            "harness-prepare=harness.prepare.cli:main",
            "harness-report=harness.report.cli:main",
            "harness-plan=harness.plan.cli:main",
            "harness-predict=harness.predict.cli:main",
            "harness-embed=harness.embed.cli:main",
            "harness-export=harness.export.cli:main",
            "harness-datasets=harness.datasets.cli:main",
        ],
    },
)
