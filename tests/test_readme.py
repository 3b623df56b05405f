"""README.md's and docs/*.md's commands as users copy them: the cheap ones (`--help`) run, the expensive ones
(training, the demo, generation) are checked for being well-formed without running them: the module or script
exists and its argument parser accepts the arguments; `train.py`'s Hydra overrides compose (groups and keys exist).
README's Python blocks compile and their imports resolve; its relative links exist; it stays a short guide."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import runpy
import shlex
import sys
import warnings
from pathlib import Path
from typing import Callable

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from main.config import register_resolvers
from tests.conftest import ROOT

README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
TEST_COMMAND = ["python", "-m", "pytest", "-q"]
MAX_README_LINES = 250


def fenced_blocks(path: Path, languages: tuple[str, ...]) -> list[str]:
    """The bodies of `path`'s fenced code blocks in one of `languages`."""
    return [body for language, body in FENCE.findall(path.read_text()) if language in languages]


def shell_commands(block: str) -> list[list[str]]:
    """A shell block's commands as argument lists: backslash continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block)
    return [argv for argv in (shlex.split(line, comments=True) for line in joined.splitlines()) if argv]


def commands_of(path: Path) -> list[list[str]]:
    """Every shell command in `path`'s fenced blocks."""
    return [argv for block in fenced_blocks(path, SHELL_LANGUAGES) for argv in shell_commands(block)]


ALL_COMMANDS = [(path.relative_to(ROOT).as_posix(), argv) for path in DOCUMENTS for argv in commands_of(path)]


def command_id(entry: tuple[str, list[str]]) -> str:
    """A readable test id: the document and the start of the command."""
    document, argv = entry
    return f"{document}: {' '.join(argv)[:70]}"


class ParsedArguments(Exception):
    """Raised instead of running a command once its argument parser accepted the arguments."""


def run_entry_point(argv: list[str]) -> Callable[[], object]:
    """A callable that runs `python -m <module> ...` or `python <script> ...` in this process."""
    if argv[1] == "-m":
        module, args = argv[2], argv[3:]
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        sys.argv = [module, *args]
        return lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)
    script, args = ROOT / argv[1], argv[2:]
    assert script.is_file(), f"no script {argv[1]}"
    sys.argv = [str(script), *args]
    return lambda: runpy.run_path(str(script), run_name="__main__")


def run_quietly(runner: Callable[[], object]) -> None:
    """Run an entry point without runpy's warning about modules other tests already imported."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*found in sys.modules.*")
        runner()


def check_hydra_overrides(overrides: list[str]) -> None:
    """`python train.py <overrides>` composes: every group, option and key it names exists."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    for section in ("model", "datamodule"):  # the trainer's output folder resolves only in a Hydra run
        OmegaConf.to_container(cfg[section], resolve=True)


@pytest.mark.parametrize("entry", ALL_COMMANDS, ids=[command_id(e) for e in ALL_COMMANDS])
def test_command_is_runnable_or_well_formed(entry, monkeypatch, capsys):
    document, argv = entry
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    if argv[0] == "pip":
        assert argv[:3] == ["pip", "install", "-r"] and (ROOT / argv[3]).is_file()
    elif argv[0] == "bash":
        assert (ROOT / argv[1]).is_file()
    elif argv[:3] == ["python", "-m", "pytest"]:
        assert argv[3:] and all(arg.startswith("-") or (ROOT / arg.split("::")[0]).exists() for arg in argv[3:])
    elif argv[:2] == ["python", "train.py"]:
        check_hydra_overrides(argv[2:])
    elif argv[0] == "python" and argv[-1] == "--help":  # cheap: run it
        with pytest.raises(SystemExit) as exit_info:
            run_quietly(run_entry_point(argv))
        assert exit_info.value.code in (0, None) and "usage:" in capsys.readouterr().out
    elif argv[0] == "python":  # expensive: parse its arguments, then stop
        original_parse_args = argparse.ArgumentParser.parse_args

        def parse_and_stop(self, args=None, namespace=None):
            raise ParsedArguments(original_parse_args(self, args, namespace))

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        runner = run_entry_point(argv)
        try:
            run_quietly(runner)
        except SystemExit as error:  # argparse rejected the arguments
            pytest.fail(f"{document}: `{' '.join(argv)}` is rejected: {capsys.readouterr().err.strip()}")
        except ParsedArguments:
            return
        pytest.fail(f"{document}: `{' '.join(argv)}` never parsed its arguments")
    else:
        pytest.fail(f"{document}: no check for `{' '.join(argv)}`; add one to tests/test_readme.py")


def test_readme_holds_the_demo_the_tests_and_the_training_commands():
    commands = commands_of(README)
    assert ["python", "-m", "main.demo", "--out", "demo"] in commands
    assert TEST_COMMAND in commands
    assert any(argv[:2] == ["python", "train.py"] for argv in commands)
    assert any(argv[-1] == "--help" for argv in commands)  # at least one command really runs


def test_ci_runs_the_readme_test_command():
    assert " ".join(TEST_COMMAND) in (ROOT / ".ci/run").read_text().splitlines()


def test_readme_python_blocks_compile_and_their_imports_resolve():
    blocks = fenced_blocks(README, ("python",))
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
                assert not missing, f"{node.module} has no {missing}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)


@pytest.mark.parametrize("document", DOCUMENTS, ids=[p.relative_to(ROOT).as_posix() for p in DOCUMENTS])
def test_relative_links_exist(document):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
        if not re.match(r"[a-z]+://", target):
            assert (document.parent / target).exists(), f"{document.name} links to missing {target}"


def test_readme_is_a_short_guide_dated_by_commits():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    assert not re.search(r"\bsessions?\b", text, re.IGNORECASE)
