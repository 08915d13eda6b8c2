"""Hostile input: every case is refused with exit 2, one line on stderr (argparse's usage line may come
first), no traceback, and nothing written. No case starts a party: everything is checked before."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pibench.cli import main
from tests.conftest import ROOT

OK_MODEL = "model: {L: 2, H: 2, d: 16, T: 4}\n"
OK = OK_MODEL + "variants: [sm]\n"
BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + OK
)

# name -> (suite text, fragment of the one-line message); each is tried with `cost` and with `run`
SUITES = {
    "alias_bomb": (BOMB, "expands to more than 20000 YAML nodes"),
    "recursive_alias": ("a: &a [*a]\n" + OK, "an alias refers to a node that contains it"),
    "deep_nesting": ("x: " + "[" * 200 + "]" * 200 + "\n" + OK, "nested more than 32 levels deep"),
    "very_deep_nesting": ("x: " + "[" * 5000 + "]" * 5000 + "\n" + OK, "nested"),
    "huge_file": (OK + "#" * (300 * 1024) + "\n", "suites are at most 262144"),
    "not_utf8": (OK.encode() + b"# \xff\xfe\n", "is not UTF-8 text"),
    "name_escapes": ("name: ../../tmp/x\n" + OK, "name: must be 1 to 64 of A-Z a-z 0-9 . _ -"),
    "name_absolute": ("name: /etc/passwd\n" + OK, "name: must be"),
    "name_slash": ("name: a/b\n" + OK, "name: must be"),
    "name_nul": ('name: "a\\0b"\n' + OK, "name: must be"),
    "name_hidden": ("name: .x\n" + OK, "name: must be"),
    "name_too_long": ("name: " + "a" * 65 + "\n" + OK, "name: must be"),
    "name_number": ("name: 12\n" + OK, "name: Input should be a valid string"),
    "entry_name_escapes": (OK_MODEL + "variants: [{variant: sm, name: ../x}]\n", "variants[0].name: must be"),
    "seed_too_big": (OK + "seed: 9223372036854775808\n", "seed: Input should be less than or equal to"),
    "seed_negative": (OK + "seed: -1\n", "seed: Input should be greater than or equal to 0"),
    "seed_float": (OK + "seed: 1.5\n", "seed: Input should be a valid integer"),
    "L_zero": (
        "model: {L: 0, H: 2, d: 16, T: 4}\nvariants: [sm]\n",
        "model.L: Input should be greater than or equal to 1",
    ),
    "L_huge": ("model: {L: 1099511627776, H: 2, d: 16, T: 4}\nvariants: [sm]\n", "model.L: Input should be less than"),
    "T_negative": ("model: {L: 1, H: 2, d: 16, T: -5}\nvariants: [sm]\n", "model.T"),
    "d_string": ("model: {L: 1, H: 2, d: '16', T: 4}\nvariants: [sm]\n", "model.d: Input should be a valid integer"),
    "H_bool": ("model: {L: 1, H: true, d: 16, T: 4}\nvariants: [sm]\n", "model.H: Input should be a valid integer"),
    "model_list": ("model: [1, 2]\nvariants: [sm]\n", "model"),
    "variants_mapping": (OK_MODEL + "variants: {a: 1}\n", "variants"),
    "variants_number": (OK_MODEL + "variants: [123]\n", "variants[0]"),
    "variants_null": (OK_MODEL + "variants: [null]\n", "variants[0]"),
    "variants_empty": (OK_MODEL + "variants: []\n", "List should have at least 1 item"),
    "variants_too_many": (
        OK_MODEL + "variants: [" + ", ".join(f"{{variant: sm, name: s{i}}}" for i in range(300)) + "]\n",
        "List should have at most 256 items",
    ),
    "unknown_variant": (OK_MODEL + "variants: [sm_ln_gg]\n", "unknown variant 'sm_ln_gg' (did you mean 'sm_ln_g'?)"),
    "huge_variant_name": (OK_MODEL + "variants: [" + "x" * 10000 + "]\n", "unknown variant 'xxxxxxxx"),
    "overrides_list": (OK_MODEL + "variants: [{variant: sm, overrides: [1]}]\n", "overrides"),
    "override_unknown": (OK_MODEL + "variants: [{variant: sm, overrides: {attn: x}}]\n", "unknown key 'attn'"),
    "override_type": (OK_MODEL + "variants: [{variant: sm, overrides: {activation: 5}}]\n", "overrides.activation"),
    "override_dimension": (OK_MODEL + "variants: [{variant: sm, overrides: {L: 3}}]\n", "'L' is a dimension"),
    "override_cutoff_range": (OK_MODEL + "variants: [{variant: sm, overrides: {ffn_blocks_kept: 9}}]\n", "exceeds L=2"),
    "duplicate_entry": (OK_MODEL + "variants: [sm, sm]\n", "'sm' appears twice"),
    "indivisible_heads": ("model: {L: 1, H: 3, d: 16, T: 4}\nvariants: [sm]\n", "d=16 is not divisible by H=3"),
    "precision_too_high": (OK + "crypten: {precision_bits: 64}\n", "crypten.precision_bits"),
    "nan_setting": (
        OK + "crypten: {functions: {reciprocal_initial: .nan}}\n",
        "reciprocal_initial: Input should be a finite number",
    ),
    "inf_setting": (
        OK + "crypten: {functions: {sqrt_nr_initial: .inf}}\n",
        "sqrt_nr_initial: Input should be a finite number",
    ),
    "huge_iterations": (OK + "crypten: {functions: {exp_iterations: 100000}}\n", "exp_iterations"),
    "unknown_provider": (OK + "crypten: {provider: XYZ}\n", "crypten.provider"),
    "softmax_needs_tree_max": (
        OK + "crypten: {functions: {max_method: pairwise}}\n",
        "softmax: max_only needs a tree max_method",
    ),
    "settings_list": (OK + "crypten: [1]\n", "crypten"),
    "settings_typo": (OK + "crypten: {provder: TTP}\n", "unknown key 'provder' (did you mean 'provider'?)"),
    "unknown_backend": (OK + "backend: cryptn\n", "unknown backend 'cryptn' (did you mean 'crypten'?)"),
    "spu_field": (OK + "backend: spu\nspu: {field: FM32}\n", "spu.field"),
    "spu_fraction_bits": (OK + "spu: {fxp_fraction_bits: 0}\n", "spu.fxp_fraction_bits"),
    "spu_weights": (OK + "spu: {weights: public}\n", "spu.weights"),
    "spu_typo": (OK + "spu: {optimise_denominator_with_broadcast: true}\n", "unknown key 'optimise_denominator"),
    "zero_bandwidth": (OK + "network: {emulate: '0mbit,1ms'}\n", "bandwidth must be positive"),
    "unknown_profile": (OK + "network: {project: [nope]}\n", "network.project[0]: network profile 'nope'"),
    "profile_not_list": (OK + "network: {project: lan}\n", "network.project"),
    "non_text_key": ("1: 2\n" + OK, "keys must be text"),
    "top_level_list": ("- sm\n", "a suite must be a mapping"),
    "empty": ("", "a suite must be a mapping"),
    "only_comments": ("# nothing\n", "a suite must be a mapping"),
    "python_tag": (OK + "x: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    "unknown_key": (OK + "varients: []\n", "unknown key 'varients' (did you mean 'variants'?)"),
    "long_description": (OK + "description: " + "d" * 2000 + "\n", "description"),
    "bad_yaml": ("model: {L: 2\n", "invalid YAML"),
}

# name -> (argv with {suite}, {tmp}, {record} placeholders, fragment)
CALLS = {
    "timeout_zero": (["run", "{suite}", "--timeout", "0"], "--timeout: must be from 5 to 86400 seconds"),
    "timeout_negative": (["run", "{suite}", "--timeout=-1"], "--timeout: must be from 5 to 86400 seconds"),
    "timeout_nan": (["run", "{suite}", "--timeout", "nan"], "--timeout: must be from 5 to 86400 seconds"),
    "timeout_inf": (["run", "{suite}", "--timeout", "1e400"], "--timeout: must be from 5 to 86400 seconds"),
    "timeout_text": (["run", "{suite}", "--timeout", "soon"], "is not a number of seconds"),
    "timeout_too_short": (["run", "{suite}", "--timeout", "1"], "must be from 5 to 86400 seconds, not 1"),
    "party_timeout_nan": (
        ["party", "--rank", "1", "--rendezvous", "tcp://127.0.0.1:1", "{suite}", "--timeout", "nan"],
        "--timeout",
    ),
    "out_is_folder": (["run", "{suite}", "--out", "{tmp}"], "it is a folder"),
    "out_under_a_file": (["run", "{suite}", "--out", "{suite}/x.json"], "is not a writable folder"),
    "out_name_too_long": (["run", "{suite}", "--out", "{tmp}/" + "r" * 300 + ".json"], "the name is too long"),
    "unknown_emulation": (["run", "{suite}", "--emulate", "fast"], "network profile 'fast'"),
    "infinite_bandwidth": (["run", "{suite}", "--emulate", "9" * 400 + "gbit,1ms"], "bandwidth must be positive"),
    "endless_rtt": (["cost", "{suite}", "--predict", "--network", "1gbit,3600s"], "RTT must be at most 60 s"),
    "plot_into_a_file": (["run", "{suite}", "--plot", "{suite}"], "--plot '"),
    "run_bad_projection": (["run", "{suite}", "--network", "lann"], "network profile 'lann'"),
    "report_plot_into_a_file": (["report", "{record}", "--plot", "{suite}"], "is not a folder"),
    "suite_missing": (["run", "{tmp}/nope.yaml"], "not found"),
    "suite_is_folder": (["cost", "{tmp}"], "is not a regular file"),
    "suite_is_device": (["cost", "/dev/zero"], "is not a regular file"),
    "too_big_to_run": (["run", "{huge}"], "needs about"),
    "full_of_a_million_layers": (["run", "{deep}", "--full"], "--full would run 1000000 layers"),
    # issue 19's two suites: sampled, they build only what they measure and run; in full, refused at once
    "full_of_100000_narrow_layers": (["run", "{narrow}", "--full"], "--full would run 100000 layers"),
    "full_of_1000_wide_layers": (["run", "{wide}", "--full"], "(L=1000, H=16, d=1024, T=8) needs about 563 GiB"),
    "bad_rendezvous": (
        ["party", "--rank", "0", "--rendezvous", "127.0.0.1:80", "{suite}"],
        "is not of the form tcp://HOST:PORT",
    ),
    "rendezvous_port": (
        ["party", "--rank", "0", "--rendezvous", "tcp://127.0.0.1:99999", "{suite}"],
        "tcp://HOST:PORT",
    ),
    "rendezvous_injection": (["party", "--rank", "0", "--rendezvous", "tcp://a b:1", "{suite}"], "tcp://HOST:PORT"),
    "rank_without_dealer": (
        ["party", "--rank", "2", "--rendezvous", "tcp://127.0.0.1:1", "{suite}"],
        "--rank 2: backend crypten",
    ),
    "rank_negative": (["party", "--rank=-1", "--rendezvous", "tcp://127.0.0.1:1", "{suite}"], "--rank -1"),
    "party_without_a_secret": (
        ["party", "--rank", "0", "--rendezvous", "tcp://127.0.0.1:1", "{suite}"],
        "party mode needs the run's shared secret: --secret-file FILE or $PIBENCH_SECRET",
    ),
    "party_secret_missing": (
        ["party", "--rank", "0", "--rendezvous", "tcp://127.0.0.1:1", "{suite}", "--secret-file", "{tmp}/none"],
        "--secret-file '",
    ),
    "party_secret_too_short": (
        ["party", "--rank", "0", "--rendezvous", "tcp://127.0.0.1:1", "{suite}", "--secret-file", "{short}"],
        "is 5 bytes; use at least 16",
    ),
    "party_on_every_interface": (
        ["party", "--rank", "0", "--rendezvous", "tcp://0.0.0.0:29500", "{suite}", "--secret-file", "{secret}"],
        "rendezvous host '0.0.0.0' listens on every interface of this machine",
    ),
    "report_missing": (["report", "{tmp}/nope.json"], "not found"),
    "report_folder": (["report", "{tmp}"], "is not a sweep folder: it has no sweep.json (made by pibench sweep)"),
    "report_not_json": (["report", "{garbage}"], "is not a valid record: not readable JSON"),
    "report_of_a_suite": (["report", "{suite}"], "is a suite (YAML with model: and variants:), not a record"),
    "report_json_list": (["report", "{list}"], "no schema_version"),
    "report_deep_json": (["report", "{deepjson}"], "is not a valid record"),
    "report_old": (["report", "{old}"], "version 1 (before pibench's backend interface"),
    "report_nan": (["report", "{nan}"], "is not a valid record: variants.0.measured.bytes"),
    "report_unknown_baseline": (["report", "{record}", "--baseline", "sm_ln_gg"], "did you mean 'sm_ln_g'"),
    "report_bad_network": (["report", "{record}", "--network", "1x,2y"], "network profile '1x,2y'"),
    "report_bad_format": (["report", "{record}", "--format", "docx"], "invalid choice: 'docx'"),
    "gate_damaged_candidate": (["gate", "{record}", "{nan}"], "is not a valid record"),
    "gate_damaged_baseline": (["gate", "{nan}", "{record}"], "is not a valid record"),
    "gate_fail_on_syntax": (["gate", "{record}", "{record}", "--fail-on", "bytes=5"], "is not of the form METRIC:+X%"),
    "gate_fail_on_metric": (["gate", "{record}", "{record}", "--fail-on", "byts:+1%"], "no metric matches 'byts'"),
    "gate_fail_on_direction": (
        ["gate", "{record}", "{record}", "--fail-on", "comm_savings:+1%"],
        "write comm_savings:-1%",
    ),
    "gate_counted_only_time": (
        ["gate", "{record}", "{record}", "--counted-only", "--fail-on", "wall_s:+5%"],
        "--counted-only",
    ),
    "cost_calibration_missing": (["cost", "{suite}", "--predict", "--calibration", "{tmp}/no.json"], "not found"),
    "cost_calibration_garbage": (
        ["cost", "{suite}", "--predict", "--calibration", "{garbage}"],
        "is not a valid calibration: not readable JSON",
    ),
    "cost_calibration_a_suite": (["cost", "{suite}", "--predict", "--calibration", "{suite}"], "is a suite"),
    "cost_calibration_foreign": (
        ["cost", "{suite}", "--predict", "--calibration", "{list}"],
        "is not a pibench calibration",
    ),
    "cost_network_without_predict": (["cost", "{suite}", "--network", "lan"], "--network: goes with --predict"),
    "cost_bad_network": (["cost", "{suite}", "--predict", "--network", "fast"], "network profile 'fast'"),
    "cost_bad_flops": (["cost", "{suite}", "--flops", "papers"], "invalid choice: 'papers'"),
    # softmax rows are no longer tabulated up to a length (issue 32): the option is gone, and refused in one line
    "calibrate_rows_gone": (
        ["calibrate", "--max-row-length", "64", "--out", "{tmp}/c.json"],
        "unrecognized arguments: --max-row-length 64",
    ),
    "calibrate_out_folder": (["calibrate", "--out", "{tmp}"], "it is a folder"),
    "calibrate_unknown_backend": (
        ["calibrate", "--backend", "spuu", "--out", "{tmp}/c.json"],
        "invalid choice: 'spuu'",
    ),
    "unknown_command": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "unknown_backend_option": (
        ["cost", "{suite}", "--backend", "spuu"],
        "unknown backend 'spuu' (did you mean 'spu'?)",
    ),
    "spu_rank_two": (
        ["party", "--backend", "spu", "--rank", "2", "--rendezvous", "tcp://127.0.0.1:1", "{suite}"],
        "--rank 2: backend spu",
    ),
    "rendezvous_list_garbage": (
        ["party", "--rank", "0", "--rendezvous", "tcp://a:1,b:2", "{suite}"],
        "tcp://HOST:PORT",
    ),
}


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code if isinstance(exit_.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _assert_refused(code: int, out: str, err: str, fragment: str) -> None:
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert "Traceback" not in err and out == "", (out, err)
    # one line; argparse's own errors come after its usage (which may wrap), as "pibench CMD: error: ..."
    assert len(lines) == 1 or lines[0].startswith("usage: pibench"), err
    assert lines[-1].startswith("pibench: error: ") or (lines[0].startswith("usage:") and ": error: " in lines[-1]), err
    assert fragment in lines[-1], (fragment, err)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch folder as the working directory: a run there would create results/ in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("case", SUITES)
@pytest.mark.parametrize("command", ["cost", "run"])
def test_bad_suite(workdir, case, command):
    text, fragment = SUITES[case]
    suite = workdir / "s.yaml"
    suite.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = _listing(workdir)
    argv = [command, str(suite)] + (["--no-progress", "--timeout", "5"] if command == "run" else [])
    _assert_refused(*_cli(argv), fragment)
    assert _listing(workdir) == before


@pytest.fixture
def files(workdir):
    """Inputs the calls refer to: a good suite, suites too big to run, a good record, damaged ones."""
    baseline = json.loads((ROOT / ".ci" / "baselines" / "smoke.json").read_text())
    paths = {"tmp": workdir, "suite": workdir / "s.yaml", "record": workdir / "good.json"}
    paths["suite"].write_text(OK)
    (workdir / "huge.yaml").write_text("model: {L: 1, H: 1, d: 1000000, T: 100000}\nvariants: [sm]\n")
    (workdir / "deep.yaml").write_text("model: {L: 1000000, H: 2, d: 16, T: 4}\nvariants: [sm]\n")
    (workdir / "short.secret").write_text("short")
    (workdir / "good.secret").write_text("a secret of more than sixteen bytes")
    (workdir / "narrow.yaml").write_text("model: {L: 100000, H: 2, d: 32, T: 8}\nvariants: [sm_ln_g]\n")
    (workdir / "wide.yaml").write_text("model: {L: 1000, H: 16, d: 1024, T: 8}\nvariants: [sm_ln_g]\n")
    paths["record"].write_text(json.dumps(baseline))
    (workdir / "list.json").write_text("[1, 2]")
    (workdir / "garbage.json").write_text("{not json: [")
    (workdir / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (workdir / "old.json").write_text(json.dumps({**baseline, "schema_version": 1}))
    nan = json.loads(json.dumps(baseline))
    nan["variants"][0]["measured"]["bytes"] = float("nan")
    (workdir / "nan.json").write_text(json.dumps(nan))
    names = {
        "huge": "huge.yaml",
        "deep": "deep.yaml",
        "narrow": "narrow.yaml",
        "short": "short.secret",
        "secret": "good.secret",
        "wide": "wide.yaml",
        "list": "list.json",
        "garbage": "garbage.json",
        "deepjson": "deep.json",
        "old": "old.json",
        "nan": "nan.json",
    }
    return {**{k: str(v) for k, v in paths.items()}, **{k: str(workdir / v) for k, v in names.items()}}


@pytest.mark.parametrize("case", CALLS)
def test_bad_call(files, workdir, case):
    argv, fragment = CALLS[case]
    before = _listing(workdir)
    _assert_refused(*_cli([a.format(**files) for a in argv]), fragment)
    assert _listing(workdir) == before


def test_a_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "pibench", "cost", str(fifo)], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert proc.returncode == 2 and proc.stderr == f"pibench: error: suite file '{fifo}' is not a regular file\n"


def test_corpus_size():
    assert 2 * len(SUITES) + len(CALLS) + 1 >= 60
