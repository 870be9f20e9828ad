"""`sadetr reproduce TABLE`: the commands that reproduce each row of one of the paper's tables.

Every row is a `sadetr train` (or, for Figure 5, one `sadetr compare`) on the QVHighlights config with the
row's preset on top of the `paper` recipe (`--recipe tuned` prints the rows on the tuned recipe). Nothing
is run: the commands are printed, one per line, for a shell script or a job scheduler. Extra `--config`
files (e.g. the dataset's own paths) and `--set` overrides are passed on to every command.
"""

from __future__ import annotations

import argparse
import shlex

from sadetr.config.presets import TABLES, table_rows
from sadetr.core.errors import ConfigError

SEEDS_TABLE12 = "0,1,2,3,2018"  # Table 12: the seeds of the paper's statistical analysis


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="print the commands that reproduce a table of the paper",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("table", nargs="?", help=f"one of: {', '.join([*TABLES, 'table12'])}; none: list them")
    p.add_argument("--config", action="append", default=[], help="extra config files for every command")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--recipe", default="paper", help="the recipe underneath every row (paper | tuned)")
    p.add_argument("--out", default="runs", help="parent folder of the runs (default: runs)")
    p.set_defaults(func=run)


def row_commands(table: str, configs: list[str], overrides: list[str], recipe: str, out: str) -> list[str]:
    """The shell commands of every row of `table` (a key of `TABLES`, or table12)."""
    from sadetr.config.recipes import get_recipe

    get_recipe(recipe)  # an unknown recipe is refused before anything is printed
    shared = ["--config", "qvhighlights_sfc"]
    for config in configs:
        shared += ["--config", config]
    if recipe != "paper":
        shared += ["--recipe", recipe]
    for override in overrides:
        shared += ["--set", override]
    if table == "table12":
        return [shlex.join(["sadetr", "train", *shared, "--seeds", SEEDS_TABLE12, "--out", f"{out}/table12"])]
    rows = table_rows(table)
    if table == "fig5":  # one training per curve, tabulated and plotted together (mAP per epoch)
        models = ",".join([*rows, "qd_detr", "moment_detr"])
        extra = ["--set", "train.eval_every=1"]
        return [
            shlex.join(["sadetr", "compare", "--models", models, *shared, *extra, "--out", f"{out}/fig5"])
        ]
    return [
        shlex.join(
            ["sadetr", "train", *shared, "--preset", row, "--out", f"{out}/{table}/{row.split('.', 1)[1]}"]
        )
        for row in rows
    ]


def run(args: argparse.Namespace) -> int:
    if not args.table:
        for table, title in {**TABLES, "table12": "Table 12: five seeds of the full model"}.items():
            print(f"{table:8s} {title}")
        return 0
    if args.table != "table12" and args.table not in TABLES:
        raise ConfigError(f"unknown table {args.table!r}; valid: {', '.join([*TABLES, 'table12'])}", "table")
    for line in row_commands(args.table, args.config, args.overrides, args.recipe, args.out):
        print(line)
    return 0
