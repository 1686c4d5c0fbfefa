"""The passes: each one is a :class:`~clipcrawl.pipelines.shardloop.ShardPass` run by
:func:`~clipcrawl.pipelines.shardloop.run_pass` (download, score, dedup, reshard, and the run's
fetch-and-score / dedup-and-write over planned shards)."""
