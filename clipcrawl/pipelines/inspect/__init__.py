"""Inspect and publish a dataset: a kNN index over its embeddings (index.py), text/image search
(search.py), a local browse page (browse.py) and a Hugging Face dataset card (card.py)."""
