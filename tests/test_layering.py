"""The import rules of the architecture (docs/architecture.md): the two halves meet only on the wire.

The one exception: ``tasktoolkit/testing.py`` (FakeQueue) runs the runner's pure core in process.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_packages(package: str) -> dict[str, set[str]]:
    """Map each module file of ``package`` to the top-level names and full modules it imports."""
    result: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        result[str(path.relative_to(ROOT))] = names
    return result


def offenders(package: str, forbidden: tuple[str, ...], only: str = "") -> list[str]:
    return [
        f"{path} imports {name}"
        for path, names in imported_packages(package).items()
        if path.startswith(only or package)
        for name in names
        if name == forbidden or name.startswith(tuple(f"{f}." for f in forbidden)) or name in forbidden
    ]


#: What FakeQueue may use of the runner: its pure core (no server, no network, no CLI).
FAKE_MAY_IMPORT = (
    "local_runner.model",
    "local_runner.errors",
    "local_runner.engine",
    "local_runner.service",
    "local_runner.store.memory",
    "local_runner.codec",
    "local_runner.clock",
    "local_runner.oidc",
    "local_runner.api.rest",
    "local_runner.api.request",
    "local_runner.api.routing",
    "local_runner.api.task_inserts",
    "local_runner.cloud_scheduler.model",
    "local_runner.cloud_scheduler.cron",
    "local_runner.cloud_scheduler.firing",
)
#: What the pytest plugin's ``local_runner`` fixture imports, inside the fixture (a test aid, like FakeQueue).
PLUGIN_MAY_IMPORT = ("local_runner.server", "local_runner.config", "local_runner.clock")
#: Never loaded by ``import tasktoolkit.testing`` (``click`` comes with Flask; the runner's CLI must not).
NOT_IN_THE_CORE = (
    "aiohttp",
    "httptools",
    "grpc",
    "yaml",
    "local_runner.cli",
    "local_runner.server",
    "local_runner.scheduler",
    "local_runner.dispatch",
    "local_runner.http_client",
    "local_runner.api.views",
)


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("local_runner", ("tasktoolkit", "sample_worker")),
        ("tasktoolkit", ("local_runner", "sample_worker")),
        ("sample_worker", ("local_runner",)),
    ],
)
def test_halves_never_import_each_other(package: str, forbidden: tuple[str, ...]) -> None:
    allowed = FAKE_MAY_IMPORT if package == "tasktoolkit" else ()
    plugin_allowed = PLUGIN_MAY_IMPORT if package == "tasktoolkit" else ()
    bad = [
        line
        for line in offenders(package, forbidden)
        if not (
            line.startswith("tasktoolkit/testing.py imports ") and line.rpartition(" ")[2].startswith(allowed)
        )
        and not (
            line.startswith("tasktoolkit/pytest_plugin.py imports ")
            and line.rpartition(" ")[2] in plugin_allowed
        )
    ]
    assert bad == []


def test_the_pytest_plugin_imports_the_runner_only_inside_its_fixture() -> None:
    """pytest loads the plugin for every run: the module itself must not load the runner or the fake."""
    tree = ast.parse((ROOT / "tasktoolkit/pytest_plugin.py").read_text(encoding="utf-8"))
    top_level = {
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("local_runner")
    }
    assert top_level == set()
    code = "import sys, tasktoolkit.pytest_plugin; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    assert "tasktoolkit.pytest_plugin" in loaded
    assert [m for m in loaded if m.startswith(("local_runner", "tasktoolkit.testing"))] == []


def test_the_fake_queue_loads_only_the_runners_pure_core() -> None:
    code = "import sys, tasktoolkit.testing; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    assert "local_runner.service" in loaded  # the check sees the core
    assert [
        m for m in loaded if m in NOT_IN_THE_CORE or m.startswith(tuple(f"{n}." for n in NOT_IN_THE_CORE))
    ] == []


#: Never loaded by the runner's management commands (``runner queues ...``): they only speak HTTP.
NOT_IN_THE_MANAGEMENT_COMMANDS = ("aiohttp", "grpc", "local_runner.server", "local_runner.scheduler")


def test_the_management_commands_do_not_load_the_server() -> None:
    """``runner queues list`` starts without the server; only the body of ``runner serve`` imports it."""
    code = (
        "import sys, click, local_runner.cli as cli\n"
        "ctx = click.Context(cli.main)\n"
        "assert cli.main.get_command(ctx, 'queues').get_command(ctx, 'list') is not None\n"
        "assert 'max_connections_per_host' in [p.name for p in cli.main.get_command(ctx, 'serve').params]\n"
        "cli.main(['queues', 'list', '--help'], standalone_mode=False)\n"
        "print('LOADED', ' '.join(sorted(sys.modules)))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    loaded = output.rpartition("LOADED ")[2].split()
    assert "local_runner.cli.queues" in loaded  # the check sees the command
    prefixes = tuple(f"{name}." for name in NOT_IN_THE_MANAGEMENT_COMMANDS)
    assert [m for m in loaded if m in NOT_IN_THE_MANAGEMENT_COMMANDS or m.startswith(prefixes)] == []
    importers = [
        path
        for path, names in imported_packages("local_runner/cli").items()
        if "local_runner.server" in names
    ]
    assert importers == ["local_runner/cli/serve.py"]
    serve_tree = ast.parse((ROOT / "local_runner/cli/serve.py").read_text(encoding="utf-8"))
    top_level = {node.module for node in serve_tree.body if isinstance(node, ast.ImportFrom)}
    assert "local_runner.server" not in top_level


def test_engine_imports_only_model_errors_and_codec_scalars() -> None:
    """The engine is sans-IO; it may format times with the (stdlib-only) codec's scalars."""
    allowed_local = (
        "local_runner.model",
        "local_runner.errors",
        "local_runner.engine",
        "local_runner.codec.scalars",
    )
    bad = [
        f"{path} imports {name}"
        for path, names in imported_packages("local_runner/engine").items()
        for name in names
        if name.startswith("local_runner") and not name.startswith(allowed_local)
    ]
    assert bad == []


def test_the_console_reads_the_dispatch_loop_through_a_protocol() -> None:
    """The console needs a queue's pacing and the recorded attempts, not the scheduler itself."""
    importers = [
        path
        for path, names in imported_packages("local_runner/console").items()
        if "local_runner.scheduler" in names
    ]
    assert importers == []


def test_engine_and_store_do_no_network_io() -> None:
    for package in ("local_runner/engine", "local_runner/store"):
        assert offenders(package, ("aiohttp", "httptools", "requests", "socket", "urllib.request")) == []


def test_library_core_modules_import_no_flask() -> None:
    for module in ("tasktoolkit/headers.py", "tasktoolkit/oidc.py", "tasktoolkit/dedup"):
        if (ROOT / module).exists():
            assert offenders("tasktoolkit", ("flask", "werkzeug"), only=module) == []


def test_the_layering_check_sees_imports() -> None:
    """Guard against a vacuous pass: the scan must find the runner's real imports."""
    imports = imported_packages("local_runner")
    assert "local_runner.model" in imports["local_runner/service/tasks.py"]
    assert "httptools" in imports["local_runner/http_client.py"]


def import_cycles(package: str) -> list[list[str]]:
    """The cycles among ``package``'s modules (deferred imports inside functions count too).

    A submodule naming its own package (``from pkg import x``) is not a cycle: the package is loaded first.
    """
    graph: dict[str, set[str]] = {}
    for path, names in imported_packages(package).items():
        module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        graph[module] = {
            name for name in names if name.startswith(f"{package}.") and not module.startswith(f"{name}.")
        }
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycles.append([*trail[trail.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return cycles


@pytest.mark.parametrize("package", ["tasktoolkit", "local_runner"])
def test_no_import_cycles(package: str) -> None:
    assert import_cycles(package) == []


def test_every_tasktoolkit_setting_is_named_in_config_only() -> None:
    """``tasktoolkit/config.py`` owns the ``TASKTOOLKIT_*`` keys; code elsewhere uses its names."""
    keys = {
        node.value
        for path in sorted((ROOT / "tasktoolkit").rglob("*.py"))
        if path.name != "config.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and str(node.value).startswith("TASKTOOLKIT_")
    }
    assert keys == set()


#: Small shared definitions: one per half (the halves never import each other, so each may hold one).
SHARED_NAMES = (
    "JsonObject",
    "snake",
    "camel",
    "USER_AGENT",
    "ApiError",
    "EMULATOR_HOST_ENV",
    "PROPAGATION_HEADER",
    "TRACE_FIELD",
    "LABELS_FIELD",
)


@pytest.mark.parametrize("package", ["tasktoolkit", "local_runner"])
def test_small_shared_definitions_are_defined_once_per_half(package: str) -> None:
    where: dict[str, list[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                names = [node.name]
            else:
                continue
            for name in set(names) & set(SHARED_NAMES):
                where.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


def test_the_runner_has_one_exception_root() -> None:
    from local_runner.cli.client import ClientError
    from local_runner.errors import RunnerError

    assert issubclass(ClientError, RunnerError)
