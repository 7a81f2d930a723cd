"""The Celery settings delivery depends on are set, and a wrong one stops the worker naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from certctl_notify.environment import load_settings
from certctl_notify.errors import ConfigError
from workers.config import validate_celery
from workers.factory import make_celery


def test_worker_settings_are_the_safe_ones(make_env):
    settings = load_settings(make_env())
    conf = make_celery(settings).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    vt = conf.broker_transport_options["visibility_timeout"]
    assert vt > settings.retry.cap_seconds + settings.worker.task_time_limit_seconds
    assert conf.task_routes["certctl_notify.deliver"]["queue"] == "certctl.deliver"


def test_production_defaults_give_back_a_dead_workers_messages_within_minutes_not_past_the_hour_cap():
    # Waits past CERTCTL_RETRY_HOLD_MAX (5 s) wait in PostgreSQL, so no message is held for the 1 h cap:
    # the visibility timeout only has to outlast a held 5 s countdown plus the 2 min time limit
    conf = make_celery(load_settings({"CERTCTL_BROKER_URL": "redis://127.0.0.1:6379/9"})).conf
    assert 5 + 120 < conf.broker_transport_options["visibility_timeout"] <= 3 * 60
    # and a worker looks for a dead worker's messages every 10 s (kombu's default: every 100 s)
    options = conf.broker_transport_options
    assert (options["unacked_restore_interval"], options["unacked_restore_throttle"]) == (10, 1)
    assert conf.beat_schedule["certctl-release-retries"]["schedule"] == 5


@pytest.mark.parametrize("name, value", [("task_acks_late", False), ("task_reject_on_worker_lost", False),
                                         ("worker_prefetch_multiplier", 4),
                                         ("worker_cancel_long_running_tasks_on_connection_loss", True)])
def test_a_wrong_celery_setting_is_refused_by_name(make_env, name, value):
    settings = load_settings(make_env())
    conf = dict(make_celery(settings).conf)
    conf[name] = value
    with pytest.raises(ConfigError, match=name):
        validate_celery(conf, settings)


def test_too_short_visibility_timeout_is_refused(make_env):
    with pytest.raises(ConfigError, match="CERTCTL_BROKER_VISIBILITY_TIMEOUT"):
        make_celery(load_settings(make_env(CERTCTL_NOTIFICATION_RETRY_CAP="1h", CERTCTL_RETRY_HOLD_MAX="1h",
                                           CERTCTL_BROKER_VISIBILITY_TIMEOUT="30m")))


def test_the_worker_process_exits_with_the_reason(make_env):
    env = make_env(CERTCTL_NOTIFICATION_RETRY_CAP="1h", CERTCTL_RETRY_HOLD_MAX="1h",
                   CERTCTL_BROKER_VISIBILITY_TIMEOUT="30m")
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "workers.app", "worker"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "CERTCTL_BROKER_VISIBILITY_TIMEOUT" in result.stderr


def test_building_the_app_again_connects_each_signal_handler_once(make_env):
    from workers import signals

    # Given an app built twice in one process (a test, a CLI command and a worker's own app)
    make_celery(load_settings(make_env()))
    second = make_celery(load_settings(make_env(CERTCTL_LOG_FORMAT="json")))
    # Then each of our handlers is connected once, and the handlers serve the app built last
    for signal, _handler in signals._HANDLERS:
        ours = [key for key, _receiver in signal.receivers if str(key[0]).startswith("certctl_notify.")]
        assert len(ours) == 1, (signal.name, ours)
    assert signals._runtime is second.runtime


def test_importing_the_entry_point_builds_no_app():
    # Given an environment whose settings would stop a worker from starting
    env = {"PATH": "/usr/bin:/bin", "CERTCTL_NOTIFICATION_RETRY_CAP": "nonsense"}
    # When the entry point module is imported, Then nothing is read or built (it does not exit)
    code = "import workers.app, celery._state as s; print(len(list(s._get_active_apps())))"
    imported = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "0"
    # And Celery's own look-up of workers.app builds it (and here refuses the bad setting by name)
    looked_up = subprocess.run([sys.executable, "-c", "import workers.app as m; m.app"], env=env,
                               capture_output=True, text=True, timeout=60)
    assert looked_up.returncode != 0 and "CERTCTL_NOTIFICATION_RETRY_CAP" in looked_up.stderr


RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/certctl"


def test_on_rabbitmq_no_retry_is_held_by_a_worker_and_a_hold_is_refused_by_name():
    settings = load_settings({"CERTCTL_BROKER_URL": RABBITMQ})
    assert settings.retry.hold_max_seconds == 0
    conf = make_celery(settings).conf
    assert conf.broker_transport_options == {"confirm_publish": True}
    assert {q.name: q.queue_arguments for q in conf.task_queues} == {
        name: {"x-queue-type": "quorum"} for name in ("celery", "certctl.deliver", "certctl.control")}
    with pytest.raises(ConfigError, match="CERTCTL_RETRY_HOLD_MAX must be 0 on RabbitMQ"):
        load_settings({"CERTCTL_BROKER_URL": RABBITMQ, "CERTCTL_RETRY_HOLD_MAX": "5s"})


def test_an_attempt_that_could_outlast_rabbitmqs_consumer_timeout_is_refused():
    # a 40-minute time limit against RabbitMQ's default consumer_timeout of 30 minutes
    with pytest.raises(ConfigError, match="CERTCTL_BROKER_CONSUMER_TIMEOUT"):
        make_celery(load_settings({"CERTCTL_BROKER_URL": RABBITMQ, "CERTCTL_TASK_TIME_LIMIT": "40m"}))
    # and a broker configured with a longer consumer_timeout, said so, accepts it
    make_celery(load_settings({"CERTCTL_BROKER_URL": RABBITMQ, "CERTCTL_TASK_TIME_LIMIT": "40m",
                               "CERTCTL_BROKER_CONSUMER_TIMEOUT": "2h"}))
