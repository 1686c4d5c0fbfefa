"""clipcrawl: web-scale image-text datasets for contrastive pretraining."""

__version__ = "0.1.0"
