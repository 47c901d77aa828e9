"""docker-compose.yml cannot run here (no Docker engine); parse it and check what it wires."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lpt.cli import command_names
from lpt.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_official_images_and_services() -> None:
    services = load()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["postgres"]["image"].startswith("postgres:15")
    for name in ("init", "web", "worker"):
        assert services[name]["build"] == "."


def test_kraft_single_node_settings() -> None:
    env = load()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1


def test_project_services_point_at_the_compose_servers() -> None:
    services = load()["services"]
    pg = services["postgres"]["environment"]
    known_env = {env for env, _ in Settings.describe()}
    commands = command_names()
    for name in ("init", "web", "worker"):
        env = services[name]["environment"]
        assert set(env) <= known_env, f"{name} sets variables the settings module does not read"
        assert env["LPT_KAFKA_BOOTSTRAP"] == "kafka:9092"
        user, password, db = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
        assert env["LPT_DATABASE_URL"] == f"postgresql://{user}:{password}@postgres:5432/{db}"
        assert services[name]["command"][0] in commands
    assert services["web"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert services["init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for pkg in (
        "lpt",
        "schemas",
        "producers",
        "streams",
        "consumers",
        "api",
        "reference",
        "identity",
    ):
        assert f"COPY {pkg} ./{pkg}" in dockerfile


def test_readme_starts_with_the_two_commands_and_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make run", "make test"]
    for env, _ in Settings.describe():
        assert f"`{env}`" in readme, f"README configuration table lacks {env}"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
