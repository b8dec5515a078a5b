"""The layering rules of STYLE.md, checked by scanning imports.

* every library module is free of I/O (no asyncio, redis, sqlalchemy, aiohttp, aiokafka,
  sockets) except the edges listed in :data:`EDGES`: the Redis, SQL and Kafka adapters, the
  ports' in-memory twins, the CLI and the dev topology;
* no library module imports ``gateway`` or ``workers`` (the CLI loads them by name), and only
  the dev topology's own package imports ``livecommerce.devcluster``;
* ``gateway/`` and ``workers/`` import neither ``redis`` nor ``sqlalchemy``: they reach Redis
  and SQL through the library's adapters;
* the library's modules import one another without a circle (nor do the workers'), counting
  every import, also those inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "livecommerce"
IO_LIBS = {"asyncio", "redis", "sqlalchemy", "aiohttp", "aiokafka", "websockets", "socket", "aiosqlite", "asyncpg"}
ENGINES = {"redis", "sqlalchemy"}

# Library modules allowed to do I/O besides ``*_redis``, ``*_sql``, ``cli*`` and the dev
# topology (``devcluster/``), each with the reason.
EDGES = {
    "log.py": "the Log port's in-memory twin (MemoryLog) waits with asyncio",
    "broker.py": "the Broker port's in-memory twin (MemoryBroker) delivers with asyncio",
    "log_kafka.py": "the Log adapter on Kafka (aiokafka)",
    "redis_conn.py": "connecting to Redis and its driver-error guard, shared by the *_redis adapters",
    "sql_conn.py": "SQL engines and the driver-error guard, shared by the *_sql adapters",
    "schema.py": "the SQL tables (SQLAlchemy Core) the *_sql adapters and migrations share",
    "migrations.py": "the schema's DDL steps (SQLAlchemy)",
    "payments_sim.py": "the simulated payment provider: an aiohttp service for dev and tests",
    "payments_http.py": "the PaymentProvider adapter over HTTP (aiohttp client)",
    "checkout.py": "the money path's orchestration: a sale's group commit of buys queues them on asyncio futures",
    "client/http.py": "the gateway's HTTP client (aiohttp)",
    "client/ws.py": "the gateway's WebSocket client (websockets, a reader task)",
}


def imports_of(path: Path) -> set[str]:
    """Top-level package of every absolute import in ``path`` (nested imports included)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def is_edge(rel: Path) -> bool:
    name = rel.name
    return (
        rel.parts[0] == "devcluster"
        or name.endswith(("_redis.py", "_sql.py"))
        or name.startswith("cli")
        or rel.as_posix() in EDGES
    )


def library_modules() -> Iterator[Path]:
    yield from sorted(ROOT.rglob("*.py"))


def test_every_library_module_but_the_edges_does_no_io() -> None:
    pure = [p for p in library_modules() if not is_edge(p.relative_to(ROOT))]
    assert len(pure) > 40  # the rule covers the library, not a hand-picked list
    bad = {str(p.relative_to(ROOT)): sorted(imports_of(p) & IO_LIBS) for p in pure if imports_of(p) & IO_LIBS}
    assert not bad, f"library modules doing I/O outside the adapters: {bad}"


def test_the_edges_listed_by_name_exist() -> None:
    assert not [name for name in EDGES if not (ROOT / name).exists()]


def test_library_never_imports_gateway_or_workers() -> None:
    for path in library_modules():
        bad = imports_of(path) & {"gateway", "workers"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def _absolute_imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_only_the_dev_topology_imports_itself() -> None:
    """The CLI loads ``livecommerce.devcluster.cli`` by name; nothing imports it."""
    for pkg in ("livecommerce", "gateway", "workers"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path.is_relative_to(ROOT / "devcluster"):
                continue
            bad = [m for m in _absolute_imports(path) if m.startswith("livecommerce.devcluster")]
            if path.is_relative_to(ROOT):
                tree = ast.parse(path.read_text())
                bad += [f".{n.module}" for n in ast.walk(tree)
                        if isinstance(n, ast.ImportFrom) and n.level and (n.module or "").startswith("devcluster")]
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def _engine_imports(pkg: str) -> dict[str, list[str]]:
    out = {}
    for path in sorted((REPO / pkg).rglob("*.py")):
        bad = sorted(imports_of(path) & ENGINES)
        if bad:
            out[str(path.relative_to(REPO))] = bad
    return out


def test_workers_reach_redis_and_sql_only_through_the_library() -> None:
    assert _engine_imports("workers") == {}


def test_the_gateway_reaches_redis_and_sql_only_through_the_library() -> None:
    assert _engine_imports("gateway") == {}


# ------------------------------------------------------------------------ import circles


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(pkg: str) -> dict[str, set[str]]:
    """``module -> modules of pkg it imports`` (relative and absolute, nested included)."""
    paths = {_module_name(p): p for p in sorted((REPO / pkg).rglob("*.py"))}

    def known(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in paths.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for n in names:
                hit = known(n)
                if hit is not None and hit != mod:
                    deps.add(hit)
        graph[mod] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_circle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_library_modules_import_one_another_without_a_circle() -> None:
    graph = import_graph("livecommerce")
    assert "livecommerce.store_sql" in graph and "livecommerce.schema" in graph["livecommerce.store_sql"]
    assert circles(graph) == []


def test_worker_modules_import_one_another_without_a_circle() -> None:
    assert circles(import_graph("workers")) == []
