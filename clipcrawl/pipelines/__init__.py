"""Passes over shards: the Stage contract, engines, writers, stats, report and CLI wiring."""
