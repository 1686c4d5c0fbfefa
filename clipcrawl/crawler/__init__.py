"""Collect: the polite async crawler, HTML extraction and Common Crawl readers."""
