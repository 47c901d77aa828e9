"""docker-compose.yml cannot run here (no Docker engine); parse it and check what it wires."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from lpt.cli import command_names
from lpt.metrics import metric_names
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
    for name in ("init", "web", "worker", "notify"):
        env = services[name]["environment"]
        assert set(env) <= known_env, f"{name} sets variables the settings module does not read"
        assert env["LPT_KAFKA_BOOTSTRAP"] == "kafka:9092"
        user, password, db = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
        assert env["LPT_DATABASE_URL"] == f"postgresql://{user}:{password}@postgres:5432/{db}"
        assert services[name]["command"][0] in commands
    for name in ("web", "worker", "notify"):
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
        # Every service that reads personal data or signs links gets both keys.
        assert set(services[name]["secrets"]) == {"lpt_master_key", "lpt_link_key"}
        env = services[name]["environment"]
        assert env["LPT_LINK_KEY_FILE"] == "/run/secrets/lpt_link_key"
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


# -- monitoring (issue 6): Prometheus and Grafana for Docker users ---------------------------

_PROMQL_WORDS = re.compile(r"\b(?:kafka|lpt)_[a-z0-9_]+\b")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")


def promql_metric_names(expr: str) -> set[str]:
    """The project's metric names an expression uses (label lists and matchers removed)."""
    stripped = _MATCHERS.sub("", _LABEL_LISTS.sub("", expr))
    return set(_PROMQL_WORDS.findall(stripped))


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((ROOT / "infra" / "grafana" / "dashboards" / "lpt.json").read_text())
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def test_prometheus_scrapes_the_web_service_and_every_worker() -> None:
    services = load()["services"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert "./infra/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    web_port = services["web"]["environment"]["LPT_HTTP_PORT"]
    web = jobs["lpt-web"]
    assert web["static_configs"][0]["targets"] == [f"web:{web_port}"]
    assert web["metrics_path"] == "/metrics" and web["params"] == {"scope": ["local"]}
    (dns,) = jobs["lpt-workers"]["dns_sd_configs"]
    assert dns["names"] == ["worker", "notify"]
    for name in dns["names"]:  # every replica of each worker service, found through DNS
        worker_env = services[name]["environment"]
        assert str(dns["port"]) == worker_env["LPT_METRICS_PORT"]
        assert worker_env["LPT_METRICS_HOST"] == "0.0.0.0"
    rules = config["rule_files"]
    assert rules == ["/etc/prometheus/alerts.yml"]


def test_alert_rules_and_dashboard_use_only_catalogue_metrics() -> None:
    known = metric_names()
    alerts = yaml.safe_load((ROOT / "infra" / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    panels = dashboard_exprs()
    assert len(panels) >= 10 and len(exprs) >= 5
    used: set[str] = set()
    for expr in exprs + panels:
        names = promql_metric_names(expr)
        assert names or "up{" in expr, f"no catalogue metric in {expr!r}"
        assert names <= known, f"{sorted(names - known)} not in lpt/metrics.py ({expr!r})"
        used |= names
    # What the issue asks the dashboard to show: lag, throughput, dead letters, latency.
    for wanted in (
        "kafka_consumergroup_lag",
        "kafka_consumergroup_lag_seconds",
        "kafka_topic_partition_current_offset",
        "lpt_dead_letter_messages",
        "lpt_dead_letters_total",
        "lpt_processing_seconds_bucket",
        "lpt_http_request_seconds_bucket",
    ):
        assert any(wanted in promql_metric_names(e) for e in panels), wanted
    assert promql_metric_names('sum by (lpt_process) (lpt_kafka_up{topic="x"})') == {"lpt_kafka_up"}


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    grafana = load()["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    mounts = {
        v.split(":")[1]: ROOT / v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")
    }
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "lpt.yml").read_text())["providers"]
    assert provider["options"]["path"] in mounts
    dashboard = json.loads((mounts[provider["options"]["path"]] / "lpt.json").read_text())
    sources = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert sources == {datasource["uid"]}


# -- the image: web assets from npm, templates and static files as package data ---------------

_PACKAGES = ("lpt", "schemas", "producers", "streams", "consumers", "api", "reference", "identity")


def dockerfile_stages() -> list[tuple[str, str | None, list[str]]]:
    """(base image, stage name, instructions) per ``FROM``; line continuations joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[tuple[str, str | None, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            parts = line.split()
            alias = parts[3] if len(parts) >= 4 and parts[2].upper() == "AS" else None
            stages.append((parts[1], alias, []))
        else:
            stages[-1][2].append(line)
    return stages


def test_image_installs_the_web_assets_with_npm_ci() -> None:
    """Leaflet and GOV.UK Frontend come from ``npm ci`` on the lock file in an official node
    stage, and land at <workdir>/web/node_modules where the app looks for them."""
    from api.officer import LEAFLET_DIR
    from api.public.assets import GOVUK_DIST
    from lpt.settings import PROJECT_ROOT

    stages = dockerfile_stages()
    node = [(base, alias, lines) for base, alias, lines in stages if base.startswith("node:")]
    assert len(node) == 1, "one build stage on the official node image"
    _, alias, lines = node[0]
    assert alias, "the node stage needs a name for COPY --from"
    node_workdir = next(ln.split()[1] for ln in lines if ln.startswith("WORKDIR "))
    copies = [ln for ln in lines if ln.startswith("COPY ")]
    assert any("web/package.json" in c and "web/package-lock.json" in c for c in copies)
    ci = [ln for ln in lines if ln.startswith("RUN ") and "npm ci" in ln]
    assert ci, "the node stage must run npm ci (the lock file, not npm install)"
    assert (ROOT / "web" / "package-lock.json").is_file()

    base, _, final = stages[-1]
    assert base.startswith("python:3.11"), "the image that runs is the Python one"
    workdir = next(ln.split()[1] for ln in final if ln.startswith("WORKDIR "))
    wanted = f"COPY --from={alias} {node_workdir}/node_modules ./web/node_modules"
    assert wanted in final, f"the final stage must copy node_modules: {wanted}"
    assert not any("npm" in ln for ln in final), "no Node.js in the image that runs"
    # The app finds the assets under PROJECT_ROOT (the parent of lpt/): that is the workdir
    # only when the project is installed editable there (a plain install runs from
    # site-packages, which has no web/).
    install = next(ln for ln in final if ln.startswith("RUN ") and "pip install" in ln)
    assert re.search(r"pip install .*(-e|--editable) \.", install), install
    assert workdir == "/app"
    for asset_dir in (LEAFLET_DIR, GOVUK_DIST):
        assert asset_dir.relative_to(PROJECT_ROOT).parts[:2] == ("web", "node_modules")
    package_lock = json.loads((ROOT / "web" / "package-lock.json").read_text())["packages"]
    for name in ("leaflet", "govuk-frontend"):
        assert f"node_modules/{name}" in package_lock, f"{name} is not in the lock file"

    # The host's own node_modules and virtualenv never enter the build context.
    ignored = {
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    assert {"web/node_modules", ".venv", ".lpt"} <= ignored


def test_package_data_ships_every_template_and_static_file() -> None:
    """Every non-Python file in the packages (templates, CSS, JS, SQL, data) is declared
    package data, so a wheel carries it: its directory is a package setuptools finds and a
    ``package-data`` pattern matches its name (declared, not left to include-package-data's
    guesses). The folders the app reads templates and static files from are among them, and
    the image copies them."""
    import fnmatch
    import tomllib

    from setuptools import find_namespace_packages

    from api.officer import STATIC_DIR as OFFICER_STATIC
    from api.officer.pages import TEMPLATES as OFFICER_TEMPLATES
    from api.public.assets import OWN_STATIC as PUBLIC_STATIC
    from api.public.render import TEMPLATES as PUBLIC_TEMPLATES

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    find = config["packages"]["find"]
    assert find.get("namespaces", True), "template folders without __init__.py need namespaces"
    found = set(find_namespace_packages(where=str(ROOT), include=find["include"]))
    patterns: list[str] = config["package-data"]["*"]

    shipped: set[Path] = set()
    for pkg in _PACKAGES:
        for path in (ROOT / pkg).rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".py", ".pyc"):
                continue
            package = ".".join(path.parent.relative_to(ROOT).parts)
            assert package in found, f"{path.relative_to(ROOT)}: {package} is not a package"
            assert any(fnmatch.fnmatch(path.name, p) for p in patterns), (
                f"{path.relative_to(ROOT)} matches no [tool.setuptools.package-data] pattern"
            )
            shipped.add(path)
    for folder, kinds in (
        (OFFICER_TEMPLATES, {".html"}),
        (PUBLIC_TEMPLATES, {".html"}),
        (OFFICER_STATIC, {".css", ".js"}),
        (PUBLIC_STATIC, {".css", ".mjs"}),
    ):
        files = {p for p in folder.iterdir() if p.suffix in kinds}
        assert files and files <= shipped, folder
        top = folder.relative_to(ROOT).parts[0]
        assert f"COPY {top} ./{top}" in (ROOT / "Dockerfile").read_text()
