"""Every subcommand's every flag has help text and shows its default; mistyped commands and flags get a
suggestion and the usage line."""

from __future__ import annotations

import argparse

import pytest

from tidal import cli



def walk(parser: argparse.ArgumentParser, prog: str):
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{prog} {name}")


def all_parsers():
    out = []
    for name in cli.COMMANDS:
        top = cli.build_parser(only=name)
        sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        out += list(walk(sub, f"tidal {name}"))
    return out


PARSERS = all_parsers()


@pytest.mark.parametrize("prog,parser", PARSERS, ids=[p for p, _ in PARSERS])
def test_every_flag_has_help_and_shows_its_default(prog, parser):
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"{prog}: {action.option_strings or action.dest} has no help text"
        default = action.default
        if action.option_strings and not cli._empty(default) and action.nargs != 0:
            shown = cli.HelpFormatter(prog)._get_help_string(action) % {"default": default}
            assert "default" in shown.lower(), f"{prog}: {action.option_strings} does not show its default"
    assert "usage:" in text


@pytest.mark.parametrize("word,choices,expected", [
    ("sever", cli.COMMANDS, "serve"),
    ("evnets", cli.COMMANDS, "events"),
    ("nodepol", cli.COMMANDS, "nodepool"),
    ("--limt", ["--limit", "--object", "--watch"], "--limit"),
    ("--outptu", ["-o", "--output"], "--output"),
    ("xyzzy", cli.COMMANDS, None),
])
def test_suggestions(word, choices, expected):
    assert cli.suggest(word, choices) == expected


@pytest.mark.parametrize("argv,usage,said", [
    (["sever"], "usage: tidal [-h]", "did you mean serve?"),
    (["events", "--limt", "5"], "usage: tidal events", "--limt: did you mean --limit?"),
    (["serve", "lst"], "usage: tidal serve", "did you mean list?"),
    (["serve", "get", "x", "--outptu", "json"], "usage: tidal serve get", "did you mean --output?"),
    (["top", "--wach"], "usage: tidal top", "did you mean --watch?"),
])
def test_a_mistake_names_the_command_its_usage_and_the_closest_word(argv, usage, said, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and said in err and "Traceback" not in err
    assert f"tidal {argv[0]}" in err or argv[0] == "sever"


def test_help_shows_defaults():
    top = cli.build_parser(only="events")
    events = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices["events"]
    assert "(default: 200)" in events.format_help()
