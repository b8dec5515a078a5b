"""The local multi-node topology for development and tests, and its ``livecommerce cluster``
command: processes, sockets and HAProxy, not the product.

* :mod:`livecommerce.devcluster.topology`: starts and stops a Redis Cluster, a Kafka-protocol
  broker, PostgreSQL schema, N gateways, the workers and HAProxy on one machine
  (``livecommerce cluster up|down|status``), and the Redis Clusters of the test suite.
* :mod:`livecommerce.devcluster.cli`: the ``cluster`` subcommand.

Nothing of the library, the gateway or the workers imports it; the CLI loads
:mod:`livecommerce.devcluster.cli` by name.
"""
