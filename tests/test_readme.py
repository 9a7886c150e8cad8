"""The README's examples, run: each `signoff check` against a real `signoff serve` on the
bundled rules, `signoff dev-keys`, and the Python snippet, compared with what the README shows."""

from __future__ import annotations

import os
import re
import selectors
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from signoff.client.masking import key_id
from signoff.keys import derive
from tests.conftest import REPO, RULES
from tests.server.harness import REDIS_URL, drop_prefix

README = REPO / "README.md"
# The service's hash key while the README's commands run; `<key id>` in the README stands for
# the key id that follows from it, whatever the key derivation.
HASH_KEY = "readme-example-hash-key-0123456789abcdef"
# Values that differ on every machine or call; the README shows them as these placeholders.
PLACEHOLDERS = {
    "<decision id>": r"[0-9a-f-]{36}",
    "<revision>": r"[0-9a-f]{64}",
    "<approval id>": r"apr_\S+",
    "<key id>": re.escape(key_id(derive(HASH_KEY.encode(), "masking"))),
}
EXIT_CODE = re.compile(r"^\(exit code (\d+)\)$")
# The commands whose printed lines the README shows under them.
RUN = ("signoff check ", "signoff dev-keys ")
STARTUP_SECONDS = 20.0


@dataclass(frozen=True)
class Example:
    command: str
    output: tuple[str, ...]
    exit_code: int

    def __str__(self) -> str:
        return self.command


def shell_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def examples(text: str) -> list[Example]:
    """Each command of RUN in the README's sh blocks, with the `# ` lines printed under it."""
    found = []
    for block in shell_blocks(text, "sh"):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith(RUN):
                i += 1
                continue
            command = lines[i]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + lines[i].strip()
            i += 1
            shown = []
            while i < len(lines) and lines[i].startswith("#"):
                shown.append(lines[i].removeprefix("#").removeprefix(" "))
                i += 1
            code = 0
            if shown and (m := EXIT_CODE.match(shown[-1])):
                code = int(m.group(1))
                shown.pop()
            if shown:  # a command shown without its output (`...` for the rest) is not run
                found.append(Example(command, tuple(shown), code))
    return found


def matches(shown: str) -> re.Pattern[str]:
    """The printed line a README line stands for: literal, but for its placeholders."""
    parts = re.split("(" + "|".join(map(re.escape, PLACEHOLDERS)) + ")", shown)
    return re.compile("".join(PLACEHOLDERS.get(p, re.escape(p)) for p in parts))


EXAMPLES = examples(README.read_text(encoding="utf-8"))


def test_the_readme_shows_every_verdict_with_its_output() -> None:
    checks = [e for e in EXAMPLES if e.command.startswith("signoff check ")]
    assert len(checks) == 5
    assert {e.output[0].split()[-1] for e in checks} == {
        "ALLOW",
        "MASK",
        "REQUIRE_APPROVAL",
        "DENY",
    }
    assert any(e.command.startswith("signoff dev-keys ") for e in EXAMPLES)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """`signoff serve` on the bundled rules, with the README's hash key, on a free port."""
    prefix = f"signoff-test:readme:{uuid.uuid4().hex}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env |= {"SIGNOFF_HASH_KEY": HASH_KEY, "SIGNOFF_REDIS_PREFIX": prefix, "REDIS_URL": REDIS_URL}
    env["SIGNOFF_HTTP_ADDRESS"] = "127.0.0.1:0"  # the default 8080 may be taken
    serve = [sys.executable, "-m", "signoff.cli", "serve", "--rules", str(RULES)]
    process = subprocess.Popen(
        [*serve, "--address", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=STARTUP_SECONDS)
        line = process.stdout.readline() if ready else ""
        listening = re.match(r"signoff listening on (\S+:\d+) ", line)
        assert listening, f"no listening line: {line!r}"
        yield listening.group(1)
    finally:
        process.terminate()
        process.communicate(timeout=STARTUP_SECONDS)
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)


def run(command: str, address: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    assert argv[0] == "signoff"
    # The README's commands name no address: they find the service through SIGNOFF_ADDRESS.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env["SIGNOFF_ADDRESS"] = address
    return subprocess.run(
        [sys.executable, "-m", "signoff.cli", *argv[1:]],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_each_readme_command_prints_what_the_readme_shows(
    example: Example, address: str, tmp_path: Path
) -> None:
    result = run(example.command, address, tmp_path)

    printed = result.stdout.splitlines()
    assert len(printed) == len(example.output), result.stdout + result.stderr
    for shown, line in zip(example.output, printed, strict=True):
        assert matches(shown).fullmatch(line), f"README: {shown!r}\nprinted: {line!r}"
    assert result.returncode == example.exit_code, result.stderr


def test_the_readme_python_snippet_runs_and_prints_what_it_says(address: str) -> None:
    section = README.read_text(encoding="utf-8").split("## Calling it from code", 1)[1]
    [snippet, *_] = shell_blocks(section, "python")
    printed = re.search(r"^# prints: (.*)$", snippet, flags=re.M)
    assert printed is not None
    assert "127.0.0.1:50051" in snippet
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}

    result = subprocess.run(
        [sys.executable, "-c", snippet.replace("127.0.0.1:50051", address)],
        env=env,
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == printed.group(1) + "\n"
