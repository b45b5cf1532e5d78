"""`ccgsc` / `python -m campaigns.cli`: kernels, campaigns and results from the command line.

    ccgsc login --server https://ccgsc.example --token ccgsc_...
    ccgsc run queens.c --tasks tasks.txt          # build, push, create, start, watch, pull
    ccgsc kernel new --lang c queens.c && ccgsc kernel build queens.c
    ccgsc kernel push montecarlo.wasm --name "Monte Carlo"
    ccgsc kernel run montecarlo.wasm < input > output
    ccgsc campaign create --kernel montecarlo.wasm --name pi --tasks tasks.jsonl --start
    ccgsc campaign watch 12
    ccgsc results pull 12 -o results.csv --format csv

Every command takes --json for scripts: the answer (or the error) as JSON on stdout.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shlex
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from campaigns.cli import (
    EXIT_AUTH,
    EXIT_BUILD,
    EXIT_CAMPAIGN_FAILED,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    config,
    files,
)
from campaigns.cli import build as builder
from campaigns.cli.client import Api, CliError
from campaigns.cli.output import ProgressView, duration, emit_json

FINISHED = {"completed": EXIT_OK, "failed": EXIT_CAMPAIGN_FAILED, "cancelled": EXIT_CAMPAIGN_FAILED}
FORMATS = ("jsonl", "csv", "msgpack")


# --- helpers ---------------------------------------------------------------------------------


class Context:
    """What a command needs: the parsed arguments, where to print, and (lazily) the API."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json = bool(getattr(args, "json", False))
        self._api: Api | None = None

    def api(self) -> Api:
        if self._api is None:
            try:
                settings = config.resolve(
                    getattr(self.args, "server", None), getattr(self.args, "token", None)
                )
            except config.ConfigError as exc:
                raise CliError(str(exc), EXIT_ERROR) from None
            if not settings.server:
                raise CliError(
                    "no server: run `ccgsc login --server URL --token TOKEN` "
                    "or set CCGSC_SERVER and CCGSC_TOKEN",
                    EXIT_AUTH,
                    code="not_logged_in",
                )
            if not settings.token:
                raise CliError(
                    "no API token: run `ccgsc login --server URL --token TOKEN` or set CCGSC_TOKEN",
                    EXIT_AUTH,
                    code="not_logged_in",
                )
            self._api = Api(settings.server, settings.token)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    def say(self, text: str) -> None:
        """A line for people (suppressed with --json, where stdout carries the JSON)."""
        if not self.json:
            print(text, flush=True)

    def result(self, data: Any, text: str) -> int:
        if self.json:
            emit_json(data)
        else:
            print(text, flush=True)
        return EXIT_OK


def readable_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"{what} {path}: no such file", EXIT_INVALID, code="file_not_found")
    if not os.access(p, os.R_OK):
        raise CliError(f"{what} {path}: not readable", EXIT_INVALID, code="file_not_readable")
    return p


def kernel_id(ctx: Context, value: str, *, what: str = "kernel", kind: str | None = None) -> int:
    """A kernel given as an ID, or as a local file that is pushed first (pushing the same
    bytes again returns the existing kernel)."""
    if value.isdigit():
        return int(value)
    path = readable_file(value, what)
    kernel = push_kernel(ctx, path, name=path.stem, kind=kind)
    ctx_note(ctx, f"pushed {path.name} as kernel {kernel['id']} ({kernel['sha256'][:12]})")
    return int(kernel["id"])


def ctx_note(ctx: Context, text: str) -> None:
    if not ctx.json:
        print(text, file=sys.stderr, flush=True)


def guess_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return "js" if suffix in (".js", ".mjs") else "gpu" if suffix == ".wgsl" else "wasm"


CONTENT_TYPES = {"js": "text/javascript", "gpu": "text/wgsl", "wasm": "application/wasm"}


def read_manifest(path: Path, manifest: str | None) -> str:
    """A gpu kernel's manifest as compact JSON text: the file given, else FILE.json next to
    the WGSL (k.wgsl -> k.json). The server checks it; here only that it is JSON."""
    source = Path(manifest) if manifest else path.with_suffix(".json")
    if not manifest and not source.exists():
        raise CliError(
            f"a gpu kernel needs its manifest: --manifest FILE (or {source.name} next to it)",
            EXIT_USAGE,
            code="usage",
        )
    try:
        return json.dumps(json.loads(readable_file(str(source), "manifest").read_text()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CliError(
            f"the manifest {source} is not JSON: {exc}", EXIT_USAGE, code="usage"
        ) from None


def push_kernel(
    ctx: Context,
    path: Path,
    *,
    name: str | None,
    kind: str | None,
    description: str = "",
    manifest: str | None = None,
) -> dict[str, Any]:
    kind = kind or guess_kind(path)
    result: dict[str, Any] = ctx.api().post_file(
        "/kernels",
        str(path),
        CONTENT_TYPES.get(kind, "application/wasm"),
        name=name or path.stem,
        kind=kind,
        organization=getattr(ctx.args, "org", None),
        description=description,
        manifest=read_manifest(path, manifest) if kind == "gpu" else None,
    )
    return result


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--env takes NAME=VALUE, not {pair!r}", EXIT_USAGE, code="usage")
        env[name] = value
    return env


# --- login ------------------------------------------------------------------------------------


def cmd_login(ctx: Context) -> int:
    args = ctx.args
    server = getattr(args, "server", None) or os.environ.get("CCGSC_SERVER")
    token = getattr(args, "token", None) or os.environ.get("CCGSC_TOKEN")
    if not server or not token:
        raise CliError("login needs --server URL and --token TOKEN", EXIT_USAGE, code="usage")
    api = Api(server, token)
    try:
        orgs = api.get("/organizations")["results"]
    finally:
        api.close()
    path = config.save(api.server, token)
    names = ", ".join(f"{o['name']} ({o['slug']})" for o in orgs) or "no organization"
    return ctx.result(
        {"server": api.server, "organizations": orgs, "config": str(path)},
        f"Logged in to {api.server} for {names}. Saved to {path}.",
    )


def cmd_logout(ctx: Context) -> int:
    removed = config.forget()
    path = config.config_path()
    return ctx.result(
        {"removed": removed, "config": str(path)},
        f"Removed {path}." if removed else f"Not logged in ({path} does not exist).",
    )


# --- kernels ----------------------------------------------------------------------------------


def kernel_text(k: dict[str, Any]) -> str:
    memory = f", memory max {k['memory_max'] // (1024 * 1024)} MiB" if k.get("memory_max") else ""
    return (
        f"kernel {k['id']} {k['name']!r} ({k['kind']}, {k['size']} bytes{memory}) "
        f"sha256 {k['sha256']}"
    )


def cmd_kernel_push(ctx: Context) -> int:
    args = ctx.args
    path = readable_file(args.file, "kernel")
    kernel = push_kernel(
        ctx,
        path,
        name=args.name,
        kind=args.kind,
        description=args.description or "",
        manifest=args.manifest,
    )
    return ctx.result(kernel, kernel_text(kernel))


def cmd_kernel_list(ctx: Context) -> int:
    page = ctx.api().get("/kernels", organization=ctx.args.org, limit=1000)
    rows = page["results"]
    return ctx.result(rows, "\n".join(kernel_text(k) for k in rows) or "no kernels")


def cmd_kernel_run(ctx: Context) -> int:
    """Run a kernel here, in the same sandbox (kernelhost) and limits as the server."""
    args = ctx.args
    path = readable_file(args.file, "kernel")
    from kernelhost import KernelRejected, Limits, default_host

    static = readable_file(args.static, "static data").read_bytes() if args.static else None
    checkpoint = (
        readable_file(args.checkpoint, "checkpoint").read_bytes() if args.checkpoint else None
    )
    stdin = (
        readable_file(args.input, "input").read_bytes() if args.input else sys.stdin.buffer.read()
    )
    env = parse_env(args.env)
    host = default_host()
    wasm = path.read_bytes()
    try:
        # The server's upload admission: the contract checks, threads refused, and a module that
        # declares no memory maximum gets the cap written in (as the server would store it), so
        # a local run is bound exactly as the pool's will be. Then the compiled module (cached).
        admitted = host.admit(wasm, memory_cap=args.memory * 1024 * 1024)
        kernel = host.compile(admitted.wasm)
    except KernelRejected as exc:
        raise CliError(
            f"the kernel was rejected: {exc.reason}", EXIT_INVALID, code="kernel_rejected"
        ) from None
    show_progress = not ctx.json and sys.stderr.isatty()

    def on_progress(value: float) -> None:
        if show_progress:
            sys.stderr.write(f"\rprogress {100 * value:5.1f}%")
            sys.stderr.flush()

    try:
        result = host.run(
            kernel,
            stdin=stdin,
            args=list(args.arg),
            env=env,
            static=static,
            checkpoint=checkpoint,
            limits=Limits(
                timeout_s=args.timeout,
                memory_bytes=args.memory * 1024 * 1024,
                output_bytes=args.max_output * 1024 * 1024,
            ),
            on_progress=on_progress,
        )
    except ValueError as exc:  # NUL in an argument, "=" in an env name...
        raise CliError(str(exc), EXIT_USAGE, code="usage") from None
    if show_progress:
        sys.stderr.write("\r\x1b[2K")
    code = EXIT_OK if result.ok else (result.exit_code or EXIT_ERROR)
    stderr_tail = result.stderr_tail.decode("utf-8", "replace")
    if ctx.json:
        emit_json(
            {
                "ok": result.ok,
                "exit_code": result.exit_code,
                "error": str(result.error) if result.error else None,
                "message": result.message,
                "runtime_s": round(result.runtime_s, 6),
                "stdout_b64": base64.b64encode(result.stdout).decode(),
                "stderr_tail": stderr_tail,
                "checkpoint_b64": (
                    base64.b64encode(result.checkpoint).decode() if result.checkpoint else None
                ),
            }
        )
        return code
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    if args.save_checkpoint and result.checkpoint is not None:
        Path(args.save_checkpoint).write_bytes(result.checkpoint)
    if stderr_tail:
        sys.stderr.write(stderr_tail if stderr_tail.endswith("\n") else stderr_tail + "\n")
    if not result.ok:
        detail = f"exit code {result.exit_code}" if result.exit_code else result.message
        sys.stderr.write(f"ccgsc: kernel failed: {result.error}: {detail}\n")
    elif args.verbose:
        sys.stderr.write(f"ccgsc: ok in {result.runtime_s:.3f} s\n")
    if args.verbose and admitted.wasm != wasm:
        sys.stderr.write(
            f"ccgsc: the module declares no memory maximum: ran with the {args.memory} MiB cap "
            "written in, as an upload stores it\n"
        )
    return code


def cmd_kernel_build(ctx: Context) -> int:
    args = ctx.args
    built = build_source(ctx, Path(args.file), Path(args.output) if args.output else None)
    data = {"file": str(built.output), "lang": built.lang, "size": built.output.stat().st_size}
    return ctx.result(data, f"built {built.output} ({data['size']} bytes)")


def build_source(ctx: Context, source: Path, output: Path | None = None) -> builder.Built:
    memory = getattr(ctx.args, "memory_max", None) or builder.MEMORY_MAX_MIB
    try:
        # (A missing file or unknown language is build()'s to report.)
        cold = source.is_file() and source.suffix.lower() in builder.LANGS
        if cold and builder.lang_of(source) != "rust" and builder.zig_cache_cold():
            ctx_note(ctx, "first C/C++ build here: zig builds its WASI libc into its cache once")
            ctx_note(ctx, "(a minute or more; later builds take about a second)")
        return builder.build(source, output, memory_mib=memory)
    except builder.BuildError as exc:
        raise CliError(str(exc), EXIT_BUILD, code="build_failed") from None


def cmd_kernel_new(ctx: Context) -> int:
    args = ctx.args
    try:
        path = builder.new(args.lang, Path(args.file) if args.file else None, force=args.force)
    except builder.BuildError as exc:
        raise CliError(str(exc), EXIT_USAGE, code="exists") from None
    return ctx.result(
        {"file": str(path), "lang": args.lang},
        f"wrote {path}: build it with `ccgsc kernel build {path}`, "
        f"or run it on tasks with `ccgsc run {path} --tasks FILE`",
    )


# --- campaigns ---------------------------------------------------------------------------------


def campaign_text(c: dict[str, Any]) -> str:
    text = (
        f"campaign {c['id']} {c['name']!r}: {c['state']}, {c['tasks_done']}/{c['tasks_total']} "
        f"done, {c['tasks_failed']} failed (input {c['input_source']}, {c['input_state']})"
    )
    if c.get("error"):
        text += f"\n  error: {c['error']}"
    if c.get("stalled"):
        text += f"\n  cannot progress: {c['stalled']}"
    if c.get("min_quorum", 1) > 1 or c.get("adaptive_replication"):
        text += f"\n  quorum {c.get('min_quorum')} of independent volunteers"
        if c.get("quorum_needs_account"):
            text += ", one of them signed in"
        if c.get("adaptive_replication"):
            text += "; adaptive replication on (trusted results may stand alone)"
    return text


POLICY_OPTIONS = {
    "priority": "priority",
    "task_timeout": "task_timeout",
    "max_attempts": "max_attempts",
    "points": "points_per_task",
    "quorum": "min_quorum",
    "replicas": "target_replicas",
    "max_error_replicas": "max_error_replicas",
    "max_total_replicas": "max_total_replicas",
    "quorum_needs_account": "quorum_needs_account",
    "adaptive_replication": "adaptive_replication",
}


def policy_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        field: getattr(args, option)
        for option, field in POLICY_OPTIONS.items()
        if getattr(args, option) is not None
    }
    # A quorum of N needs at least N replicas of each task: --quorum alone asks for N.
    if args.quorum is not None and args.replicas is None:
        fields["target_replicas"] = args.quorum
    return fields


def cmd_campaign_create(ctx: Context) -> int:
    args = ctx.args
    if args.tasks and args.generator:
        raise CliError("give --tasks or --generator, not both", EXIT_USAGE, code="usage")
    task_path = readable_file(args.tasks, "task file") if args.tasks else None
    static_path = readable_file(args.static, "static data") if args.static else None
    fields: dict[str, Any] = {"name": args.name, "kernel": kernel_id(ctx, args.kernel)}
    if args.generator:
        fields["generator"] = kernel_id(ctx, args.generator, what="generator")
    for flag, field in (("verifier", "verifier"), ("reducer", "reducer")):
        value = getattr(args, flag)
        if value:
            fields[field] = kernel_id(ctx, value, what=flag)
    if args.generator_arg:
        fields["generator_args"] = list(args.generator_arg)
    if args.arg:
        fields["args"] = list(args.arg)
    if args.env:
        fields["env"] = parse_env(args.env)
    if args.description:
        fields["description"] = args.description
    if args.org:
        fields["organization"] = args.org
    fields.update(policy_fields(args))
    if args.start:
        fields["start"] = True

    api = ctx.api()
    if task_path is None and static_path is None:
        campaign = api.post("/campaigns", json=fields)
    else:
        # A multipart form, so the task file streams from disk; lists and maps go JSON-encoded.
        form = {k: _form_value(v) for k, v in fields.items()}
        files: dict[str, Any] = {}
        handles = []
        try:
            if task_path is not None:
                handle = task_path.open("rb")
                handles.append(handle)
                fmt = task_format(task_path)
                files["task_file"] = (task_path.name, handle, TASK_CONTENT_TYPES[fmt])
                form["task_file_format"] = fmt
            if static_path is not None:
                handle = static_path.open("rb")
                handles.append(handle)
                files["static_data"] = (static_path.name, handle, "application/octet-stream")
            campaign = api.post("/campaigns", data=form, files=files)
        finally:
            for handle in handles:
                handle.close()
    return ctx.result(campaign, campaign_text(campaign))


def _form_value(value: Any) -> str:
    """A multipart form field: lists and maps JSON-encoded, booleans as true/false."""
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_msgpack(path: Path) -> bool:
    return path.suffix.lower() in (".msgpack", ".mpk", ".msgpck")


TASK_CONTENT_TYPES = {
    "jsonl": "application/x-ndjson",
    "msgpack": "application/msgpack",
    "text": "text/plain; charset=utf-8",
}


def task_format(path: Path) -> str:
    """msgpack for .msgpack/.mpk, JSON Lines for .jsonl/.ndjson/.json, plain text (one input
    per line) for anything else, .txt included."""
    suffix = path.suffix.lower()
    if _is_msgpack(path):
        return "msgpack"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "text"


def cmd_campaign_list(ctx: Context) -> int:
    rows = ctx.api().get("/campaigns", organization=ctx.args.org, state=ctx.args.state, limit=1000)[
        "results"
    ]
    return ctx.result(rows, "\n".join(campaign_text(c) for c in rows) or "no campaigns")


def cmd_campaign_status(ctx: Context) -> int:
    campaign = ctx.api().get(f"/campaigns/{ctx.args.id}")
    return ctx.result(campaign, campaign_text(campaign))


def make_action(action: str) -> Callable[[Context], int]:
    def run(ctx: Context) -> int:
        campaign = ctx.api().post(f"/campaigns/{ctx.args.id}/{action}")
        return ctx.result(campaign, campaign_text(campaign))

    run.__name__ = f"cmd_campaign_{action}"
    return run


def cmd_campaign_add_tasks(ctx: Context) -> int:
    path = readable_file(ctx.args.file, "task file")
    ctype = TASK_CONTENT_TYPES[task_format(path)]
    added = ctx.api().post_file(f"/campaigns/{ctx.args.id}/tasks", str(path), ctype)
    return ctx.result(
        added,
        f"added {added['added']} tasks to campaign {ctx.args.id} ({added['tasks_total']} in all)",
    )


class RateMeter:
    """Tasks per second from the last `window` seconds of samples, for when the server's own
    estimate is not there yet."""

    def __init__(self, window: float = 30.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, when: float, finished: int) -> float:
        self.samples.append((when, finished))
        while len(self.samples) > 2 and when - self.samples[0][0] > self.window:
            self.samples.popleft()
        (t0, f0), (t1, f1) = self.samples[0], self.samples[-1]
        return (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0


def cmd_campaign_watch(ctx: Context) -> int:
    args = ctx.args
    return watch(ctx, args.id, interval=args.interval, timeout=args.timeout)


def watch(
    ctx: Context,
    campaign_id: int,
    *,
    interval: float,
    timeout: float | None,
    json_lines: bool = True,
) -> int:
    """Follow the campaign until it ends; the exit code says how it ended. With --json, each
    snapshot is a JSON line unless `json_lines` is off (`run` prints one summary instead)."""
    api = ctx.api()
    view = ProgressView()
    meter = RateMeter()
    started = time.monotonic()
    hinted = False
    stalled_said = ""
    while True:
        p = api.get(f"/campaigns/{campaign_id}/progress")
        finished = p["tasks_done"] + p["tasks_failed"]
        local_rate = meter.add(time.monotonic(), finished)
        rate = p.get("rate_per_second") or local_rate
        remaining = p["tasks_remaining"]
        # Stalled: no ETA (the server sends none either); the reason is printed below.
        eta = None if p.get("stalled") else remaining / rate if rate > 0 else p.get("eta_seconds")
        if ctx.json:
            if json_lines:
                emit_json({**p, "rate_per_second": round(rate, 3), "eta_seconds": eta})
        else:
            view.show(p, rate, eta)
            if p["state"] == "draft" and not hinted:
                view.finish(
                    f"campaign {campaign_id} is a draft: start it with `ccgsc campaign start`"
                )
                hinted = True
            stalled = p.get("stalled") or ""
            if stalled and stalled != stalled_said:
                view.finish(f"campaign {campaign_id} cannot progress: {stalled}")
            stalled_said = stalled
        if p["state"] in FINISHED:
            code = FINISHED[p["state"]]
            if not ctx.json:
                elapsed = duration(time.monotonic() - started)
                message = f"campaign {campaign_id} {p['state']}"
                if p["state"] == "completed":
                    message += f": {p['tasks_done']} done, {p['tasks_failed']} failed ({elapsed})"
                if p.get("error"):
                    message += f": {p['error']}"
                view.finish(message)
            return code
        if timeout and time.monotonic() - started > timeout:
            raise CliError(
                f"campaign {campaign_id} is still {p['state']} after {timeout:g} s",
                EXIT_ERROR,
                code="timeout",
            )
        time.sleep(interval)


# --- run: everything in one command -----------------------------------------------------------


def run_kernel_id(ctx: Context, value: str) -> tuple[int, str]:
    """The kernel to run and a name for the campaign: an ID, a .wasm/.js file (pushed), or a
    C/C++/Rust source (built next to it, then pushed)."""
    if value.isdigit():
        return int(value), f"kernel {value}"
    path = Path(value)
    if path.suffix.lower() in builder.LANGS:
        readable_file(value, "source")
        built = build_source(ctx, path)
        ctx_note(ctx, f"built {built.output} ({built.output.stat().st_size} bytes)")
        path = built.output
    else:
        path = readable_file(value, "kernel")
    kernel = push_kernel(ctx, path, name=path.stem, kind=None)
    ctx_note(ctx, f"pushed {path.name} as kernel {kernel['id']} ({kernel['sha256'][:12]})")
    return int(kernel["id"]), path.stem


def cmd_run(ctx: Context) -> int:
    args = ctx.args
    if bool(args.tasks) == bool(args.args_list):
        raise CliError("give --tasks FILE or --args-list A [A ...]", EXIT_USAGE, code="usage")
    task_path = readable_file(args.tasks, "task file") if args.tasks else None
    static_path = readable_file(args.static, "static data") if args.static else None
    kernel, stem = run_kernel_id(ctx, args.kernel)
    fields: dict[str, Any] = {"name": args.name or stem, "kernel": kernel}
    if args.arg:
        fields["args"] = list(args.arg)
    if args.env:
        fields["env"] = parse_env(args.env)
    if args.org:
        fields["organization"] = args.org
    fields.update(policy_fields(args))
    api = ctx.api()
    if static_path is None:
        campaign = api.post("/campaigns", json=fields)
    else:
        with static_path.open("rb") as handle:
            form = {k: _form_value(v) for k, v in fields.items()}
            files = {"static_data": (static_path.name, handle, "application/octet-stream")}
            campaign = api.post("/campaigns", data=form, files=files)
    cid = int(campaign["id"])
    ctx_note(ctx, f"created campaign {cid} {campaign['name']!r}")
    try:
        if task_path is not None:
            ctype = TASK_CONTENT_TYPES[task_format(task_path)]
            added = api.post_file(f"/campaigns/{cid}/tasks", str(task_path), ctype)
        else:
            body = "".join(
                json.dumps({"args": shlex.split(value)}) + "\n" for value in args.args_list
            )
            added = api.post(
                f"/campaigns/{cid}/tasks",
                content=body.encode(),
                headers={"Content-Type": TASK_CONTENT_TYPES["jsonl"]},
            )
    except CliError:
        # Nothing half-made: a campaign whose tasks were refused does not linger as a draft.
        with contextlib.suppress(CliError):
            api.post(f"/campaigns/{cid}/cancel")
        raise
    ctx_note(ctx, f"added {added['added']} tasks")
    api.post(f"/campaigns/{cid}/start")
    try:
        code = watch(ctx, cid, interval=args.interval, timeout=args.timeout, json_lines=False)
    except KeyboardInterrupt:
        print(
            f"\ncampaign {cid} keeps running: `ccgsc campaign watch {cid}`, then "
            f"`ccgsc results pull {cid} -o FILE`",
            file=sys.stderr,
        )
        return 130
    output = args.output or f"{stem}.results.jsonl"
    data: dict[str, Any] = {"campaign": cid, "exit_code": code}
    if output:
        fmt = args.format or _format_from_name(output)
        size = pull_results(ctx, cid, output, fmt=fmt, state="all")
        data.update({"file": output, "format": fmt, "bytes": size})
        if output != "-":
            ctx_note(ctx, f"wrote {fmt} results of campaign {cid} to {output} ({size} bytes)")
    if args.files:
        written = pull_files(ctx, cid, Path(args.files), state="all")
        data.update({"directory": args.files, "files": written})
        ctx_note(ctx, f"wrote {written} files to {args.files}")
    if ctx.json:
        emit_json(data)
    return code


# --- results ----------------------------------------------------------------------------------


def cmd_results_pull(ctx: Context) -> int:
    args = ctx.args
    if not args.output and not args.files:
        raise CliError("results pull needs -o FILE, --files DIR or both", EXIT_USAGE, code="usage")
    data: dict[str, Any] = {"campaign": args.id}
    texts = []
    if args.output:
        fmt = args.format or _format_from_name(args.output)
        size = pull_results(ctx, args.id, args.output, fmt=fmt, state=args.state)
        if args.output == "-":
            return EXIT_OK
        data.update({"format": fmt, "bytes": size, "file": args.output})
        texts.append(f"wrote {size} bytes of {fmt} results to {args.output}")
    if args.files:
        written = pull_files(ctx, args.id, Path(args.files), state=args.state)
        data.update({"directory": args.files, "files": written})
        texts.append(f"wrote {written} files to {args.files}")
    return ctx.result(data, "\n".join(texts))


def pull_results(ctx: Context, campaign_id: int, output: str, *, fmt: str, state: str) -> int:
    """Stream the export to `output` (- for stdout); whole files only. Returns the size."""
    target = Path(output)
    # "-", or a device or pipe (/dev/null, /dev/stdout): written as it comes, never replaced.
    to_stdout = output == "-"
    direct = not to_stdout and files.is_special(target)
    partial = target if direct else target.with_name(target.name + ".part")
    size = 0
    show = not ctx.json and not to_stdout and sys.stderr.isatty()
    with ctx.api().stream(f"/campaigns/{campaign_id}/results", format=fmt, state=state) as r:
        out = sys.stdout.buffer if to_stdout else partial.open("wb")
        try:
            for chunk in r.iter_bytes(256 * 1024):
                out.write(chunk)
                size += len(chunk)
                if show:
                    sys.stderr.write(f"\r{size / 1e6:8.1f} MB")
                    sys.stderr.flush()
        except BaseException:
            if not to_stdout:
                out.close()
                if not direct:
                    partial.unlink(missing_ok=True)
            raise
        if to_stdout:
            out.flush()
        else:
            out.close()
            if not direct:
                partial.replace(target)  # whole files only: a broken download leaves no FILE
    if show:
        sys.stderr.write("\r\x1b[2K")
    return size


def pull_files(ctx: Context, campaign_id: int, directory: Path, *, state: str) -> int:
    """One file per task in `directory`: `<seq>.out` holds a done task's output, byte for
    byte; `<seq>.failed` a failed task's reason. Seq is zero-padded to six digits, so the
    files list in task order. Returns how many files were written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    with ctx.api().stream(f"/campaigns/{campaign_id}/results", format="jsonl", state=state) as r:
        for line in r.iter_lines():
            if not line:
                continue
            row = json.loads(line)
            if row["output"] is None:
                name, data = f"{row['seq']:06d}.failed", (row.get("failure") or "").encode()
            elif row["output_encoding"] == "base64":
                name, data = f"{row['seq']:06d}.out", base64.b64decode(row["output"])
            else:
                name, data = f"{row['seq']:06d}.out", row["output"].encode()
            (directory / name).write_bytes(data)
            written += 1
    return written


def _format_from_name(name: str) -> str:
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in ("msgpack", "mpk"):
        return "msgpack"
    if suffix == "csv":
        return "csv"
    return "jsonl"


# --- argument parsing -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the command is not reset by the subcommand's default.
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output for scripts"
    )
    common.add_argument(
        "--server",
        default=argparse.SUPPRESS,
        help="server URL (default: $CCGSC_SERVER, then the saved login)",
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="API token (default: $CCGSC_TOKEN, then the saved login)",
    )
    parser = argparse.ArgumentParser(
        prog="ccgsc",
        parents=[common],
        description="CCGSC for campaign owners: kernels, campaigns and results.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 authentication, 4 not found, "
        "5 invalid input, 6 campaign failed or cancelled (watch, run), 7 build failed.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub(common, commands, "login", cmd_login, "check a server and token, and save them")
    sub(common, commands, "logout", cmd_logout, "forget the saved server and token")

    _kernel_commands(commands, common)
    _campaign_commands(commands, common)
    _results_commands(commands, common)
    _run_command(commands, common)
    return parser


def sub(
    common: argparse.ArgumentParser,
    group: Any,
    name: str,
    func: Callable[[Context], int],
    help_text: str,
) -> argparse.ArgumentParser:
    """A command of `group`, taking the common options too."""
    p: argparse.ArgumentParser = group.add_parser(
        name, parents=[common], help=help_text, description=help_text
    )
    p.set_defaults(func=func)
    return p


def _kernel_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    kernel = commands.add_parser("kernel", help="push and run kernels").add_subparsers(
        dest="kernel_command", metavar="COMMAND", required=True
    )
    p = sub(
        common,
        kernel,
        "push",
        cmd_kernel_push,
        "upload a kernel (.wasm; .js for browsers; .wgsl with a manifest for GPUs)",
    )
    p.add_argument("file")
    p.add_argument("--name", help="default: the file name")
    p.add_argument("--kind", choices=["wasm", "js", "gpu"], help="default: from the file name")
    p.add_argument(
        "--manifest",
        metavar="FILE",
        help="kind gpu: the manifest, a JSON file (default: FILE.json next to the .wgsl)",
    )
    p.add_argument("--description")
    p.add_argument("--org", help="organization slug (when you belong to several)")
    p = sub(
        common,
        kernel,
        "build",
        cmd_kernel_build,
        "compile a .c, .cpp or .rs file into a kernel (.wasm next to it)",
    )
    p.add_argument("file", help="FILE.c, FILE.cpp (.cc, .cxx) or FILE.rs")
    p.add_argument("-o", "--output", metavar="FILE", help="default: FILE.wasm")
    p.add_argument(
        "--memory-max",
        type=int,
        metavar="MIB",
        help=f"the module's declared memory maximum (default {builder.MEMORY_MAX_MIB})",
    )
    p = sub(common, kernel, "new", cmd_kernel_new, "write a starting kernel to edit")
    p.add_argument("file", nargs="?", help="default: kernel.c, kernel.cpp or kernel.rs")
    p.add_argument("--lang", choices=sorted(builder.TEMPLATE_SUFFIX), default="c")
    p.add_argument("--force", action="store_true", help="overwrite FILE")
    p = sub(common, kernel, "list", cmd_kernel_list, "list your kernels")
    p.add_argument("--org")
    p = sub(
        common,
        kernel,
        "run",
        cmd_kernel_run,
        "run a kernel locally in the server's sandbox: stdin is the task input, stdout its output",
    )
    p.add_argument("file")
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="A",
        help="a command-line argument (repeat; --arg=-x for one starting with -)",
    )
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--static", metavar="FILE", help="static data, read at /ccgsc/static")
    p.add_argument("--checkpoint", metavar="FILE", help="resume from this checkpoint")
    p.add_argument("--save-checkpoint", metavar="FILE", help="write the last checkpoint here")
    p.add_argument("--input", metavar="FILE", help="read the input from FILE, not stdin")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="default 60")
    p.add_argument("--memory", type=int, default=256, metavar="MIB", help="default 256")
    p.add_argument("--max-output", type=int, default=4, metavar="MIB", help="default 4")
    p.add_argument("-v", "--verbose", action="store_true", help="report the run time")


def _campaign_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    campaign = commands.add_parser("campaign", help="create, run and watch campaigns")
    camp = campaign.add_subparsers(dest="campaign_command", metavar="COMMAND", required=True)
    p = sub(common, camp, "create", cmd_campaign_create, "create a campaign")
    p.add_argument("--name", required=True)
    p.add_argument("--kernel", required=True, metavar="ID|FILE")
    p.add_argument("--tasks", metavar="FILE", help="task file: .jsonl, or .msgpack")
    p.add_argument("--generator", metavar="ID|FILE", help="generator kernel")
    p.add_argument("--generator-arg", action="append", default=[], metavar="A")
    p.add_argument("--arg", action="append", default=[], metavar="A", help="kernel argument")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--static", metavar="FILE", help="static data for every task")
    p.add_argument("--verifier", metavar="ID|FILE")
    p.add_argument("--reducer", metavar="ID|FILE")
    p.add_argument("--description")
    p.add_argument("--org", help="organization slug (when you belong to several)")
    add_policy_options(p)
    p.add_argument("--start", action="store_true", help="start it at once")
    p = sub(common, camp, "list", cmd_campaign_list, "list your campaigns")
    p.add_argument("--org")
    p.add_argument("--state")
    for action, text in (
        ("start", "start a draft campaign"),
        ("pause", "pause a running campaign"),
        ("resume", "resume a paused campaign"),
        ("cancel", "cancel a campaign"),
    ):
        sub(common, camp, action, make_action(action), text).add_argument("id", type=int)
    sub(common, camp, "status", cmd_campaign_status, "show a campaign").add_argument("id", type=int)
    p = sub(
        common,
        camp,
        "watch",
        cmd_campaign_watch,
        "follow a campaign until it ends (exit 0 when it completes, 6 when it fails or is "
        "cancelled)",
    )
    p.add_argument("id", type=int)
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="default 1")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    p = sub(
        common, camp, "add-tasks", cmd_campaign_add_tasks, "add tasks from a .jsonl/.msgpack file"
    )
    p.add_argument("id", type=int)
    p.add_argument("file")


def _results_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    results = commands.add_parser("results", help="download results").add_subparsers(
        dest="results_command", metavar="COMMAND", required=True
    )
    p = sub(common, results, "pull", cmd_results_pull, "stream a campaign's results to a file")
    p.add_argument("id", type=int)
    p.add_argument("-o", "--output", metavar="FILE", help="FILE, or - for stdout")
    p.add_argument(
        "--files",
        metavar="DIR",
        help="also (or only) one file per task in DIR: 000042.out, and 000042.failed for a "
        "failed task (with --state failed or all)",
    )
    p.add_argument("--format", choices=FORMATS, help="default: from FILE's extension, or jsonl")
    p.add_argument("--state", choices=["done", "failed", "all"], default="done")


def _run_command(commands: Any, common: argparse.ArgumentParser) -> None:
    p = sub(
        common,
        commands,
        "run",
        cmd_run,
        "build or push a kernel, create a campaign of its tasks, start it, watch it and pull "
        "its results, in one command (exit 0 when every task is decided and the campaign "
        "completed, 6 when it failed)",
    )
    p.add_argument("kernel", metavar="FILE|ID", help="a .c/.cpp/.rs source, a .wasm/.js, or an ID")
    p.add_argument(
        "--tasks",
        metavar="FILE",
        help="tasks: .jsonl (JSON Lines), .msgpack, or any other file as plain text, each "
        "line one task's input",
    )
    p.add_argument(
        "--args-list",
        nargs="+",
        metavar="A",
        help='one task per value, the value split like a shell line as its arguments ("8", "-n 9")',
    )
    p.add_argument("--arg", action="append", default=[], metavar="A", help="argument of all tasks")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--static", metavar="FILE", help="static data for every task")
    p.add_argument("--name", help="campaign name (default: the kernel's file name)")
    p.add_argument("--org", help="organization slug (when you belong to several)")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="results file (default STEM.results.jsonl: the kernel file's stem, not --name)",
    )
    p.add_argument("--files", metavar="DIR", help="one file per task in DIR")
    p.add_argument("--format", choices=FORMATS, help="default: from FILE's extension, or jsonl")
    p.add_argument("--memory-max", type=int, metavar="MIB", help="when building a source")
    p.add_argument("--interval", type=float, default=0.5, metavar="S", help="default 0.5")
    p.add_argument("--timeout", type=float, metavar="S", help="give up watching after S seconds")
    add_policy_options(p)


def add_policy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--priority", type=int)
    p.add_argument("--task-timeout", type=int, metavar="S")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--points", type=int, help="points per validated task")
    p.add_argument(
        "--quorum", type=int, help="agreeing results needed (replicas default to the same)"
    )
    p.add_argument("--replicas", type=int, help="replicas issued per task")
    p.add_argument("--max-error-replicas", type=int)
    p.add_argument("--max-total-replicas", type=int)
    # default None, not False: an option not given is left to the server's default.
    p.add_argument(
        "--quorum-needs-account",
        action="store_true",
        default=None,
        help="every quorum includes a signed-in volunteer (anonymous sessions alone never "
        "decide a task)",
    )
    p.add_argument(
        "--adaptive-replication",
        action="store_true",
        default=None,
        help="accept a volunteer trusted on this kernel alone, spot-checked at random (off by "
        "default). Risk: a trusted volunteer who turns hostile gets wrong results accepted "
        "until a spot check catches them",
    )


def report(ctx: Context | None, error: CliError, as_json: bool) -> int:
    if as_json:
        emit_json(error.as_dict())
    else:
        print(f"ccgsc: error: {error.message}", file=sys.stderr)
        for field, messages in error.fields.items():
            for message in messages:
                print(f"  {field}: {message}", file=sys.stderr)
    return error.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage
    ctx = Context(args)
    try:
        code: int = args.func(ctx)
        return code
    except CliError as error:
        return report(ctx, error, ctx.json)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
