"""The `augforge` command line: one entry point (``main``), a sub-command per job.

The commands live by family, each parser next to its handler: ``data`` (ingest, inspect, report, balance,
build, preview), ``training`` (train, tune, search-policy, ablate, lr-find, evaluate), ``models`` (export,
quantize, models); ``options`` holds what several share. Start-up stays light: a handler imports its job when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from augforge import __version__
from augforge.cli import data, dense, models, training
from augforge.errors import AugforgeError, OptionError

#: The sub-commands in ``augforge --help`` order, each added by its family's ``add_<name>``.
COMMANDS = [data.add_ingest, data.add_inspect, data.add_report, data.add_balance, data.add_build, data.add_preview,
            data.add_audit, dense.add_export_data, dense.add_preview_data,
            training.add_train, training.add_tune, training.add_search_policy, models.add_export, models.add_quantize,
            training.add_ablate, training.add_crossfit, training.add_lr_find, training.add_evaluate, models.add_models]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="augforge",
        description="Clean, rebalance and augment datasets into Arrow shards; report class imbalance.",
    )
    parser.add_argument("--version", action="version", version=f"augforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for add in COMMANDS:
        add(sub)
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)  # flag_of reads the command's own options from it
    return parser


def flag_of(args: argparse.Namespace, option: str) -> str:
    """How the user spells a library option on this command: ``--name-with-dashes`` where the command has
    that flag (its usage line lists it), the option's own name otherwise (a recipe key, say)."""
    flag = f"--{option.replace('_', '-')}"
    usage = args.command_parser.format_usage().replace("[", " ").replace("]", " ").split()
    return flag if flag in usage else option


def main(argv: list[str] | None = None) -> int:
    """Run the command line; bad input prints one line and returns a non-zero status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OptionError as exc:  # the library names its parameter; the user typed the flag
        print(f"augforge {args.command}: error: {exc.render(lambda name: flag_of(args, name))}", file=sys.stderr)
        return 1
    except AugforgeError as exc:
        print(f"augforge {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"augforge {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        from augforge.datasets.writer import DISK_FULL

        if exc.errno not in DISK_FULL:
            raise
        print(f"augforge {args.command}: error: {exc.filename or 'a file'}: {os.strerror(exc.errno).lower()}; "
              "free space and rerun", file=sys.stderr)
        return 1
