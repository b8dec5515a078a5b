"""Long-running consumers of the durable log; :mod:`workers.runner` is the shared loop."""
