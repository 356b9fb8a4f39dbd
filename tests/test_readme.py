"""The README is what a new user runs first: it stays short, its commands run as written,
and every figure it quotes is found in the page or raw result it links to.

Commands that take more than a minute (install + demo, the full test suite, a training
run on COCO) are checked through `posemum COMMAND --help`: each option the README shows
must be one the command has. Short ones run for real: `presets`, `doctor`, the Python API
example (on tiny synthetic data and a random-weight checkpoint laid out where `posemum
demo` writes its run), and `synth` (slow lane).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 200
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
LINK = re.compile(r"\]\(([^)\s]+)\)")
GROUPS = ("convert",)  # commands with subcommands


def readme() -> str:
    return README.read_text(encoding="utf-8")


def fenced(lang: str) -> list[str]:
    """Bodies of the README's fenced blocks in `lang` ("" for blocks without one)."""
    return [body for tag, body in FENCE.findall(readme()) if tag == lang]


def shell_commands() -> list[str]:
    """Every command line of the bash blocks (continuations joined, `&&` chains split),
    then every `posemum ...` shown inline in the text."""
    commands = []
    for block in fenced("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            commands += [part.strip() for part in line.split("&&") if part.strip()
                         and not part.strip().startswith("#")]
    return commands + re.findall(r"`(posemum [^`]+)`", FENCE.sub("", readme()))


def posemum_calls() -> list[tuple[str, list[str], str]]:
    """(subcommand, its --options, the command line) for each `posemum` call shown,
    including `.venv/bin/posemum` and `torchrun ... -m posemum_deploy.cli`."""
    calls = []
    for command in shell_commands():
        tokens = shlex.split(command, comments=True)
        for i, token in enumerate(tokens):
            module = token == "posemum_deploy.cli" and tokens[i - 1] == "-m"
            if token.endswith("posemum") or module:
                sub, rest = tokens[i + 1], tokens[i + 2:]
                if sub in GROUPS:  # `posemum convert yolo2coco ...`: the options are the leaf's
                    sub, rest = f"{sub} {rest[0]}", rest[1:]
                options = [t.split("=")[0] for t in rest if t.startswith("--")]
                calls.append((sub, options, command))
                break
    return calls


def posemum_cli() -> list[str]:
    script = Path(sys.executable).with_name("posemum")
    return [str(script)] if script.exists() else [sys.executable, "-m", "posemum_deploy.cli"]


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([*posemum_cli(), *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@cache
def help_options(subcommand: str) -> frozenset[str]:
    done = run_cli(*subcommand.split(), "--help")
    assert done.returncode == 0, f"posemum {subcommand} --help failed:\n{done.stderr}"
    return frozenset(re.findall(r"--[a-z0-9][a-z0-9-]*", done.stdout))


def test_readme_is_short() -> None:
    lines = len(readme().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines (at most {MAX_LINES}): move to docs/"


def test_readme_shows_every_command() -> None:
    shown = {sub for sub, _, _ in posemum_calls()}
    for command in ("synth", "train", "presets", "evaluate", "export", "label", "merge",
                    "visualize", "rounds", "demo", "doctor", "import", "convert yolo2coco",
                    "calibrate", "plot"):
        assert command in shown, f"README shows no `posemum {command}`"


def test_test_command_is_the_one_ci_runs() -> None:
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.startswith("python3 -m venv")]
    assert len(ci) == 1, ".ci/run should hold one `python3 -m venv ...` command line"
    bash = "\n".join(fenced("bash"))
    assert ci[0] in bash.splitlines(), f"the README's test command differs from .ci/run's: {ci[0]}"
    assert '.venv/bin/pip install -q -e ".[cpu]" && .venv/bin/posemum demo' in bash


def test_slow_lane_marker_is_declared() -> None:
    assert '-m "not slow"' in readme()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^\s*"slow:', pyproject, re.MULTILINE), "pyproject.toml has no `slow` marker"


@pytest.mark.parametrize("subcommand", sorted({sub for sub, _, _ in posemum_calls()}))
def test_options_shown_exist(subcommand: str) -> None:
    known = help_options(subcommand)
    for sub, options, command in posemum_calls():
        if sub == subcommand:
            unknown = [o for o in options if o not in known]
            assert not unknown, f"`posemum {sub}` has no {unknown} (README: {command})"


@pytest.mark.parametrize("args", [("presets",), ("doctor",)])
def test_quick_commands_run(args: tuple[str, ...]) -> None:
    assert any(sub == args[0] for sub, _, _ in posemum_calls())
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert ("pose-mum-plus" if args[0] == "presets" else "onnxruntime") in done.stdout


@pytest.mark.slow
def test_synth_command_runs_as_written(tmp_path: Path) -> None:
    line = next(c for c in shell_commands() if c.startswith("posemum synth"))
    args = shlex.split(line, comments=True)[1:]
    done = run_cli(*args, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    out = tmp_path / args[1]
    count = int(args[args.index("--images") + 1])
    assert (out / "annotations.json").is_file()
    assert len(list((out / "images").glob("*.jpg"))) == count


def test_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             checkpoint_builder: Callable[..., Path],
                             capsys: pytest.CaptureFixture[str]) -> None:
    """The API example on a tiny val set and checkpoint where `posemum demo` puts them."""
    from posemum_deploy.data.synthetic import generate_dataset

    (example,) = fenced("python")
    val = tmp_path / "runs" / "demo" / "data" / "val"
    generate_dataset(val, 4, seed=5, max_people=2)
    ckpt = tmp_path / "runs" / "demo" / "run" / "checkpoints" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    checkpoint_builder(ckpt)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    # The README's own code, run as a user would paste it.
    exec(compile(example, "README.md (python example)", "exec"), scope)  # noqa: S102
    printed = capsys.readouterr().out.splitlines()
    assert 0.0 <= float(printed[0]) <= 1.0  # the AP of a random-weight model
    assert scope["results"], "predict_coco returned no people"
    summary = scope["summary"]
    assert summary.images == 4 and summary.persons > 0
    assert (tmp_path / "labels" / "manifest.json").is_file()
    assert printed[1].startswith(f"{summary.images} {summary.persons} ")


def section(title: str) -> str:
    text = readme()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def linked_files(chunk: str) -> list[Path]:
    paths = [REPO / target.split("#")[0] for target in LINK.findall(chunk)
             if not target.startswith("http")]
    return [p for p in paths if p.is_file()]


def numbers(chunk: str) -> set[str]:
    return set(NUMBER.findall(LINK.sub("]", chunk)))


def found_in(number: str, text: str) -> bool:
    """`number` as a whole number in `text` (0.23 is not found in 10.235)."""
    return re.search(rf"(?<!\d)(?<!\d[.,]){re.escape(number)}(?!\d)(?![.,]\d)", text) is not None


def test_readme_links_resolve() -> None:
    for target in LINK.findall(readme()):
        if target.startswith("http"):
            continue
        path, _, anchor = target.partition("#")
        assert (REPO / path).exists(), f"README links to {path}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (REPO / path).read_text(encoding="utf-8"),
                              re.MULTILINE)
            slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
            assert anchor in slugs, f"{path} has no heading for #{anchor}"


def test_result_numbers_match_linked_files() -> None:
    """Each paragraph or table of "Results at a glance" links its source (a table uses its
    caption's links); every number in it must appear in one of those files."""
    links: list[Path] = []
    chunks = [c for c in section("Results at a glance").split("\n\n") if c.strip()][1:]
    for chunk in chunks:
        links = linked_files(chunk) or links
        if not numbers(chunk):
            continue
        assert links, f"no link to docs/ or benchmarks/results/ for: {chunk[:80]}"
        texts = [p.read_text(encoding="utf-8") for p in links]
        missing = [n for n in numbers(chunk) if not any(found_in(n, t) for t in texts)]
        names = [str(p.relative_to(REPO)) for p in links]
        assert not missing, f"README numbers {missing} not in {names} (paragraph: {chunk[:80]}...)"


def test_demo_output_matches_docs() -> None:
    """The demo's output shown in the README is the one docs/benchmarks.md records."""
    docs = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    (output,) = fenced("")
    assert output in docs, "the README's demo output differs from docs/benchmarks.md's"
