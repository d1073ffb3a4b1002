"""clipfit: fine-tune CLIP the ClipFit way (EMNLP 2024) and explain what the fine-tuning did."""

__version__ = "0.1.0"
