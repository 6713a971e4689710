"""The user docs run from a fresh clone: every shell command in README.md, docs/*.md and config/README.md
that reads a file names one that exists relative to the repository root (or one an earlier command of the
same page created), and no doc sends the reader outside the repository."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.paths import ROOT

DOCS = [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "do", "then", "else", "{", "}"}
# options whose value is a path the command reads
SHIFTPROXY_FILE_OPTIONS = {"-f", "--filename", "--config", "--istio-samples", "--steps"}
COMMANDS = ("shiftproxy", ".venv/bin/shiftproxy", "python", "curl", "docker", "cat", "cp", "nc", "make", "for",
            "export")


@dataclass
class Command:
    doc: Path
    line: int
    text: str


@dataclass
class Page:
    """What the commands of one page have set (variables) and created (files and directories) so far."""

    env: dict[str, str] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)


def fenced_commands(doc: Path) -> list[Command]:
    """Commands of ```sh/```console blocks (console: the `$ ` lines) and inline `code` that starts like one;
    continuation lines joined, here-document bodies skipped."""
    out: list[Command] = []
    lines = doc.read_text().splitlines()
    fence: str | None = None
    pending: list[str] = []
    heredoc: str | None = None
    start = 0
    for number, raw in enumerate(lines, 1):
        if raw.startswith("```"):
            fence = None if fence is not None else (raw[3:].strip() or "text")
            continue
        if heredoc is not None:
            heredoc = None if raw.strip() == heredoc else heredoc
            continue
        if fence in ("sh", "console", "shell", "bash"):
            line = raw
            if fence == "console" and not pending:
                if not raw.startswith("$ "):
                    continue
                line = raw[2:]
            if not pending:
                start = number
            pending.append(line.rstrip("\\").rstrip() if line.endswith("\\") else line)
            if line.endswith("\\"):
                continue
            text = " ".join(p.strip() for p in pending)
            pending = []
            if text.strip() and not text.lstrip().startswith("#"):
                out.append(Command(doc, start, text))
                if m := re.search(r"<<-?\s*['\"]?(\w+)['\"]?", text):
                    heredoc = m.group(1)
        elif fence is None:
            for span in re.findall(r"`([^`]+)`", raw):
                span = span.replace("\\|", "|")
                if span.split(" ", 1)[0] in COMMANDS and " " in span:
                    out.append(Command(doc, number, span))
    return out


def placeholder(token: str) -> bool:
    """FILE, DIR_OR_FILE, NAME, …, <app>, [--config …]: syntax, not a path."""
    return (bool(re.search(r"\b[A-Z][A-Z_]{2,}\b", token)) or any(c in token for c in "…<>[]{}|*")
            or token.startswith("-"))


def simple_commands(tokens: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for token in tokens:
        if token in SEPARATORS:
            out.append([])
        else:
            out[-1].append(token)
    return [c for c in out if c]


def reads(cmd: list[str], page: Page) -> list[str]:
    """The paths this simple command reads; records what it creates and the variables it sets."""
    paths: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(cmd):
        token = cmd[i]
        if token in ("<", "<<", ">", ">>", ">&", "2>", "&>") and i + 1 < len(cmd):
            if token == "<":
                paths.append(cmd[i + 1])
            elif token in (">", ">>"):
                page.created.add(cmd[i + 1])
            i += 2
            continue
        words.append(token)
        i += 1
    if words and words[0] == "export":
        words = words[1:]
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        page.env[name] = value
    if not words:
        return paths
    program, args = words[0], words[1:]
    if program in ("shiftproxy", ".venv/bin/shiftproxy") or words[:3] == ["python", "-m", "proxy"]:
        args = args[2:] if program == "python" else args
        for j, arg in enumerate(args):
            option, eq, value = arg.partition("=")
            if option in SHIFTPROXY_FILE_OPTIONS:
                target = value if eq else (args[j + 1] if j + 1 < len(args) else "")
                if target and target != "-":
                    paths.append(target)
        if args[:1] == ["validate"]:
            skip = False
            for arg in args[1:]:
                if not skip and not arg.startswith("-"):
                    paths.append(arg)
                skip = arg in ("-o", "--output")
    elif program == "cat" and args:
        paths += [a for a in args if not a.startswith("-")]
    elif program == "cp":
        sources = [a for a in args if not a.startswith("-")]
        paths += sources[:-1]
        page.created.update(sources[-1:])
    elif program == "mkdir":
        page.created.update(a for a in args if not a.startswith("-"))
    elif program == "curl":
        for j, arg in enumerate(args):
            if arg in ("--data-binary", "-d", "--data", "-T", "--upload-file") and j + 1 < len(args):
                value = args[j + 1]
                paths.append(value[1:] if value.startswith("@") else value if arg in ("-T", "--upload-file") else "")
    return [p for p in paths if p]


def expand(path: str, page: Page) -> str:
    def var(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in page.env:
            raise LookupError(f"${name} is used before the page sets it")
        return page.env[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", var, path)


def file_problems(doc: Path) -> list[str]:
    page = Page()
    problems = []
    for command in fenced_commands(doc):
        where = f"{doc.relative_to(ROOT)}:{command.line}: {command.text}"
        text = re.sub(r"<[a-z][\w-]*>", "PLACEHOLDER", command.text)  # `<app>`: syntax, not a redirection
        try:
            lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            problems.append(f"{where}: not a shell command ({exc})")
            continue
        for cmd in simple_commands(tokens):
            for path in reads(cmd, page):
                if placeholder(path):
                    continue
                try:
                    path = expand(path, page)
                except LookupError as exc:
                    problems.append(f"{where}: {exc}")
                    continue
                created = any(path == c or path.startswith(c.rstrip("/") + "/") for c in page.created)
                if Path(path).is_absolute() or not (ROOT / path).resolve().is_relative_to(ROOT.resolve()):
                    problems.append(f"{where}: {path} is outside the repository")
                elif not created and not (ROOT / path).exists():
                    problems.append(f"{where}: {path} does not exist in the repository")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_doc_command_reads_exists(doc: Path) -> None:
    if doc.name in ("README.md", "commands.md"):  # the walkthroughs: an extractor that finds nothing is broken
        assert fenced_commands(doc), f"no commands found in {doc}"
    assert file_problems(doc) == []


@pytest.mark.parametrize("doc", [*DOCS, ROOT / "Dockerfile", ROOT / "docker-compose.yml"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_points_outside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text and "shared/istio-samples" not in text


def test_the_checker_finds_missing_files_unset_variables_and_created_ones(tmp_path: Path) -> None:
    doc = ROOT / "docs" / ".check-docs-test.md"  # below ROOT so its name prints like a real page
    doc.write_text("""Run `shiftproxy validate config/steps/nope.yaml` first.

```sh
cp -r config/bookinfo my-config
shiftproxy run --config my-config --config config/bookinfo &
S=config/steps
cat > bad.yaml <<'EOF'
kind: nothing
EOF
```

```console
$ shiftproxy apply -f $S/virtual-service-reviews-v3.yaml -f bad.yaml
$ shiftproxy apply -f $T/x.yaml
$ curl -s --data-binary @missing.yaml http://127.0.0.1:15000/apply
output line shiftproxy apply -f not-a-command.yaml
$ docker compose exec -T client shiftproxy apply -f - < config/steps/gone.yaml
$ shiftproxy apply -f FILE
```
""")
    try:
        problems = file_problems(doc)
    finally:
        doc.unlink()
    assert [p.split(": ", 1)[0] + ": " + p.rsplit(": ", 1)[1] for p in problems] == [
        "docs/.check-docs-test.md:1: config/steps/nope.yaml does not exist in the repository",
        "docs/.check-docs-test.md:14: $T is used before the page sets it",
        "docs/.check-docs-test.md:15: missing.yaml does not exist in the repository",
        "docs/.check-docs-test.md:17: config/steps/gone.yaml does not exist in the repository",
    ]


def test_readme_containers_commands_are_the_ones_make_test_containers_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Containers\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]
    run = [line for line in (ROOT / "tests" / "containers" / "run.sh").read_text().splitlines()
           if not line.lstrip().startswith(("#", "say "))]  # lines that run, not the ones that print
    assert len(commands) >= 6
    missing = [c for c in commands if not any(c in line for line in run)]
    assert missing == [], "README Containers commands that tests/containers/run.sh does not run"


def test_no_product_code_points_outside_the_repository() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "proxy").rglob("*.py"))
                 if "../shared" in p.read_text() or '"shared"' in p.read_text()]
    assert offenders == []
