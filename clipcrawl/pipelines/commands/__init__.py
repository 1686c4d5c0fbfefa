"""CLI commands, one module each: ``ORDER`` and ``register(app)``. Discovered by clipcrawl.cli."""
