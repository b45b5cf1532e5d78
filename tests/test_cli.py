"""The `ccgsc` command line: against a live server (daphne) with a native worker process, and
locally for `kernel run`, the saved login, the progress display and the exit codes."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
from wasmtime import wat2wasm

from accounts import services as account_services
from campaigns.cli import __main__ as cli
from campaigns.cli import build as builder
from campaigns.cli import config
from campaigns.cli.output import ProgressView, duration, progress_bar, progress_line
from campaigns.models import Campaign
from kernelhost import default_host
from tests.conftest import KERNELS_DIR, kernel_bytes
from tests.live import ROOT
from tests.skips import skip_unless_ci

MONTECARLO = str(KERNELS_DIR / "montecarlo.wasm")


def run_cli(
    *args: str,
    home: Path,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    # A bound for a hung CLI, not a speed test: zig's first C++ build compiles libc++ (minutes
    # on a loaded two-core machine).
    timeout=900,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """`python -m campaigns.cli ARGS` in a clean environment: its own config directory, no
    CCGSC_* variables and no Django settings (the CLI must not need them)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CCGSC_", "DJANGO_", "DATABASE_", "SQLITE_"))
    }
    clean.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    # One zig cache for the suite (wasi-libc builds once), whatever HOME is.
    clean.setdefault("ZIG_GLOBAL_CACHE_DIR", str(ROOT / "var" / "zig-cache"))
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "campaigns.cli", *args],
        input=stdin.decode("latin-1") if stdin else "",
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def as_json(result: subprocess.CompletedProcess[str]):
    return json.loads(ok(result).stdout)


def output_bytes(row: dict) -> bytes:
    """An exported row's output as bytes, whichever encoding the row says it has."""
    if row["output_encoding"] == "base64":
        return base64.b64decode(row["output"])
    return row["output"] if isinstance(row["output"], bytes) else row["output"].encode()


# --- against a live server ---------------------------------------------------------------------


@pytest.mark.live
def test_push_create_start_watch_and_pull_results(live_platform, people, tmp_path):
    token = account_services.token_issue(organization=people.org, name="cli", created_by=None)[1]
    home = tmp_path / "home"
    login = ok(run_cli("login", "--server", live_platform.url, "--token", token, home=home))
    assert "Alpha Lab (alpha)" in login.stdout
    saved = home / ".config" / "ccgsc" / "config.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"server": live_platform.url, "token": token}

    kernel = as_json(run_cli("kernel", "push", MONTECARLO, "--name", "pi", "--json", home=home))
    assert kernel["name"] == "pi" and kernel["organization"] == "alpha"
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(json.dumps({"input": f"{seed} 20000"}) + "\n" for seed in range(1, 31))
    )
    campaign = as_json(
        run_cli(
            "campaign", "create", "--kernel", str(kernel["id"]), "--name", "pi",
            "--tasks", str(tasks), "--priority", "20", "--json", home=home,
        )
    )  # fmt: skip
    assert (campaign["state"], campaign["tasks_total"], campaign["priority"]) == ("draft", 30, 20)
    started = as_json(run_cli("campaign", "start", str(campaign["id"]), "--json", home=home))
    assert started["state"] == "running"

    # The organization's own native worker runs its (unapproved) campaign.
    live_platform.worker("--token", token, "--exit-when-idle", "3")
    watch = run_cli("campaign", "watch", str(campaign["id"]), "--interval", "0.3", home=home)
    assert watch.returncode == 0, (watch.stdout, watch.stderr)
    # Not a terminal: plain lines on stderr, ending with the verdict.
    lines = watch.stderr.strip().splitlines()
    assert lines[-1].startswith(f"campaign {campaign['id']} completed: 30 done, 0 failed")
    assert all(line.startswith(f"campaign {campaign['id']} ") for line in lines)

    status = as_json(run_cli("campaign", "status", str(campaign["id"]), "--json", home=home))
    assert (status["state"], status["tasks_done"]) == ("completed", 30)

    # Results, streamed to files in the three formats, agree with a local run of the kernel.
    expected = {
        seed - 1: default_host().run(kernel_bytes("montecarlo"), stdin=b"%d 20000" % seed).stdout
        for seed in range(1, 31)
    }
    out = tmp_path / "results.jsonl"
    pulled = as_json(
        run_cli("results", "pull", str(campaign["id"]), "-o", str(out), "--json", home=home)
    )
    assert pulled["bytes"] == out.stat().st_size and pulled["format"] == "jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["seq"]: output_bytes(r) for r in rows} == expected
    assert {r["input"] for r in rows} == {f"{seed} 20000" for seed in range(1, 31)}

    out_csv = tmp_path / "results.csv"
    ok(run_cli("results", "pull", str(campaign["id"]), "-o", str(out_csv), home=home))
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert {int(r["seq"]): output_bytes(r) for r in rows} == expected

    out_mp = tmp_path / "results.bin"
    ok(
        run_cli(
            "results",
            "pull",
            str(campaign["id"]),
            "-o",
            str(out_mp),
            "--format",
            "msgpack",
            home=home,
        )
    )
    rows = list(msgpack.Unpacker(io.BytesIO(out_mp.read_bytes()), raw=False))
    assert {r["seq"]: output_bytes(r) for r in rows} == expected
    assert not list(tmp_path.glob("*.part"))
    to_stdout = ok(run_cli("results", "pull", str(campaign["id"]), "-o", "-", home=home))
    assert to_stdout.stdout == out.read_text()


@pytest.mark.live
def test_errors_and_exit_codes_against_a_live_server(live_platform, people, tmp_path):
    token = account_services.token_issue(organization=people.org, name="cli", created_by=None)[1]
    home = tmp_path / "home"
    env = {"CCGSC_SERVER": live_platform.url, "CCGSC_TOKEN": token}

    # A bad token: exit 3 and a sentence saying so; login saves nothing.
    bad = run_cli("login", "--server", live_platform.url, "--token", "ccgsc_wrong", home=home)
    assert bad.returncode == 3
    assert "Invalid or revoked API token" in bad.stderr and "ccgsc login" in bad.stderr
    assert not (home / ".config" / "ccgsc" / "config.json").exists()
    bad = run_cli("campaign", "list", "--json", home=home, env={**env, "CCGSC_TOKEN": "ccgsc_x"})
    assert bad.returncode == 3
    assert json.loads(bad.stdout)["error"]["code"] == "authentication_failed"
    assert json.loads(bad.stdout)["error"]["exit_code"] == 3
    # Not logged in at all.
    assert run_cli("campaign", "list", home=home).returncode == 3

    # A task file with a bad line: exit 5, naming the line; no campaign is left behind.
    tasks = tmp_path / "bad.jsonl"
    tasks.write_text('"1 1000"\n{"input": 7}\n')
    bad = run_cli(
        "campaign", "create", "--kernel", MONTECARLO, "--name", "x", "--tasks", str(tasks),
        home=home, env=env,
    )  # fmt: skip
    assert bad.returncode == 5, bad.stderr
    assert "The task file was rejected: line 2: `input` must be a string" in bad.stderr
    assert not Campaign.objects.exists()
    # A file that is not there, and one that is not a kernel: exit 5 too.
    missing = run_cli("kernel", "push", str(tmp_path / "nope.wasm"), home=home, env=env)
    assert missing.returncode == 5 and "no such file" in missing.stderr
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm\1\0\0\0junk")
    rejected = run_cli("kernel", "push", str(junk), home=home, env=env)
    assert rejected.returncode == 5 and "The kernel was rejected" in rejected.stderr
    # Another organization's campaign, or none: exit 4.
    missing = run_cli("campaign", "status", "999999", home=home, env=env)
    assert missing.returncode == 4 and "Campaign 999999 not found." in missing.stderr

    # Watching a campaign that gets cancelled exits 6; adding tasks from a file works.
    created = as_json(
        run_cli(
            "campaign",
            "create",
            "--kernel",
            MONTECARLO,
            "--name",
            "c",
            "--json",
            home=home,
            env=env,
        )
    )
    good = tmp_path / "good.jsonl"
    good.write_text('"1 10"\n"2 10"\n')
    added = as_json(
        run_cli(
            "campaign", "add-tasks", str(created["id"]), str(good), "--json", home=home, env=env
        )
    )
    assert added == {"added": 2, "tasks_total": 2}
    ok(run_cli("campaign", "cancel", str(created["id"]), home=home, env=env))
    watch = run_cli("campaign", "watch", str(created["id"]), home=home, env=env)
    assert watch.returncode == 6 and "cancelled" in watch.stderr
    watch = run_cli("campaign", "watch", str(created["id"]), "--json", home=home, env=env)
    assert watch.returncode == 6
    assert json.loads(watch.stdout.splitlines()[-1])["state"] == "cancelled"

    # A server that is not there: exit 1.
    down = run_cli("campaign", "list", home=home, env={**env, "CCGSC_SERVER": "http://127.0.0.1:9"})
    assert down.returncode == 1 and "cannot reach the server" in down.stderr


# --- without a server ----------------------------------------------------------------------------


def test_usage_errors_exit_2(tmp_path):
    assert run_cli(home=tmp_path).returncode == 2
    assert run_cli("campaign", "watch", "not-a-number", home=tmp_path).returncode == 2
    assert run_cli("kernel", "run", home=tmp_path).returncode == 2
    assert "Exit codes" in ok(run_cli("--help", home=tmp_path)).stdout


def test_kernel_run_uses_the_sandbox_locally(tmp_path):
    result = run_cli("kernel", "run", MONTECARLO, home=tmp_path, stdin=b"1 1000000")
    assert ok(result).stdout == "785383 1000000\n"
    echo = str(KERNELS_DIR / "echo.wasm")
    assert ok(run_cli("kernel", "run", echo, home=tmp_path, stdin=b"hello")).stdout == "hello"


def test_kernel_run_failures_give_the_kernels_exit_code_and_the_error(tmp_path):
    exitcode = str(KERNELS_DIR / "exitcode.wasm")
    failed = run_cli("kernel", "run", exitcode, home=tmp_path, stdin=b"7")
    assert failed.returncode == 7
    assert "kernel failed: exit: exit code 7" in failed.stderr
    trapped = run_cli("kernel", "run", str(KERNELS_DIR / "trap.wasm"), home=tmp_path)
    assert trapped.returncode == 1 and "kernel failed: trap" in trapped.stderr
    slow = run_cli(
        "kernel", "run", str(KERNELS_DIR / "loop.wasm"), "--timeout", "0.3", home=tmp_path
    )
    assert slow.returncode == 1 and "kernel failed: timeout" in slow.stderr
    data = json.loads(
        run_cli("kernel", "run", str(KERNELS_DIR / "trap.wasm"), "--json", home=tmp_path).stdout
    )
    assert data["ok"] is False and data["error"] == "trap" and data["exit_code"] is None


def test_kernel_run_admits_a_module_as_an_upload_does(tmp_path):
    # No memory maximum declared (Rust's default output, most existing WASI programs): the cap
    # is written in, as kernel_upload stores it, and the module runs under it.
    nomax = str(KERNELS_DIR / "nomax.wasm")
    ran = ok(run_cli("kernel", "run", nomax, "-v", "--memory", "64", home=tmp_path, stdin=b"hi"))
    assert ran.stdout == "hi" and "ran with the 64 MiB cap written in" in ran.stderr
    # The cap is enforced: an initial memory above it is refused, as an upload refuses it.
    big = tmp_path / "big.wasm"
    big.write_bytes(wat2wasm('(module (memory (export "memory") 32) (func (export "_start")))'))
    small = run_cli("kernel", "run", str(big), "--memory", "1", home=tmp_path)
    assert small.returncode == 5 and "above the platform cap 1 MiB" in small.stderr
    # A module that declared its maximum runs as it is (no note about a rewrite).
    echo = ok(run_cli("kernel", "run", str(KERNELS_DIR / "echo.wasm"), "-v", home=tmp_path))
    assert "cap written in" not in echo.stderr
    # Threads are refused with that reason, as at upload.
    threaded = tmp_path / "threads.wasm"
    shared = '(module (memory (export "memory") 1 2 shared) (func (export "_start")))'
    threaded.write_bytes(wat2wasm(shared))
    refused = run_cli("kernel", "run", str(threaded), home=tmp_path)
    assert refused.returncode == 5 and "threads are not supported" in refused.stderr


def test_kernel_run_passes_arguments_environment_and_static_data(tmp_path):
    conformance = str(KERNELS_DIR / "conformance.wasm")

    def probe(command: str, *options: str) -> str:
        return ok(
            run_cli("kernel", "run", conformance, *options, home=tmp_path, stdin=command.encode())
        ).stdout

    assert probe("args", "--arg", "two words", "--arg=-x") == (
        "argc=3\nargv[0]=kernel\nargv[1]=two words\nargv[2]=-x\n"
    )
    assert probe("env", "--env", "B=2", "--env", "A=1=one") == "A=1=one\nB=2\n"
    static = tmp_path / "static.bin"
    static.write_bytes(b"shared table")
    assert probe("static", "--static", str(static)).startswith("static=12\n")
    assert probe("static") == "static=absent\n"
    data = json.loads(probe("args", "--json"))
    assert base64.b64decode(data["stdout_b64"]) == b"argc=1\nargv[0]=kernel\n"
    assert data["ok"] is True and data["exit_code"] == 0
    bad_env = run_cli("kernel", "run", conformance, "--env", "novalue", home=tmp_path)
    assert bad_env.returncode == 2 and "NAME=VALUE" in bad_env.stderr


def test_the_cli_imports_no_django():
    code = (
        "import sys, campaigns.cli.__main__, campaigns.cli.client;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework')];"
        "assert not bad, bad"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "ccgsc"
    assert script.exists(), "run `uv sync` (or pip install -e .) to install the ccgsc script"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "campaign owners" in out.stdout


# --- saved login and settings -----------------------------------------------------------------


def test_settings_precedence_options_then_environment_then_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("CCGSC_CONFIG", raising=False)
    monkeypatch.delenv("CCGSC_SERVER", raising=False)
    monkeypatch.delenv("CCGSC_TOKEN", raising=False)
    assert config.resolve() == config.Settings(None, None)
    path = config.save("http://saved", "ccgsc_saved")
    assert path == tmp_path / "ccgsc" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert config.resolve() == config.Settings("http://saved", "ccgsc_saved")
    monkeypatch.setenv("CCGSC_TOKEN", "ccgsc_env")
    assert config.resolve() == config.Settings("http://saved", "ccgsc_env")
    assert config.resolve(server="http://flag") == config.Settings("http://flag", "ccgsc_env")
    assert config.forget() and not path.exists()


def test_a_corrupt_config_file_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CCGSC_CONFIG", str(tmp_path / "c.json"))
    (tmp_path / "c.json").write_text("[1, 2]")
    assert cli.main(["campaign", "list"]) == 1
    assert "is not a JSON object" in capsys.readouterr().err


# --- progress display --------------------------------------------------------------------------


def snapshot(done: int, failed: int = 0, total: int = 720, state: str = "running") -> dict:
    return {
        "id": 7,
        "state": state,
        "input_state": "ready",
        "tasks_total": total,
        "tasks_done": done,
        "tasks_failed": failed,
        "tasks_remaining": total - done - failed,
    }


def test_the_progress_bar_shows_rate_and_eta():
    line = progress_bar(snapshot(340, 2), rate=12.3, eta=31.0, width=100)
    assert line.startswith("[") and "47.5% 342/720" in line
    assert "2 failed" in line and "12.3/s" in line and "ETA 0:31" in line
    assert len(line) < 100
    assert duration(3725) == "1:02:05" and duration(None) == "?"


def test_a_stalled_campaign_shows_no_eta():
    stalled = {**snapshot(340, 2), "stalled": "each task needs 2 agreeing results"}
    for line in (progress_bar(stalled, 0.1, None, 100), progress_line(stalled, 0.1, None)):
        assert "ETA" not in line and "stalled" in line


def test_the_progress_view_redraws_on_a_terminal_and_prints_changes_otherwise():
    terminal = io.StringIO()
    view = ProgressView(terminal, tty=True)
    view.show(snapshot(10), 5.0, 142.0)
    view.show(snapshot(20), 5.0, 140.0)
    view.finish("done")
    assert terminal.getvalue().count("\r\x1b[2K[") == 2 and terminal.getvalue().endswith("\ndone\n")

    log = io.StringIO()
    view = ProgressView(log, tty=False)
    view.show(snapshot(10), 5.0, 142.0)
    view.show(snapshot(10), 4.0, 150.0)  # only the rate moved: no new line
    view.show(snapshot(20), 5.0, 140.0)
    lines = log.getvalue().splitlines()
    assert lines == [
        "campaign 7 running: 10/720 done (1.4%), 0 failed, 5.0/s, ETA 2:22",
        "campaign 7 running: 20/720 done (2.8%), 0 failed, 5.0/s, ETA 2:20",
    ]


def test_the_rate_meter_uses_a_sliding_window():
    meter = cli.RateMeter(window=10)
    assert meter.add(0.0, 0) == 0.0
    assert meter.add(5.0, 50) == 10.0
    assert meter.add(20.0, 60) == pytest.approx(10 / 15)


# --- kernel build / new, and run -----------------------------------------------------------------


@pytest.mark.live
def test_run_builds_a_c_file_and_pulls_results_in_one_command(live_platform, people, tmp_path):
    token = account_services.token_issue(organization=people.org, name="cli", created_by=None)[1]
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    ok(run_cli("login", "--server", live_platform.url, "--token", token, home=home))
    ok(run_cli("kernel", "new", "--lang", "c", "primes.c", home=home, cwd=work))
    (work / "tasks.txt").write_text("1000\n2000\r\n\n")  # plain text: one input per line
    live_platform.worker("--token", token)

    # Outside the repository, no venv active: the header ships in the package.
    run = run_cli(
        "run", "primes.c", "--tasks", "tasks.txt", "--files", "out", "--quorum", "1",
        "--interval", "0.2", home=home, cwd=work,
    )  # fmt: skip
    ok(run)
    assert (work / "primes.wasm").exists()
    rows = [json.loads(x) for x in (work / "primes.results.jsonl").read_text().splitlines()]
    assert [(r["seq"], r["input"], r["output"], r["output_encoding"]) for r in rows] == [
        (0, "1000", "168\n", "utf-8"),
        (1, "2000", "303\n", "utf-8"),
    ]
    assert sorted(p.name for p in (work / "out").iterdir()) == ["000000.out", "000001.out"]
    assert (work / "out" / "000001.out").read_bytes() == b"303\n"
    assert "completed: 2 done, 0 failed" in run.stderr

    # An args list against the built module (pushing the same bytes reuses the kernel).
    run = run_cli(
        "run", "primes.wasm", "--args-list", "100", "10 ignored", "-o", "r.csv",
        "--json", home=home, cwd=work,
    )  # fmt: skip
    assert as_json(run)["exit_code"] == 0
    rows = list(csv.DictReader(io.StringIO((work / "r.csv").read_text())))
    assert [(json.loads(r["args"]), r["input"], r["output"]) for r in rows] == [
        (["100"], "", "25\n"),
        (["10", "ignored"], "", "4\n"),
    ]


@pytest.mark.live
def test_run_of_a_kernel_failing_everywhere_on_one_worker_ends_failed_at_once(
    live_platform, people, tmp_path
):
    """Issue 12, the kernel author's path on `make run`'s one worker: three tasks that all
    exit 2 spend their attempts (15 failures, above the error streak) and the run ends
    `failed`, not after a 30 s pause per streak of the only worker."""
    from campaigns.cli import EXIT_CAMPAIGN_FAILED
    from workers.connection import BENCH_SECONDS

    token = account_services.token_issue(organization=people.org, name="cli", created_by=None)[1]
    home = tmp_path / "home"
    ok(run_cli("login", "--server", live_platform.url, "--token", token, home=home))
    live_platform.worker("--token", token)
    started = time.monotonic()
    run = run_cli(
        "run", str(KERNELS_DIR / "exitcode.wasm"), "--args-list", "1", "2", "3",
        "--interval", "0.2", home=home, cwd=tmp_path,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert run.returncode == EXIT_CAMPAIGN_FAILED, (run.stdout, run.stderr)
    assert " failed" in run.stderr, run.stderr
    assert elapsed < BENCH_SECONDS, (elapsed, run.stderr)


def test_kernel_build_needs_no_repository_and_reports_compiler_errors(tmp_path):
    home = tmp_path / "home"
    ok(run_cli("kernel", "new", "--lang", "c", home=home, cwd=tmp_path))
    again = run_cli("kernel", "new", "--lang", "c", home=home, cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr
    built = as_json(run_cli("kernel", "build", "kernel.c", "--json", home=home, cwd=tmp_path))
    assert built["file"] == "kernel.wasm" and built["lang"] == "c"
    result = default_host().run((tmp_path / "kernel.wasm").read_bytes(), stdin=b"100")
    assert result.ok and result.stdout == b"25\n"
    info = default_host().inspect((tmp_path / "kernel.wasm").read_bytes(), memory_cap=256 << 20)
    assert info.memory_max == 64 * 1024 * 1024

    (tmp_path / "bad.c").write_text("int main(void) { return nope; }\n")
    bad = run_cli("kernel", "build", "bad.c", home=home, cwd=tmp_path)
    assert bad.returncode == 7 and "nope" in bad.stderr
    assert not (tmp_path / "bad.wasm").exists()
    odd = run_cli("kernel", "build", "kernel.go", home=home, cwd=tmp_path)
    assert odd.returncode != 0 and "no such file" in odd.stderr


def _has_rust() -> bool:
    try:
        builder.find_rustc()
    except builder.BuildError:
        return False
    return True


@pytest.mark.parametrize("lang", ["cpp", "rust"])
def test_cpp_and_rust_templates_build_and_agree_with_c(tmp_path, lang):
    if lang == "rust" and not _has_rust():
        skip_unless_ci(
            "no rustc with wasm32-wasi here: apt-get install rustc libstd-rust-dev-wasm32 lld"
        )
    home = tmp_path / "home"
    ok(run_cli("kernel", "new", "--lang", lang, "k", home=home, cwd=tmp_path))
    source = tmp_path / ("k." + {"cpp": "cpp", "rust": "rs"}[lang])
    (tmp_path / "k").rename(source)
    ok(run_cli("kernel", "build", source.name, "-o", "k.wasm", home=home, cwd=tmp_path))
    result = default_host().run((tmp_path / "k.wasm").read_bytes(), stdin=b"100000")
    assert result.ok and result.stdout == b"9592\n"


def test_rust_without_its_toolchain_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(builder, "RUSTC_CANDIDATES", ("/nonexistent/rustc",))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CCGSC_RUSTC", raising=False)
    with pytest.raises(builder.BuildError, match="libstd-rust-dev-wasm32 and lld"):
        builder.build(Path(builder.data_dir() / "templates" / "kernel.rs"), tmp_path / "k.wasm")


def test_the_packaged_header_is_the_repositorys():
    assert (builder.header_dir() / "ccgsc.h").read_bytes() == (
        ROOT / "kernels" / "ccgsc.h"
    ).read_bytes()


def test_quorum_alone_asks_for_as_many_replicas():
    args = cli.build_parser().parse_args(
        ["campaign", "create", "--name", "x", "--kernel", "1", "--quorum", "2"]
    )
    assert cli.policy_fields(args) == {"min_quorum": 2, "target_replicas": 2}
    args = cli.build_parser().parse_args(
        ["run", "k.wasm", "--args-list", "1", "--quorum", "2", "--replicas", "3"]
    )
    assert cli.policy_fields(args) == {"min_quorum": 2, "target_replicas": 3}
    assert cli.task_format(Path("t.txt")) == "text" and cli.task_format(Path("t.jsonl")) == "jsonl"


def test_the_first_c_build_says_it_fills_zigs_cache(tmp_path, monkeypatch, capsys):
    """zig's first build compiles wasi-libc (a minute or more): the command says so instead of
    staying silent; once the cache holds builds it says nothing."""
    from campaigns.cli import build as builder

    source = tmp_path / "k.c"
    source.write_text("int main(void) { return 0; }\n")
    monkeypatch.setenv("ZIG_GLOBAL_CACHE_DIR", str(tmp_path / "zig"))
    monkeypatch.setattr(builder, "build", lambda src, out, memory_mib: builder.Built(src, "c", []))
    assert builder.zig_cache_cold()
    assert cli.main(["kernel", "build", str(source)]) == 0
    assert "zig builds its WASI libc into its cache once" in capsys.readouterr().err

    (tmp_path / "zig" / "o").mkdir(parents=True)
    assert not builder.zig_cache_cold()
    assert cli.main(["kernel", "build", str(source)]) == 0
    assert "zig" not in capsys.readouterr().err


def test_an_output_that_is_a_device_or_pipe_is_written_into_never_replaced(tmp_path):
    # `-o /dev/null` as root replaced the device with a regular file (os.replace), and every
    # later `> /dev/null` on the machine wrote into it. A FIFO stands in for the device.
    from campaigns.cli import files

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        done = tmp_path / "kernel.tmp"
        done.write_bytes(b"\0asm built")
        assert files.is_special(fifo) and not files.is_special(done)
        assert not files.is_special(tmp_path / "missing")
        files.install(done, fifo)
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        assert os.read(reader, 100) == b"\0asm built"
        assert not done.exists()
    finally:
        os.close(reader)
    regular = tmp_path / "out.wasm"
    regular.write_bytes(b"old")
    again = tmp_path / "again.tmp"
    again.write_bytes(b"new")
    files.install(again, regular)
    assert regular.read_bytes() == b"new" and not again.exists()
