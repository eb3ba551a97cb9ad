"""tunelens: fine-tune small open code models with LoRA and see what the fine-tune really did."""

__version__ = "0.1.0"
