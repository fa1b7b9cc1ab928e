"""Every snippet in README.md and docs/*.md is exercised.

Conventions for writers:

- Every ```` ```python ```` block of a page runs, in order, in one namespace per page, with a fresh temporary
  directory as the working directory and no ``CLOUD_TASKS_EMULATOR_HOST``. A block right after the line
  ``<!-- snippet: no-run -->`` is only compiled (for code that needs Google Cloud, a network or a secret).
- ```` ```sh ```` blocks are checked, not run: each ``runner`` command (also ``python -m local_runner``)
  must name existing subcommands and options, each ``make`` target must exist in the Makefile, each
  ``python -m`` module must exist, a ``gunicorn`` command's config module and app must import, and each
  ``gcloud tasks queues create|update`` may only use the flags the runner's gcloud-style CLI mirrors.
- Some pages get an extra check on what their snippets built (:data:`PAGE_CHECKS`).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from local_runner.cli import main as runner_cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_RUN = "<!-- snippet: no-run -->"
SHELL = {"sh", "bash", "shell", "console"}
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    lang: str
    code: str
    #: Line of the first code line, 1-based.
    line: int
    run: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The page's fenced blocks, with list-item indentation removed."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, start = len(opening["indent"]), index + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        code = "\n".join(line[indent:] for line in lines[start:end]) + "\n"
        marked = index > 0 and lines[index - 1].strip() == NO_RUN
        found.append(Block(page, opening["lang"].lower(), code, start + 1, run=not marked))
        index = end + 1
    return found


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- python blocks ---------------------------------------------------------------------------------


def readme_handler_fails_closed(namespace: dict[str, Any]) -> None:
    """The README's example app refuses a task request without a token, before running anything."""
    app = namespace["app"]
    response = app.test_client().post("/tasks/send-welcome-email", json={"user_id": 42})
    assert response.status_code == 401


PAGE_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "README.md": readme_handler_fails_closed,
}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = [block for block in blocks(page) if block.lang in ("python", "py")]
    if not python:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLOUD_TASKS_EMULATOR_HOST", raising=False)
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for block in python:
        # Leading newlines make tracebacks point at the page's own line numbers.
        code = compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")
        if block.run:
            exec(code, namespace)
    check = PAGE_CHECKS.get(page_id(page))
    if check is not None:
        check(namespace)


def test_the_block_parser_sees_markers_and_indented_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\nx = 1\n```\n"
        f"{NO_RUN}\n```python\nraise SystemExit\n```\n"
        "- item:\n\n  ```sh\n  runner serve\n  ```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.lang, b.code, b.line, b.run) for b in found] == [
        ("python", "x = 1\n", 3, True),
        ("python", "raise SystemExit\n", 7, False),
        ("sh", "runner serve\n", 12, True),
    ]


# -- shell blocks ----------------------------------------------------------------------------------


def commands(code: str) -> Iterator[list[str]]:
    """Each simple command of a shell block as tokens (continuations joined, comments and env stripped)."""
    text = re.sub(r"\\\n", " ", code)
    for line in text.splitlines():
        tokens = shlex.split(line, comments=True)
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token in ("&&", "||", "|", ";"):
                while command and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", command[0]):
                    command.pop(0)
                if command:
                    yield command
                command = []
            else:
                command.append(token)


def program(tokens: list[str]) -> tuple[str, list[str]]:
    """``(name, arguments)``; ``python -m local_runner`` counts as ``runner``."""
    name = tokens[0].rsplit("/", 1)[-1]
    if re.fullmatch(r"python(3(\.\d+)?)?", name) and tokens[1:2] == ["-m"] and len(tokens) > 2:
        module = tokens[2]
        return ("runner", tokens[3:]) if module == "local_runner" else (f"python -m {module}", tokens[3:])
    return name, tokens[1:]


def check_click(command: click.Command, args: list[str], where: str) -> None:
    """Every subcommand in ``args`` exists and every option is one its command accepts."""
    path = [command.name or "runner"]
    rest = list(args)
    while True:
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        options.add("--help")
        if not isinstance(command, click.Group):
            break
        while rest and rest[0].startswith("-"):
            assert rest.pop(0).split("=")[0] in options, f"{where}: {' '.join(path)} has no {args}"
        if not rest:
            return
        names = rest.pop(0).split("|")  # `runner queues pause|resume ...` documents alternatives
        found = [command.commands.get(name) for name in names]
        assert all(found), f"{where}: `{' '.join(path)}` has no subcommand {names}"
        path.append(names[0])
        subcommands = [sub for sub in found if sub is not None]
        for other in subcommands[1:]:
            check_click(other, rest, where)
        command = subcommands[0]
    for token in rest:
        if token.startswith("-") and token != "-":
            name = token.split("=")[0]
            assert name in options, f"{where}: `{' '.join(path)}` has no option {name}"


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {name for match in re.finditer(r"^([\w .-]+):(?!=)", text, re.M) for name in match[1].split()}


def check_gunicorn(args: list[str], where: str) -> None:
    """The config module (``--config python:X``) and the app (``module:factory()``) import."""
    config = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("-c", "--config")]
    for value in config:
        if value.startswith("python:"):
            assert importlib.util.find_spec(value.removeprefix("python:")), f"{where}: no module {value}"
    apps = [arg for arg in args if re.fullmatch(r"[\w.]+:\w+(\(\))?", arg)]
    assert apps, f"{where}: gunicorn without an app"
    for app in apps:
        module, _, attribute = app.partition(":")
        assert hasattr(importlib.import_module(module), attribute.removesuffix("()")), f"{where}: no {app}"


def gcloud_queue_flags() -> set[str]:
    """Flags of ``gcloud tasks queues create`` that the runner's ``queues create`` mirrors."""
    create = runner_cli.commands["queues"].commands["create"]  # type: ignore[attr-defined]
    return {opt for param in create.params for opt in param.opts if opt != "--endpoint"}


def check_shell(tokens: list[str], where: str) -> None:
    name, args = program(tokens)
    if name == "runner":
        check_click(runner_cli, args, where)
    elif name == "make":
        targets = [arg for arg in args if not arg.startswith("-") and "=" not in arg]
        missing = set(targets) - make_targets()
        assert not missing, f"{where}: no make target {sorted(missing)}"
    elif name.startswith("python -m "):
        module = name.removeprefix("python -m ")
        assert module in ("pip", "venv", "pytest") or importlib.util.find_spec(module), f"{where}: {module}"
    elif name == "gunicorn":
        check_gunicorn(args, where)
    elif name == "gcloud" and args[:2] == ["tasks", "queues"] and args[2:3] in (["create"], ["update"]):
        flags = {arg.split("=")[0] for arg in args if arg.startswith("--")}
        assert flags <= gcloud_queue_flags(), (
            f"{where}: unknown queue flags {sorted(flags - gcloud_queue_flags())}"
        )


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_shell_commands_exist(page: Path) -> None:
    shell = [block for block in blocks(page) if block.lang in SHELL]
    if not shell:
        pytest.skip("no shell blocks")
    for block in shell:
        for tokens in commands(block.code):
            check_shell(tokens, block.where)


@pytest.mark.parametrize(
    "command",
    [
        "runner serve --no-such-flag",
        "runner queues frobnicate emails",
        "python -m local_runner serve --queue q.yaml",
        "make no-such-target",
        "gcloud tasks queues create q --max-dispatch-per-second=5",
        "gunicorn 'sample_worker.app:no_such_factory()'",
    ],
)
def test_the_shell_check_catches_mistakes(command: str) -> None:
    [tokens] = list(commands(command))
    with pytest.raises(AssertionError):
        check_shell(tokens, "test")


def test_the_shell_check_accepts_real_commands() -> None:
    for command in [
        "FOO=1 .venv/bin/runner queues pause|resume emails --endpoint http://x && make demo",
        "python -m local_runner serve --port 0 --queues q.yaml -v",
        "gcloud tasks queues create emails --location=us-central1 --max-attempts=5 --min-backoff=1s",
    ]:
        for tokens in commands(command):
            check_shell(tokens, "test")


# -- pages and links -------------------------------------------------------------------------------


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [page.name for page in PAGES[1:] if f"](docs/{page.name})" not in readme]
    assert missing == [], "add a line for each under '## Documentation' in README.md"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    targets = re.findall(r"\]\((?!https?://|#|mailto:)([^)#\s]+)", text)
    broken = [target for target in targets if not (page.parent / target).exists()]
    assert broken == []


def test_queue_flags_in_the_deploy_guide_match_the_sample_queue_file() -> None:
    """The gcloud commands create on Cloud Tasks the same queues that ``make demo`` uses locally."""
    page = ROOT / "docs" / "deploy-cloud-run.md"
    flags: dict[str, dict[str, str]] = {}
    for block in blocks(page):
        if block.lang in SHELL:
            for tokens in commands(block.code):
                if tokens[:4] == ["gcloud", "tasks", "queues", "create"]:
                    values = dict(arg.removeprefix("--").split("=", 1) for arg in tokens[5:] if "=" in arg)
                    flags[tokens[4]] = values
    spec = yaml.safe_load((ROOT / "sample_worker" / "queues.yaml").read_text(encoding="utf-8"))
    expected = {
        queue["name"]: {
            re.sub(r"([A-Z])", r"-\1", key).lower(): str(value)
            for section in ("rateLimits", "retryConfig")
            for key, value in queue[section].items()
        }
        for queue in spec["queues"]
    }
    assert {
        name: {k: v for k, v in values.items() if k in expected.get(name, {})}
        for name, values in flags.items()
    } == expected


def test_env_vars_in_the_deploy_guide_are_read_by_the_worker() -> None:
    from sample_worker.config import VARIABLES

    text = (ROOT / "docs" / "deploy-cloud-run.md").read_text(encoding="utf-8")
    assigned = set(re.findall(r"\b((?:TASKTOOLKIT|SAMPLE)_[A-Z_]+)=", text))
    assert assigned, "the guide sets no variables"
    assert assigned <= set(VARIABLES)


def test_no_page_sets_the_emulator_host_for_production() -> None:
    text = (ROOT / "docs" / "deploy-cloud-run.md").read_text(encoding="utf-8")
    assert "CLOUD_TASKS_EMULATOR_HOST=" not in text
