"""The compose file deploys as the README says: addresses from variables, secrets from files,
a CPU profile, health checks for every long-running service, metrics fenced, proxies trusted."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENV = SERVICES["worker"]["environment"]


def test_addresses_come_from_variables_so_a_remote_worker_needs_no_edits() -> None:
    assert "${THRIFTY_REDIS_HOST:-redis}" in ENV["THRIFTY_BROKER_URL"]
    assert "${THRIFTY_REDIS_PORT:-6379}" in ENV["THRIFTY_BROKER_URL"]
    assert "${THRIFTY_REDIS_HOST:-redis}" in " ".join(SERVICES["flower"]["command"])
    assert SERVICES["worker"]["depends_on"]["redis"].get("required") is False


def test_secrets_are_files_read_through_settings_fields() -> None:
    plain = [k for k in ENV if re.search(r"PEPPER|PASSWORD|DATABASE_URL", k) and not k.endswith("_FILE")]
    assert plain == [], f"secrets in plain environment variables: {plain}"
    fields = set(Settings.model_fields)
    for key, value in ENV.items():
        if key.endswith("_FILE"):
            assert key.removeprefix("THRIFTY_").removesuffix("_FILE").lower() in fields, key
            assert Path(value).name in COMPOSE["secrets"], value
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for name in ("api", "migrate", "worker", "worker-cpu"):
        assert set(SERVICES[name]["secrets"]) == {"database_url", "api_key_pepper"}, name


def test_a_cpu_profile_and_health_checks_for_workers_and_flower() -> None:
    assert SERVICES["worker"]["profiles"] == ["gpu"] and SERVICES["worker-cpu"]["profiles"] == ["cpu"]
    assert "deploy" not in SERVICES["worker-cpu"]  # no GPU reservation
    for name, node in (("worker", "gpu0@"), ("worker-cpu", "worker@")):
        test = " ".join(SERVICES[name]["healthcheck"]["test"])
        assert "inspect ping" in test and node in test, name
    assert "/healthcheck" in " ".join(SERVICES["flower"]["healthcheck"]["test"])
    assert all("healthcheck" in SERVICES[s] for s in ("postgres", "redis", "api", "worker", "worker-cpu", "flower"))


def test_the_api_trusts_only_the_configured_proxy_and_fences_metrics() -> None:
    command = " ".join(SERVICES["api"]["command"])
    assert "--proxy-headers" in command and "--forwarded-allow-ips" in command
    assert SERVICES["api"]["environment"]["THRIFTY_FORWARDED_ALLOW_IPS"] == "${THRIFTY_FORWARDED_ALLOW_IPS:-127.0.0.1}"
    allowed = ENV["THRIFTY_METRICS_ALLOW_IPS"]
    assert allowed == "${THRIFTY_METRICS_ALLOW_IPS:-127.0.0.1,::1}"
    default = allowed.split(":-", 1)[1].rstrip("}")
    settings = Settings(metrics_allow_ips=default)
    assert settings.metrics_allowed("127.0.0.1") and not settings.metrics_allowed("203.0.113.9")
    assert all(p.startswith("127.0.0.1:") for p in SERVICES["flower"]["ports"])  # Flower on loopback only
