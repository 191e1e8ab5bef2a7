"""The deployment files in deploy/ agree with the code.

Nobody can build the image or apply the manifests where the suite runs (no Docker engine, no Kubernetes, no GPU),
so what they state is checked against what the code uses: the Triton release of the bundled server, the ports of
:class:`engine.serving.server.ServerPorts`, Triton's health endpoints, the model repository the server is given and
the volume it is mounted from, and every ``FINSCORE_*`` name against :class:`engine.settings.Settings`. The
launcher the image runs (deploy/serve.py) is tested here too, without a server.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import shlex
from dataclasses import fields
from importlib.metadata import metadata, requires, version
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from engine.serving.server import ServerPorts, TritonServer
from engine.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
NAME = re.compile(r"\bFINSCORE_[A-Z0-9_]*[A-Z0-9]\b")

#: The NVIDIA Triton container release each nvidia-pytriton release takes its tritonserver from, and that
#: container's Python. nvidia-pytriton 0.7.0 builds from nvcr.io/nvidia/tritonserver:24.10 (its Makefile's
#: TRITONSERVER_IMAGE_VERSION) and embeds Triton 2.51.0 (its CHANGELOG); Triton's build.py maps 2.51.0 to container
#: 24.10, which is Ubuntu 22.04 with Python 3.10. A new nvidia-pytriton pin needs its line here.
CONTAINER_OF_PYTRITON = {"0.7.0": ("24.10", "3.10")}
#: Triton's HTTP health endpoints (KServe v2 protocol).
LIVE, READY = "/v2/health/live", "/v2/health/ready"


# --- reading the files ------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """deploy/Dockerfile as (INSTRUCTION, arguments): comments dropped, continued lines joined (as Docker does)."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        name, _, args = (pending + text).partition(" ")
        found.append((name.upper(), args.strip()))
        pending = ""
    assert not pending, "deploy/Dockerfile ends inside a continued line"
    return found


def instruction(name: str) -> list[str]:
    return [args for n, args in dockerfile() if n == name]


def only(name: str) -> str:
    found = instruction(name)
    assert len(found) == 1, f"deploy/Dockerfile should have one {name}, has {len(found)}"
    return found[0]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instruction("ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def image_volumes() -> set[str]:
    return {v for args in instruction("VOLUME") for v in json.loads(args)}


def image_cmd() -> list[str]:
    cmd = json.loads(only("CMD"))
    assert isinstance(cmd, list), "CMD should be in exec (JSON) form, so that signals reach the launcher"
    return cmd


def flag(argv: list[str], name: str) -> str:
    """The one value ``--name=value`` in ``argv``."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} should be given once, is given {len(values)} times in {argv}"
    return values[0]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """The Kubernetes objects in deploy/kubernetes by (kind, name); the kustomization is not one."""
    objects = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def pod() -> dict[str, Any]:
    return manifests()[("Deployment", "finscore")]["spec"]["template"]


def container() -> dict[str, Any]:
    (only_container,) = pod()["spec"]["containers"]
    return only_container


def pod_env() -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container().get("env", [])}


def mounts_by_source() -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    """Each mount path of the container: (its volume's kind, the volume source, the mount)."""
    volumes = {v["name"]: v for v in pod()["spec"]["volumes"]}
    found = {}
    for mount in container()["volumeMounts"]:
        volume = volumes[mount["name"]]
        (kind,) = (k for k in volume if k != "name")
        found[mount["mountPath"]] = (kind, volume[kind], mount)
    return found


def container_port(port: int | str) -> int:
    """A probe's or service's port, a number or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert port in named, f"port {port!r} is not a port of the container ({sorted(named)})"
    return named[port]


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("finscore_deploy_serve", DEPLOY / "serve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_ports() -> dict[str, int]:
    ports = ServerPorts()
    return {"http": ports.http, "grpc": ports.grpc, "metrics": ports.metrics}


# --- the image -------------------------------------------------------------------------------------------------


def bundled_container() -> tuple[str, str]:
    """The container release (and its Python) of the tritonserver the installed nvidia-pytriton bundles."""
    pytriton = version("nvidia-pytriton")
    assert pytriton in CONTAINER_OF_PYTRITON, f"nvidia-pytriton {pytriton}: add its Triton container to the table"
    return CONTAINER_OF_PYTRITON[pytriton]


def test_base_image_is_the_container_of_the_bundled_triton() -> None:
    tag, _ = bundled_container()
    assert only("FROM") == f"nvcr.io/nvidia/tritonserver:{tag}-py3"


def test_the_containers_python_is_one_finscore_supports() -> None:
    _, python = bundled_container()
    requires_python = metadata("finscore")["Requires-Python"]
    assert SpecifierSet(requires_python).contains(python), f"requires-python {requires_python} excludes {python}"


def test_the_image_installs_the_serving_extras_with_numpy_below_2() -> None:
    (install,) = [args for args in instruction("RUN") if "pip install" in args and "/src[" in args]
    named = re.search(r"/src\[([a-z,]+)\]", install)
    assert named is not None, "the image should install finscore with extras: '/src[...]'"
    extras = set(named.group(1).split(","))
    assert extras <= set(metadata("finscore").get_all("Provides-Extra") or [])
    assert "backend" in extras, "the served models import what finscore[backend] installs"
    assert "serve" not in extras, "finscore[serve] adds nvidia-pytriton's tritonserver, which the image never runs"
    assert "'numpy<2'" in install, "Triton 2.51's python backend passes zeros with numpy 2"
    numpy = next(Requirement(r) for r in requires("finscore") or [] if Requirement(r).name == "numpy")
    assert not numpy.specifier.contains("2.0"), "finscore's own numpy pin and the image's should agree"


def test_the_image_runs_the_launcher_it_copies() -> None:
    cmd = image_cmd()
    copies = [shlex.split(args) for args in instruction("COPY")]
    assert ["deploy/serve.py", cmd[1]] in copies
    assert cmd[0] == "python3" and (DEPLOY / "serve.py").is_file()
    assert flag(cmd, "--model-control-mode") == "explicit"


def test_the_image_exposes_and_serves_the_servers_ports() -> None:
    expected = expected_ports()
    s = Settings()  # `finscore serve`'s defaults, which the server's must equal
    assert (s.http_port, s.grpc_port, s.metrics_port) == (expected["http"], expected["grpc"], expected["metrics"])
    assert {int(p) for args in instruction("EXPOSE") for p in args.split()} == set(expected.values())
    cmd = image_cmd()
    assert {role: int(flag(cmd, f"--{role}-port")) for role in expected} == expected


def test_the_healthcheck_asks_triton_if_ready_where_finscore_does() -> None:
    (check,) = re.findall(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/\S*)", only("HEALTHCHECK"))
    assert (int(check[0]), check[1]) == (expected_ports()["http"], READY)
    assert READY in inspect.getsource(TritonServer._ready)


def test_the_model_repository_and_finscore_home_are_volumes_of_the_image() -> None:
    env, volumes = image_env(), image_volumes()
    repository = flag(image_cmd(), "--model-repository")
    assert repository == env[env_name("repo")]
    assert repository in volumes
    assert env[env_name("home")] in volumes


# --- the Kubernetes manifests ----------------------------------------------------------------------------------


def test_the_pod_runs_what_the_image_runs() -> None:
    assert "command" not in container(), "NVIDIA's entrypoint (the driver check) should stay"
    assert container()["args"] == image_cmd()


def test_the_pod_declares_the_servers_ports_and_the_service_exposes_them() -> None:
    expected = expected_ports()
    args = container()["args"]
    assert {role: int(flag(args, f"--{role}-port")) for role in expected} == expected
    assert {p["name"]: p["containerPort"] for p in container()["ports"]} == expected
    service = manifests()[("Service", "finscore")]["spec"]
    assert {p["name"]: (p["port"], container_port(p["targetPort"])) for p in service["ports"]} == {
        role: (port, port) for role, port in expected.items()
    }
    assert service["selector"] == pod()["metadata"]["labels"]


def test_probes_ask_tritons_health_endpoints_on_the_http_port() -> None:
    c = container()
    probes = {kind: c[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == READY
    assert probes["livenessProbe"]["path"] == LIVE
    assert probes["startupProbe"]["path"] in {LIVE, READY}
    assert {container_port(p["port"]) for p in probes.values()} == {expected_ports()["http"]}


def test_prometheus_scrapes_the_metrics_port() -> None:
    annotations = pod()["metadata"]["annotations"]
    assert all(isinstance(v, str) for v in annotations.values()), "Kubernetes takes annotation values as strings"
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(expected_ports()["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_model_repository_given_to_the_server_is_the_claimed_volume() -> None:
    repository = flag(container()["args"], "--model-repository")
    mounts = mounts_by_source()
    assert repository in mounts, f"{repository} is not where a volume is mounted ({sorted(mounts)})"
    kind, source, mount = mounts[repository]
    assert kind == "persistentVolumeClaim" and not mount.get("readOnly"), "the fraud model writes its state there"
    assert ("PersistentVolumeClaim", source["claimName"]) in manifests()
    assert pod_env()[env_name("repo")]["value"] == repository


def test_finscore_home_is_a_claimed_volume() -> None:
    home = pod_env()[env_name("home")]["value"]
    kind, source, _ = mounts_by_source()[home]
    assert kind == "persistentVolumeClaim", "the audit log must outlive the pod"
    assert ("PersistentVolumeClaim", source["claimName"]) in manifests()
    assert home == image_env()[env_name("home")]


def test_key_files_come_from_a_secret_and_secrets_are_never_written_out() -> None:
    env, mounts = pod_env(), mounts_by_source()
    key_files = [env_name(f.name) for f in fields(Settings) if f.name.endswith("_key_file")]
    given = [name for name in key_files if name in env]
    assert env_name("audit_key_file") in given
    for name in given:
        folder = str(Path(env[name]["value"]).parent)
        assert folder in mounts, f"{name} points into {folder}, where nothing is mounted"
        kind, _, mount = mounts[folder]
        assert kind == "secret" and mount.get("readOnly"), f"{name} should be read from a Secret, read-only"
    secret = {env_name(f.name) for f in fields(Settings) if not f.repr}  # the settings left out of repr
    assert not [name for name in secret if "value" in env.get(name, {})], "a secret setting is written in the manifest"


def test_every_finscore_variable_in_the_deployment_files_is_a_setting() -> None:
    known = {env_name(f.name) for f in fields(Settings)}
    found = {
        name: str(path.relative_to(ROOT))
        for path in sorted(DEPLOY.rglob("*"))
        if path.is_file()
        for name in NAME.findall(path.read_text(encoding="utf-8", errors="replace"))
    }
    unknown = {name: where for name, where in found.items() if name not in known}
    assert not unknown, f"FINSCORE_* names that are no field of Settings: {unknown}"
    assert env_name("home") in found, "the scan found no FINSCORE_HOME: it looks in the wrong place"


def test_the_pod_asks_for_one_gpu() -> None:
    resources = container()["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources.get("requests", {}).get("nvidia.com/gpu", 1) == 1  # when given, equal to the limit


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    kinds = {kind for kind, _ in manifests()}
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= kinds


# --- the launcher (deploy/serve.py) ------------------------------------------------------------------------------


def _trained(repo: Path, model: str) -> None:
    (repo / model / "1").mkdir(parents=True)
    (repo / model / "config.pbtxt").write_text(f'name: "{model}"\n', encoding="utf-8")
    (repo / model / "1" / "model.py").write_text("", encoding="utf-8")


def test_the_launcher_loads_every_trained_model_and_no_other(launcher: ModuleType, tmp_path: Path) -> None:
    _trained(tmp_path, "fraud")
    _trained(tmp_path, "churn")
    (tmp_path / "threat").mkdir()
    (tmp_path / "threat" / "model.py").write_text("", encoding="utf-8")  # a shell, never trained
    flags = [f"--model-repository={tmp_path}", "--model-control-mode=explicit", "--http-port=8000"]
    assert launcher.command(flags) == ["tritonserver", *flags, "--load-model=churn", "--load-model=fraud"]
    named = [*flags, "--load-model=churn"]
    assert launcher.command(named) == ["tritonserver", *named]


def test_the_launcher_refuses_what_it_cannot_serve_in_one_sentence(launcher: ModuleType, tmp_path: Path) -> None:
    explicit = "--model-control-mode=explicit"
    with pytest.raises(SystemExit, match="^Error: give --model-repository=PATH"):
        launcher.command([explicit])
    with pytest.raises(SystemExit, match="^Error: give --model-control-mode=explicit"):
        launcher.command([f"--model-repository={tmp_path}"])
    with pytest.raises(SystemExit, match="s3://bucket/repo cannot be listed from here: give --load-model=MODEL$"):
        launcher.command(["--model-repository=s3://bucket/repo", explicit])
    bucket = ["--model-repository", "s3://bucket/repo", explicit, "--load-model", "churn"]
    assert launcher.command(bucket) == ["tritonserver", *bucket]
    with pytest.raises(SystemExit, match="does not exist"):
        launcher.command([f"--model-repository={tmp_path / 'missing'}", explicit])
    with pytest.raises(SystemExit, match="has no trained model"):
        launcher.command([f"--model-repository={tmp_path}", explicit])
