"""Fixtures on real services: a fresh PostgreSQL database per test session, a Redis db number, a
RabbitMQ virtual host of the run's own, an HTTP receiver on 127.0.0.1, and Celery workers in subprocesses.

A missing PostgreSQL, Redis or RabbitMQ fails the run loudly; nothing here is skipped.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from urllib.parse import urlsplit

import pytest
import redis
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from certctl_notify.db import make_sessions
from certctl_notify.environment import load_settings
from certctl_notify.migrate import upgrade
from certctl_notify.publish import make_producer
from tests.support.browser import browser_session, new_page
from tests.support.receiver import Receiver
from tests.support.tcp_proxy import TcpProxy
from tests.support.worker import WorkerProcess

PG_ADMIN_URL = os.environ.get("CERTCTL_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("CERTCTL_TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: Redis db number the tests own (flushed before and after each test that uses it).
REDIS_DB = int(os.environ.get("CERTCTL_TEST_REDIS_DB", "9"))
#: The machine's RabbitMQ; the run makes a virtual host of its own there (rabbitmqctl) and removes it.
RABBITMQ_BASE_URL = os.environ.get("CERTCTL_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


@pytest.fixture(scope="session")
def database_url():
    """A fresh ``certctl_test_<worker>`` database at Alembic head, dropped at the end."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"certctl_test_{worker}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not usable ({exc}); start it (see .ci/run)")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def new_database(tmp_path):
    """``new_database(dialect)`` makes an empty database and returns its URL; PostgreSQL ones are
    named ``certctl_mig_<random>`` and dropped after the test."""
    admin = None
    created: list[str] = []

    def make(dialect: str) -> str:
        nonlocal admin
        if dialect == "sqlite":
            return f"sqlite:///{tmp_path / uuid.uuid4().hex[:8]}.db"
        if admin is None:
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"certctl_mig_{uuid.uuid4().hex[:12]}"
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except OperationalError as exc:
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not usable ({exc}); start it (see .ci/run)")
        created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    yield make
    if admin is not None:
        with admin.connect() as conn:
            for name in created:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def transactions(database_url):
    """The test database's transaction factory, shared by the whole session (one set of pools)."""
    transactions = make_sessions(database_url)
    yield transactions
    transactions.dispose()


@pytest.fixture(scope="session")
def engine(transactions):
    return transactions.engine


@pytest.fixture
def sessions(transactions):
    """A session factory on the test database, emptied before each test (workers in other processes
    commit for real, so an outer rolled-back transaction cannot isolate these tests)."""
    with transactions.begin() as conn:
        conn.execute(text("TRUNCATE notification_attempts, notification_events, requeue_jobs, audit_log"))
    return transactions


#: Key that marks a Redis db as taken by one test run (several runs may share this machine's Redis).
_OWNER_KEY = "certctl-test:owner"


@pytest.fixture(scope="session")
def redis_db():
    """A Redis db number no other concurrent test run is using (CERTCTL_TEST_REDIS_DB pins one)."""
    candidates = [REDIS_DB] if "CERTCTL_TEST_REDIS_DB" in os.environ else [REDIS_DB, *range(1, 16)]
    token = uuid.uuid4().hex
    for db in candidates:
        client = redis.Redis.from_url(f"{REDIS_BASE_URL}/{db}")
        try:
            if client.set(_OWNER_KEY, token, nx=True, ex=3600):
                yield db
                if client.get(_OWNER_KEY) == token.encode():
                    client.delete(_OWNER_KEY)
                return
        except redis.ConnectionError as exc:
            pytest.fail(f"Redis at {REDIS_BASE_URL} is not reachable ({exc}); start it (see .ci/run)")
        finally:
            client.close()
    pytest.fail("every Redis db is taken by another test run")


def lose_every_message(broker_url: str) -> None:
    """What a broker restart without persistence does: every queued, unacked and scheduled message is
    gone. On Redis this run's db only (it stays claimed by this run); on RabbitMQ our queues in this
    run's vhost (a message a live consumer holds unacknowledged is not in the queue, and is kept)."""
    if broker_url.startswith("amqp"):
        _purge_queues(broker_url)
        return
    client = redis.Redis.from_url(broker_url)
    owner = client.get(_OWNER_KEY)
    client.flushdb()
    if owner:
        client.set(_OWNER_KEY, owner, ex=3600)
    client.close()


def _purge_queues(broker_url: str) -> None:
    from kombu import Connection

    from certctl_notify.publish import for_each_amqp_queue

    with Connection(broker_url, connect_timeout=5) as conn:
        for_each_amqp_queue(conn, lambda channel, queue: channel.queue_purge(queue))


#: The brokers the delivery spine's end-to-end tests run on (``pytest.mark.parametrize("broker", BROKERS,
#: indirect=True)``); other tests run on Redis.
BROKERS = ("redis", "rabbitmq")


@pytest.fixture
def broker(request):
    """The broker this test runs on: "redis" unless parametrised with BROKERS."""
    return getattr(request, "param", "redis")


@pytest.fixture
def broker_url(broker, request):
    if broker == "rabbitmq":
        yield request.getfixturevalue("rabbitmq_url")
        return
    url = f"{REDIS_BASE_URL}/{request.getfixturevalue('redis_db')}"
    lose_every_message(url)
    yield url
    lose_every_message(url)


def _rabbitmqctl(*args: str) -> None:
    try:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed ({exc}); is RabbitMQ running (see .ci/run)?")


@pytest.fixture(scope="session")
def rabbitmq_vhost():
    """A RabbitMQ virtual host this run owns: tests never touch the machine's other vhosts."""
    name = f"certctl_test_{uuid.uuid4().hex[:10]}"
    user = urlsplit(RABBITMQ_BASE_URL).username or "guest"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    yield name
    _rabbitmqctl("delete_vhost", name)


@pytest.fixture
def rabbitmq_url(rabbitmq_vhost):
    """This run's vhost, with our queues emptied before and after the test (only ours exist there).

    Emptied, not deleted: kombu remembers per connection which queues it declared (and keeps producer
    connections in process-wide pools), so a publisher of a later test would not declare a deleted
    queue again, and RabbitMQ drops a message to a missing queue as unroutable."""
    url = f"{RABBITMQ_BASE_URL}/{rabbitmq_vhost}"
    _purge_queues(url)
    yield url
    _purge_queues(url)


@pytest.fixture
def database_proxy(database_url):
    """(proxy, URL through it) to this test's database: a worker or app given that URL can be cut off
    from PostgreSQL with ``proxy.cut()`` while the test keeps its own connections."""
    url = make_url(database_url)
    proxy = TcpProxy(url.host, url.port or 5432).start()
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.stop()


@pytest.fixture
def producer(broker_url):
    """A publish-only Celery app on this test's broker, as the API and producers use."""
    app = make_producer(broker_url)
    yield app
    app.close()


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


#: The real schedule, compressed: base 50 ms, cap 1 s (so 50, 100, 200, 400 ms), five attempts.
COMPRESSED = {
    "CERTCTL_NOTIFICATION_RETRY_BASE": "50ms",
    "CERTCTL_NOTIFICATION_RETRY_CAP": "1s",
    "CERTCTL_NOTIFICATION_MAX_ATTEMPTS": "5",
    "CERTCTL_NOTIFICATION_RETRY_INTERVAL": "500ms",
    "CERTCTL_SWEEP_GRACE": "1s",
    "CERTCTL_TASK_TIME_LIMIT": "5s",
    "CERTCTL_CLAIM_LEASE": "6s",
    "CERTCTL_HTTP_TIMEOUT": "3s",
    "CERTCTL_INSPECT_TIMEOUT": "300ms",  # GET /api/v1/workers with no worker waits this long
    "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32",
    "CERTCTL_WEBHOOK_SECRET": "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXdlYmhvb2tzLTEyMzQ1Ng==",
    "CERTCTL_API_KEYS": "ops:admin-key:admin,viewer:read-key:read",
}


#: On RabbitMQ every retry waits in PostgreSQL until beat releases it: released every 50 ms, so the
#: compressed schedule's waits (50 ms on) keep their length there too.
RABBITMQ_COMPRESSED = {"CERTCTL_RETRY_RELEASE_INTERVAL": "50ms"}


@pytest.fixture
def make_env(database_url, broker_url, receiver, tmp_path, broker):
    """Environment for a worker or in-process settings: compressed time, this test's services."""

    def build(**overrides) -> dict:
        env = {
            **COMPRESSED,
            **(RABBITMQ_COMPRESSED if broker == "rabbitmq" else {}),
            "CERTCTL_DATABASE_URL": database_url,
            "CERTCTL_BROKER_URL": broker_url,
            "CERTCTL_WEBHOOK_URL": receiver.url,
            "CERTCTL_DATA_DIR": str(tmp_path),
        }
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    return build


@pytest.fixture
def settings(make_env):
    return load_settings(make_env())


@pytest.fixture
def env(make_env, sessions, monkeypatch):
    """This test's environment set in the process (for CLI commands that read it), tables emptied."""
    values = make_env()
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def api_url(settings, env):
    """A real API server for this test's settings, on a thread of the test process; its base URL."""
    from tests.support.api_server import threaded_api

    with threaded_api(settings) as url:
        yield url


@pytest.fixture
def start_worker(tmp_path, request, broker):
    """Start workers with ``start_worker(env, beat=False)``; all are killed after the test and their
    log is printed when the test failed.

    Killed, not stopped: a warm shutdown takes ~3 s (billiard's pool processes sleep 1 s as they exit),
    and what a killed worker leaves behind cannot reach the next test, whose broker db is flushed and
    whose tables are emptied first. Graceful shutdown has a test of its own (test_recovery.py).
    """
    started: list[WorkerProcess] = []

    def start(env: dict, *, beat: bool | None = None, concurrency: int = 2, pool: str = "prefork",
              queues: str | None = None, wait: bool = True) -> WorkerProcess:
        """``wait=False`` only spawns it (start several side by side, then ``wait_ready`` each). On RabbitMQ
        the first worker runs beat too unless ``beat=False``: retries wait in PostgreSQL there, and beat
        releases them."""
        if beat is None:
            beat = broker == "rabbitmq" and not any(w.beat for w in started)
        worker = WorkerProcess(env, tmp_path / f"worker{len(started)}.log", beat=beat, concurrency=concurrency,
                               pool=pool, queues=queues)
        started.append(worker)
        if not wait:
            worker.spawn()
            return worker
        return worker.start()

    yield start
    for worker in started:
        worker.kill()
        worker.stop()  # closes its log
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for worker in started:
            print(f"--- {worker.log_path.name} ---\n{worker.log()[-6000:]}")


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium under sync Playwright, one per session; a missing chromium or axe-core fails.

    From its start to the session's end, Playwright's event loop counts as running in the main thread
    (between sync calls too): a test that calls asyncio.run() there then fails. None does today
    (aiosmtpd runs its loop in a thread of its own).
    """
    with browser_session() as b:
        yield b


@pytest.fixture
def page(browser):
    """A page in a fresh browser context (1280x800, 10 s default timeout), closed after the test."""
    with new_page(browser) as p:
        yield p


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def wait_for(predicate, timeout: float = 20, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail with ``message`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")
