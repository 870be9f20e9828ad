"""Numeric ranges (`sadetr.core.ranges`): one definition per number, refused in one line on the CLI (exit 2,
before any work), in the service limits and in the HTTP schemas; non-finite values refused everywhere."""

from __future__ import annotations

import math

import pytest

from sadetr.cli.main import build_parser, main
from sadetr.core import ranges
from sadetr.core.errors import ConfigError
from sadetr.serve.limits import LIMIT_RANGES, Limits


@pytest.mark.parametrize(
    ("rng", "value", "ok"),
    [
        (ranges.PORT, 1, True),
        (ranges.PORT, 65535, True),
        (ranges.PORT, 0, False),
        (ranges.PORT, 65536, False),
        (ranges.PORT, 80.0, False),  # a float is not an integer
        (ranges.PORT, True, False),  # nor is a bool
        (ranges.TIMEOUT_S, 0.0, False),  # lower bound excluded
        (ranges.TIMEOUT_S, 1e-9, True),
        (ranges.TIMEOUT_S, 86_400, True),  # an int is a valid number
        (ranges.TIMEOUT_S, math.nan, False),
        (ranges.TIMEOUT_S, math.inf, False),
        (ranges.ALPHA, 0.0, True),  # lower bound included
        (ranges.ALPHA, -5.0, False),
        (ranges.ALPHA, "5", False),
    ],
)
def test_a_range_accepts_its_kind_within_its_bounds_and_nothing_else(rng, value, ok):
    assert rng.ok(value) is ok
    if ok:
        assert rng.check(value, "--x") == value
    else:
        with pytest.raises(ConfigError, match=r"^--x: must be "):
            rng.check(value, "--x")


def test_pydantic_bounds_are_the_ranges_bounds():
    assert ranges.TIMEOUT_S.field() == {"gt": 0.0, "le": 86_400.0, "allow_inf_nan": False}
    assert ranges.TOP.field() == {"ge": 1, "le": 1000}


CLI_CASES = [
    (["serve", "--checkpoint", "m.ckpt", "--max-upload-mb", "nan"], "--max-upload-mb"),
    (["serve", "--checkpoint", "m.ckpt", "--max-upload-mb", "inf"], "--max-upload-mb"),
    (["serve", "--checkpoint", "m.ckpt", "--max-video-s", "-1"], "--max-video-s"),
    (["serve", "--checkpoint", "m.ckpt", "--port", "99999"], "--port"),
    (["serve", "--checkpoint", "m.ckpt", "--threads", "-1"], "--threads"),
    (["serve", "--checkpoint", "m.ckpt", "--timeout-s", "nan"], "--timeout-s"),
    (["serve", "--checkpoint", "m.ckpt", "--max-pending", "0"], "--max-pending"),
    (["serve", "--checkpoint", "m.ckpt", "--max-query-chars", "0"], "--max-query-chars"),
    (["app", "--checkpoint", "m.ckpt", "--port", "0"], "--port"),
    (["app", "--checkpoint", "m.ckpt", "--top-k", "0"], "--top-k"),
    (["app", "--checkpoint", "m.ckpt", "--timeout-s", "inf"], "--timeout-s"),
    (["index", "--checkpoint", "m.ckpt", "--features", "f", "--out", "OUT", "--window", "0"], "--window"),
    (["index", "--checkpoint", "m.ckpt", "--features", "f", "--out", "OUT", "--stride", "0"], "--stride"),
    (["search", "--index", "IDX", "--query-features", "q.npz", "--alpha", "nan"], "--alpha"),
    (["search", "--index", "IDX", "--query-features", "q.npz", "--alpha", "inf"], "--alpha"),
    (["search", "--index", "IDX", "--query-features", "q.npz", "--alpha", "-5"], "--alpha"),
    (["search", "--index", "IDX", "--query-features", "q.npz", "--top", "0"], "--top"),
    (["search", "--index", "IDX", "--query-features", "q.npz", "--k-windows", "0"], "--k-windows"),
    (
        ["evaluate-corpus", "--index", "IDX", "--annotations", "a", "--text-features", "t", "--alpha", "nan"],
        "--alpha",
    ),
    (
        ["evaluate-corpus", "--index", "IDX", "--annotations", "a", "--text-features", "t", "--alpha", "-5"],
        "--alpha",
    ),
]


@pytest.mark.parametrize(("argv", "flag"), CLI_CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CLI_CASES])
def test_cli_refuses_a_number_out_of_range_in_one_line_before_any_work(
    argv, flag, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # relative paths of the cases: nothing may be created here
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sadetr {argv[0]}: error: {flag}: must be "), err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # e.g. no index folder OUT was started


def test_every_service_limit_has_a_range_and_non_finite_limits_are_refused():
    assert set(LIMIT_RANGES) == set(Limits.__dataclass_fields__)
    for name in LIMIT_RANGES:
        for bad in (math.nan, math.inf, -1, 0):
            with pytest.raises(ConfigError, match=f"^{name}: must be "):
                Limits(**{name: bad})
    Limits(max_upload_mb=0.5, timeout_s=1, max_pending=1)  # small but valid


def test_index_help_states_the_window_default_it_uses():
    from sadetr.corpus.index import DEFAULT_WINDOW, windowing

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["index"]
    sub.format_help()  # the lazy parser adds the command's arguments now
    window = next(a for a in sub._actions if a.dest == "window")
    assert f"default {DEFAULT_WINDOW}" in window.help
    assert windowing(None, None)[0] == DEFAULT_WINDOW


def test_serve_and_app_listen_on_the_loopback_by_default():
    for command in ("serve", "app"):
        args = build_parser().parse_args([command, "--checkpoint", "m.ckpt"])
        assert args.host == "127.0.0.1"


def test_docstring_examples_hold() -> None:
    import doctest

    import sadetr.core.extras
    import sadetr.core.query_text
    import sadetr.corpus.demo_library
    import sadetr.webapp.render

    for module in (
        ranges,
        sadetr.core.query_text,
        sadetr.corpus.demo_library,
        sadetr.core.extras,
        sadetr.webapp.render,
    ):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
