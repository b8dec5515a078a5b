"""Prometheus metrics of one gateway (a registry per gateway, so tests may run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds ...
        self.connections = Gauge("lc_connections", "Open WebSocket connections", registry=r)
        self.rooms = Gauge("lc_rooms_local", "Rooms with local viewers on this node", registry=r)
        self.frames_in = Counter("lc_frames_in_total", "Client frames received", registry=r)
        self.frames_out = Counter("lc_frames_out_total", "Frames written to clients", registry=r)
        self.bytes_out = Counter("lc_bytes_out_total", "Bytes written to clients", registry=r)
        self.events_in = Counter("lc_room_events_total", "Room events received from the broker", registry=r)
        self.drops = Counter("lc_dropped_frames_total", "Low-priority frames shed for slow clients", registry=r)
        self.slow_closed = Counter("lc_slow_closed_total", "Clients closed with 1013 for staying behind", registry=r)
        self.comments_shed = Counter("lc_comments_shed_total", "Comments not shown in hot rooms (over the room comment budget)", registry=r)
        self.errors = Counter("lc_error_frames_total", "Error frames sent, by code", ["code"], registry=r)
        self.commands = Counter("lc_commands_total", "Commands handled, by type", ["t"], registry=r)
        self.fanout_latency = Histogram(
            "lc_fanout_latency_seconds",
            "Publish-to-write latency of room events on this node",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
