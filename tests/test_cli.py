"""The console script's dispatch: the command list, every registered command's --help (exit 0, its
usage line, one-line description and examples) and every example command line in a command's
module docstring, parsed by that command's own parser.

    python -m pytest -q tests/test_cli.py
"""
import shlex
import subprocess
import sys

import pytest

from deepretrieval.cli import COMMANDS, command_parser, main, usage_examples


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_lists_every_command_and_no_bench_command(capsys):
    out = subprocess.run([sys.executable, "-m", "deepretrieval", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    listed = [line.split()[0] for line in out.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    assert listed == list(COMMANDS)
    assert "bench" not in COMMANDS and "python -m bench.<name>" in out.stdout
    with pytest.raises(SystemExit) as exc:          # benchmarks are modules, not a command
        main(["bench"])
    assert exc.value.code == 2 and "invalid choice: 'bench'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: deepretrieval {name} ")
    description = COMMANDS[name][1]
    assert "\n" not in description and f"\n\n{description}\n\n" in out
    module, _ = command_parser(name)
    examples = usage_examples(module)
    assert any(x.startswith(f"deepretrieval {name} ") for x in examples)
    assert out.rstrip().endswith("examples:\n" + "\n".join(f"  {x}" for x in examples))


def docstring_command_lines() -> list[tuple[str, str]]:
    """(command module, example line) for each `deepretrieval ...` line of every usage block."""
    return [(module, line) for module, _ in COMMANDS.values()
            for line in usage_examples(__import__(f"deepretrieval.commands.{module}", fromlist=["_"]))
            if line.startswith("deepretrieval ")]


def test_usage_examples_are_the_docstrings_first_indented_block():
    from deepretrieval.commands import generate
    assert usage_examples(generate) == [
        'deepretrieval generate --model smollm2-135m --prompt "What is BM25?" --chat',
        'deepretrieval generate --model /models/Qwen2.5-3B-Instruct --prompt "..." --chat --device cuda '
        '--dtype bfloat16 --temperature 0.7 --top-p 0.9 --seed 0 --json']


@pytest.mark.parametrize("where,line", docstring_command_lines())
def test_docstring_examples_parse(where, line):
    argv = shlex.split(line, comments=True)[1:]
    assert argv[0] in COMMANDS, f"{where}: {line}"
    _, parser = command_parser(argv[0])
    parser.parse_intermixed_args(argv[1:])          # an unknown option or a bad value: SystemExit 2
