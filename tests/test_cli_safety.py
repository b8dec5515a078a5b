"""M2 1/7 "Safe by default": the real ``livecommerce`` command as subprocesses.

* No built-in secret: ``gateway`` and ``worker`` refuse to start without an ``LC_SECRET`` of at
  least 32 bytes (exit 2, one line); ``token`` says which secret it signs with, or refuses.
* ``livecommerce dev``: the port and the directory are checked before anything is printed; its
  ``dev.env`` belongs to it (pid inside, a stale one is replaced, another dev never removes it);
  SIGTERM/SIGINT end it within 5 s with its embedded Redis.
* CLI errors are one line and a non-zero exit code (a traceback only with ``--debug``), and
  leave nothing behind; ``campaign list`` shows the live state and stock from Redis;
  ``scripts/rush_bots.py`` waits for SQL before it prints the GMV.

Every process gets a free port and a temporary directory; the environment has no ``LC_*``
variable unless a test sets one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import psutil
import pytest

from livecommerce.auth import issue_token
from livecommerce.config import pid_alive, read_dev_env
from tests.waiting import wait_until_sync

EXE = str(Path(sys.executable).with_name("livecommerce"))
REPO = Path(__file__).resolve().parent.parent
PUBLISHED_SECRET = "dev-secret-change-me-0123456789abcdef"  # the built-in default before M2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**lc: str) -> dict[str, str]:
    """This environment without any LC_* variable, plus ``lc`` (``LC_`` added)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update({f"LC_{k.upper()}": v for k, v in lc.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], cwd=cwd, env=env if env is not None else clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def http_get(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:  # not listening (yet)
        return 0


def http_post(url: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def http_get_json(url: str, token: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def dead_pid() -> int:
    """The pid of a process that has just exited."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@dataclass
class Dev:
    proc: subprocess.Popen[str]
    cwd: Path
    port: int
    banner: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dev_env(self) -> Path:
        return self.cwd / ".livecommerce" / "dev.env"

    def secret(self) -> str:
        dev = read_dev_env(str(self.cwd / ".livecommerce"))
        assert dev is not None
        return dev.values["LC_SECRET"]


def start_dev(cwd: Path, *extra: str) -> Dev:
    """``livecommerce dev`` in ``cwd`` on a free port, once it printed its URLs and answers."""
    port = free_port()
    with open(cwd / "dev.log", "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([EXE, "dev", "--port", str(port), *extra], cwd=cwd, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    out = ""
    while "ops:" not in out.split("tokens (valid", 1)[-1] or "tokens (valid" not in out:
        line = proc.stdout.readline()
        if not line:
            proc.wait(10)
            pytest.fail(f"livecommerce dev exited ({proc.returncode}) before printing its URLs:\n{out}\n"
                        f"{(cwd / 'dev.log').read_text()[-3000:]}")
        out += line
    deadline = time.monotonic() + 30
    while http_get(f"http://127.0.0.1:{port}/healthz") != 200:
        assert time.monotonic() < deadline, "dev printed its URLs but does not answer /healthz"
        time.sleep(0.1)
    return Dev(proc, cwd, port, out)


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """One ``livecommerce dev --no-workers`` (the tests start the orders worker themselves),
    started where a killed dev left a stale dev.env behind."""
    cwd = tmp_path_factory.mktemp("devdir")
    (cwd / ".livecommerce").mkdir()
    (cwd / ".livecommerce" / "dev.env").write_text(
        f"DEV_PID={dead_pid()}\nLC_REDIS_URL=unix:///nonexistent/redis.socket\nLC_SECRET=stale-{'x' * 40}\n")
    d = start_dev(cwd, "--no-workers")
    try:
        yield d
    finally:
        stop(d.proc)


# ====================================================================== item 1: no built-in secret
SECRET_CASES = {
    "no LC_SECRET": (None, "LC_SECRET is not set"),
    "31 bytes": ("s" * 31, "LC_SECRET is 31 bytes, it must be at least 32"),
    "the published default": (PUBLISHED_SECRET, "published in livecommerce's source"),
}


@pytest.mark.parametrize("command", [["gateway"], ["worker", "orders"]], ids=["gateway", "worker"])
@pytest.mark.parametrize("case", list(SECRET_CASES), ids=list(SECRET_CASES))
def test_a_process_without_a_proper_secret_refuses_to_start(command: list[str], case: str, tmp_path: Path) -> None:
    secret, said = SECRET_CASES[case]
    lc = {"redis_url": "redis://127.0.0.1:6379/0", "database_url": f"sqlite+aiosqlite:///{tmp_path}/lc.db"}
    if secret is not None:
        lc["secret"] = secret
    port = free_port()
    args = [*command, "--port", str(port)] if command == ["gateway"] else command
    r = cli(*args, cwd=tmp_path, env=clean_env(**lc), timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert len(lines(r.stderr)) == 1 and r.stderr.startswith("error: ") and said in r.stderr, r.stderr
    assert "python3 -c 'import secrets" in r.stderr  # the fix is in the line
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing ever listened there


def test_a_gateway_with_its_own_secret_rejects_tokens_signed_with_the_old_default(redis_url: str, tmp_path: Path) -> None:
    secret = secrets.token_hex(32)
    lc = {"redis_url": redis_url, "key_prefix": f"t{uuid.uuid4().hex[:10]}", "database_url": f"sqlite+aiosqlite:///{tmp_path}/lc.db",
          "secret": secret, "log_level": "WARNING"}
    assert cli("db", "upgrade", cwd=tmp_path, env=clean_env(**lc)).returncode == 0
    port = free_port()
    with open(tmp_path / "gw.log", "wb") as log:
        proc = subprocess.Popen([EXE, "gateway", "--port", str(port)], cwd=tmp_path, env=clean_env(**lc),
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while http_get(f"http://127.0.0.1:{port}/healthz") != 200:
            assert proc.poll() is None, (tmp_path / "gw.log").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        now = int(time.time())
        forged = issue_token(PUBLISHED_SECRET, user="mallory", role="ops", now_s=now, ttl_s=600)
        good = issue_token(secret, user="ops1", role="ops", now_s=now, ttl_s=600)
        assert http_get(f"http://127.0.0.1:{port}/api/v1/ops/overview", forged) == 401
        assert http_get(f"http://127.0.0.1:{port}/api/v1/ops/overview", good) == 200
    finally:
        stop(proc)


def test_token_says_which_secret_it_signs_with_or_refuses(dev: Dev, tmp_path: Path) -> None:
    # nowhere to take a secret from
    r = cli("token", "--role", "ops", "--user", "me", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "", r
    assert lines(r.stderr) == [r.stderr.strip()] and "no secret to sign with" in r.stderr and "LC_SECRET" in r.stderr
    # LC_SECRET
    key = secrets.token_hex(32)
    r = cli("token", "--role", "ops", "--user", "me", cwd=tmp_path, env=clean_env(secret=key))
    assert r.returncode == 0 and r.stderr.strip() == "token: signed with LC_SECRET from the environment", r
    assert jwt.decode(r.stdout.strip(), key, algorithms=["HS256"])["sub"] == "me"
    # a short LC_SECRET is refused like the servers refuse it
    r = cli("token", "--role", "ops", "--user", "me", cwd=tmp_path, env=clean_env(secret="short"))
    assert r.returncode == 2 and "at least 32" in r.stderr and r.stdout == ""
    # the dev.env of a running dev in this directory: the dev accepts the token
    r = cli("token", "--role", "ops", "--user", "me", cwd=dev.cwd)
    assert r.returncode == 0, r
    assert "the secret of the `livecommerce dev` running in this directory" in r.stderr and f"pid {dev.proc.pid}" in r.stderr
    assert http_get(f"{dev.base}/api/v1/ops/overview", r.stdout.strip()) == 200
    # LC_SECRET wins over dev.env, and token says it is not what the dev of this directory uses
    r = cli("token", "--role", "ops", "--user", "me", cwd=dev.cwd, env=clean_env(secret=key))
    assert r.returncode == 0 and "not the secret of the `livecommerce dev` running in this directory" in r.stderr


def test_a_stale_dev_env_counts_for_nothing_and_the_next_dev_replaces_it(dev: Dev, tmp_path: Path) -> None:
    stale = tmp_path / ".livecommerce"
    stale.mkdir()
    (stale / "dev.env").write_text(f"DEV_PID={dead_pid()}\nLC_SECRET={'k' * 40}\nLC_REDIS_URL=unix:///nowhere\n")
    r = cli("token", "--role", "ops", "--user", "me", cwd=tmp_path)
    assert r.returncode == 2 and "is gone" in r.stderr and len(lines(r.stderr)) == 1, r
    # the fixture's dev started over a stale file: it is now the dev's own
    got = read_dev_env(str(dev.cwd / ".livecommerce"))
    assert got is not None and got.pid == dev.proc.pid and got.alive and got.url == dev.base
    assert oct(dev.dev_env.stat().st_mode & 0o777) == "0o600"


# ====================================================================== item 7: newcomer stumbles
def test_a_second_dev_says_why_in_one_line_before_printing_anything_and_leaves_the_first_alone(dev: Dev, tmp_path: Path) -> None:
    before = dev.dev_env.read_bytes()
    cases = {
        "same directory, same port": (dev.cwd, dev.port, "already in use"),
        "same directory, another port": (dev.cwd, free_port(), "already runs in this directory"),
        "another directory, same port": (tmp_path, dev.port, "already in use"),
    }
    for name, (cwd, port, said) in cases.items():
        t0 = time.monotonic()
        r = subprocess.run([EXE, "dev", "--port", str(port)], cwd=cwd, env=clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        assert r.returncode == 2, (name, r.stdout)
        assert len(lines(r.stdout)) == 1 and r.stdout.startswith("error: ") and said in r.stdout, (name, r.stdout)
        assert "running" not in r.stdout and "token" not in r.stdout and "Traceback" not in r.stdout, (name, r.stdout)
        assert time.monotonic() - t0 < 30, name
        assert dev.dev_env.read_bytes() == before, name  # the first dev's file survives, untouched
    assert not (tmp_path / ".livecommerce").exists()  # nothing created before the checks
    assert dev.proc.poll() is None
    r = cli("token", "--role", "ops", "--user", "me", cwd=dev.cwd)
    assert http_get(f"{dev.base}/api/v1/ops/overview", r.stdout.strip()) == 200  # tokens still fit the running dev


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_dev_and_everything_it_started_within_5_s(sig: signal.Signals, tmp_path: Path) -> None:
    d = start_dev(tmp_path)  # with every worker
    try:
        got = read_dev_env(str(tmp_path / ".livecommerce"))
        assert got is not None
        socket_file = got.values["LC_REDIS_URL"].removeprefix("unix://")
        redis_pid = int((Path(socket_file).parent / "redis.pid").read_text())
        assert pid_alive(redis_pid)
        children = psutil.Process(d.proc.pid).children(recursive=True)
        time.sleep(1)  # idle
        t0 = time.monotonic()
        d.proc.send_signal(sig)
        rc = d.proc.wait(10)
        took = time.monotonic() - t0
        assert took < 5, f"dev took {took:.1f} s to stop"
        assert rc == 0
        deadline = time.monotonic() + 1
        while pid_alive(redis_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(redis_pid), "the embedded Redis outlived dev"
        assert not [c.pid for c in children if pid_alive(c.pid)]
        assert not d.dev_env.exists()  # its own file goes with it
        assert not Path(socket_file).parent.exists()
        assert "Traceback" not in (tmp_path / "dev.log").read_text()
    finally:
        stop(d.proc)


def test_campaign_commands_without_services_say_so_in_one_line_and_leave_nothing(tmp_path: Path) -> None:
    camp = REPO / "examples" / "campaign.yaml"
    for args in (["campaign", "list"], ["campaign", "load", str(camp)], ["profiles", "show", "u1"]):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode != 0, (args, r)
        assert r.stdout == "" and len(lines(r.stderr)) == 1 and r.stderr.startswith("error: "), (args, r.stderr)
        assert "livecommerce dev" in r.stderr and "LC_" in r.stderr, r.stderr  # the fix
        assert not (tmp_path / ".livecommerce").exists(), args
    r = cli("db", "status", cwd=tmp_path)  # says there is none yet instead of creating an empty one
    assert r.returncode == 3 and len(lines(r.stdout)) == 1 and "livecommerce db upgrade" in r.stdout, r
    assert not (tmp_path / ".livecommerce").exists()
    r = cli("--debug", "campaign", "list", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = cli("campaign", "list", "--debug", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr
    assert not (tmp_path / ".livecommerce").exists()


def test_an_unreachable_redis_is_one_line_unless_debug(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/lc.db"
    assert cli("db", "upgrade", cwd=tmp_path, env=clean_env(database_url=db)).returncode == 0
    env = clean_env(database_url=db, redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    camp = str(REPO / "examples" / "campaign.yaml")
    r = cli("campaign", "load", camp, cwd=tmp_path, env=env)
    assert r.returncode == 1 and r.stdout == "" and len(lines(r.stderr)) == 1 and r.stderr.startswith("error: "), r.stderr
    assert "redis" in r.stderr.lower()


# ====================================================================== item 6: live numbers
class Reader:
    """Collects a process's output in the background (progress lines end with \\r)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.buf = proc, b""
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            self.buf += chunk

    @property
    def text(self) -> str:
        return self.buf.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert self.proc.poll() is None or needle in self.text, f"exited ({self.proc.returncode}) before {needle!r}:\n{self.text}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout} s:\n{self.text}"
            time.sleep(0.05)


def rush(dev: Dev, sale: str, *extra: str) -> tuple[subprocess.Popen[bytes], Reader]:
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "rush_bots.py"), "--sale", sale, *extra], cwd=dev.cwd,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, Reader(proc)


def test_campaign_list_and_rush_bots_show_the_live_sale_and_wait_for_sql(dev: Dev) -> None:
    sale = f"t{uuid.uuid4().hex[:8]}"
    camp = dev.cwd / f"{sale}.json"
    camp.write_text(json.dumps({"campaigns": [{"id": sale, "room": "demo", "product_id": "cup", "price": 1999, "stock": 3,
                                               "per_user_limit": 1, "duration_s": 600, "payment_window_s": 600}]}))
    r = cli("campaign", "load", str(camp), cwd=dev.cwd)
    assert r.returncode == 0 and "live" in r.stdout, r
    # 5 bots rush 3 units and pay; no orders worker runs yet (dev --no-workers), so SQL lags
    proc, out = rush(dev, sale, "--bots", "5", "--pay-percent", "100", "--sql-wait", "90")
    worker = None
    try:
        out.wait_for("waiting for the orders worker to write the sale into SQL", 60)
        # campaign list: Redis's live state and remaining stock, not SQL's "live" and 3
        r = cli("campaign", "list", cwd=dev.cwd)
        assert r.returncode == 0, r
        row = next(ln for ln in r.stdout.splitlines() if ln.startswith(sale))
        assert re.split(r"\s+", row)[2:6] == ["sold_out", "3", "0", "1999"], r.stdout
        # a second rush that cannot wait long says SQL is not caught up, and fails
        late, late_out = rush(dev, sale, "--bots", "1", "--sql-wait", "1", "--now")
        assert late.wait(60) == 1, late_out.text
        late_out._t.join(5)
        assert "SQL is not caught up after 1 s" in late_out.text and "FAIL  SQL caught up" in late_out.text, late_out.text
        # the orders worker catches up; rush_bots then prints the GMV of every paid order
        with open(dev.cwd / "worker.log", "ab") as log:
            worker = subprocess.Popen([EXE, "worker", "orders"], cwd=dev.cwd, env=clean_env(), stdout=subprocess.DEVNULL,
                                      stderr=log)
        assert proc.wait(90) == 0, out.text
        out._t.join(5)
        stats = json.loads(out.text.split("sale stats:", 1)[1].splitlines()[0])
        assert (stats["state"], stats["paid"], stats["gmv"]) == ("sold_out", 3, 3 * 1999), out.text
        assert "PASS  SQL caught up" in out.text
    finally:
        stop(proc)
        if worker is not None:
            stop(worker)


def test_dev_runs_with_test_coins_on(dev: Dev) -> None:
    viewer = cli("token", "--role", "viewer", "--user", "coin-viewer", cwd=dev.cwd).stdout.strip()
    status, body = http_post(f"{dev.base}/api/v1/wallets/coin-viewer/topup", viewer, {"amount": 100, "idempotency_key": "k1"})
    assert status == 201 and body["balance"] == 100, body



def test_dev_with_the_payment_simulator_pays_an_order_through_its_signed_callback(tmp_path: Path) -> None:
    d = start_dev(tmp_path, "--payments-sim")
    try:
        m = re.search(r"payments:\s+simulated provider (http://\S+)", d.banner)
        assert m, d.banner
        ops = cli("token", "--role", "ops", "--user", "sim-ops", cwd=tmp_path).stdout.strip()
        viewer = cli("token", "--role", "viewer", "--user", "sim-buyer", cwd=tmp_path).stdout.strip()
        sale = {"id": "simsale", "room": "demo", "product_id": "p1", "price": 1500, "stock": 3, "per_user_limit": 1,
                "starts_ms": int(time.time() * 1000) - 1000, "duration_s": 600}
        status, body = http_post(f"{d.base}/api/v1/campaigns", ops, sale)
        assert status == 201, body
        status, body = http_post(f"{d.base}/api/v1/sales/simsale/buy", viewer, {"qty": 1, "request_id": "b1"})
        assert status == 201, body
        oid = body["order_id"]
        status, it = http_post(f"{d.base}/api/v1/orders/{oid}/payments", viewer, {})
        assert status == 201 and it["amount"] == 1500 and it["confirm_url"].startswith(m.group(1)), it
        status, conf = http_post(it["confirm_url"], "", {"client_secret": it["client_secret"]})
        assert status == 200 and conf["status"] == "succeeded", conf

        def order_state() -> str | None:
            status, got = http_get_json(f"{d.base}/api/v1/orders/{oid}", viewer)
            return (got.get("order") or {}).get("state") if status == 200 else None

        wait_until_sync(order_state, until=lambda s: s == "paid", timeout=20, interval=0.2,
                        what="the order paid by the simulator's signed callback")
        status, rows = http_get_json(f"{d.base}/api/v1/payments/callbacks", ops)
        assert status == 200 and any(r["order_id"] == oid and r["verified"] and r["outcome"] == "paid"
                                     for r in rows["callbacks"]), rows
    finally:
        stop(d.proc)
    assert "Traceback" not in (tmp_path / "dev.log").read_text()
