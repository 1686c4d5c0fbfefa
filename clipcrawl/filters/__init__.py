"""Filter: image decode/resize, caption rules, CLIP scoring and deduplication."""
