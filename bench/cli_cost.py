"""CPU of ``chatrelay --help`` and ``chatrelay ask`` as whole processes, against the
openai SDK streaming the same reply, process start included.

One fake LLM server (``tests/fakes/llm_server/``) runs in its own process on
127.0.0.1 and answers every request with the same OpenAI Chat Completions
stream: ``--chunks`` content chunks (50,000 by default) plus role, finish,
usage and ``[DONE]``, one SSE event per write, as providers flush them. Then,
one process at a time, interleaved:

- ``chatrelay --help`` (and ``python -c pass``, the interpreter's own start,
  for scale);
- ``chatrelay ask PROMPT``, pointed at the server with ``LLM_BASE_URL``;
- ``openai SDK``: a script that streams the same request with
  ``OpenAI().chat.completions.create(stream=True)`` and writes each
  ``delta.content`` to stdout, flushed, as it arrives.

Each process's CPU (user + system) is the change in
``resource.getrusage(RUSAGE_CHILDREN)`` across its run; the server is reaped
only at the end, so its CPU is never counted. Both streaming contenders must
print the same text. Figures are medians.

Both contenders run from compiled bytecode, as installed packages do: the
openai SDK from the ``.pyc`` files pip wrote into site-packages, chatrelay
(imported from this checkout) from a bytecode cache in a temporary directory
(``PYTHONPYCACHEPREFIX``), filled by one untimed run of ``--help`` and of
``ask`` first. Without it, under ``PYTHONDONTWRITEBYTECODE`` (set on the
project's machine), every timed chatrelay process compiled the project's
modules from source, about 0.06 s the SDK never paid. ``--compile-each-run``
measures that way again, for comparison with figures from before 2026-12-03.

Run: ``make bench`` (or ``python -m bench.cli_cost``; ``--chunks``,
``--repeats``, ``--help-repeats``). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PROMPT = "Say many words."
WORDS = ["Hello", " world", ",", " streaming", " tokens", " é", " 🎉", " and"]

OPENAI_SCRIPT = """
import sys
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="sk-bench", max_retries=0)
stream = client.chat.completions.create(
    model="m", messages=[{"role": "user", "content": sys.argv[2]}], stream=True
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        sys.stdout.write(chunk.choices[0].delta.content)
        sys.stdout.flush()
sys.stdout.write("\\n")
"""


def reply_text(chunks: int) -> str:
    return "".join(WORDS[i % len(WORDS)] for i in range(chunks))


async def serve(chunks: int) -> None:
    """The fake LLM server, in this process until stdin closes; prints its base URL."""
    from tests.fakes.llm_server import FakeLLMServer, sse_response
    from tests.fakes.streams import chat_stream

    pieces = [WORDS[i % len(WORDS)] for i in range(chunks)]
    async with FakeLLMServer() as server:
        server.defaults["chat/completions"] = sse_response(chat_stream(pieces))
        print(server.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def cpu_of(argv: Sequence[str], env: dict[str, str], cwd: str) -> tuple[float, str]:
    """CPU seconds (user + system) of one whole process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({done.returncode}): {done.stderr[-500:]}")
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used, done.stdout


def chatrelay_command() -> list[str]:
    """The installed ``chatrelay`` script next to this interpreter, else ``-m bots.cli``."""
    script = Path(sys.executable).with_name("chatrelay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bots.cli"]


def clean_env(repo: str) -> dict[str, str]:
    """No chatrelay or OpenAI setting from the caller; this checkout's code first
    on the path, whatever checkout the environment's editable install points at."""
    prefixes = ("LLM_", "SLACK_", "DISCORD_", "SYSTEM_PROMPT", "OPENAI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PYTHONPATH"] = repo
    return env


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each streaming process")
    parser.add_argument("--help-repeats", type=int, default=15, help="runs of --help")
    parser.add_argument(
        "--compile-each-run",
        action="store_true",
        help="no bytecode cache for chatrelay: the inherited environment, as before 2026-12-03",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.chunks))
        return

    repo = str(Path(__file__).resolve().parent.parent)
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.cli_cost", "--serve", "--chunks", str(args.chunks)],
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    work = tempfile.mkdtemp(prefix="cli-cost-")  # no .env here
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        env = clean_env(repo)
        ours = dict(env)  # chatrelay's processes
        if not args.compile_each_run:
            ours.pop("PYTHONDONTWRITEBYTECODE", None)
            ours["PYTHONPYCACHEPREFIX"] = os.path.join(work, "bytecode")
        ask_env = {
            **ours,
            "LLM_BASE_URL": base_url,
            "LLM_MODEL": "m",
            "LLM_MAX_RETRIES": "0",
            "LOG_LEVEL": "ERROR",
        }
        chatrelay = chatrelay_command()
        expected = reply_text(args.chunks) + "\n"
        samples: dict[str, list[float]] = {}

        def run(name: str, command: list[str], run_env: dict[str, str], check: bool) -> None:
            used, out = cpu_of(command, run_env, work)
            if check and out != expected:
                raise RuntimeError(f"{name} printed {len(out)} characters, not the reply")
            samples.setdefault(name, []).append(used)

        if not args.compile_each_run:  # fill the bytecode cache, untimed
            cpu_of([*chatrelay, "--help"], ours, work)
            cpu_of([*chatrelay, "ask", PROMPT], ask_env, work)
        for _ in range(args.help_repeats):
            run("python -c pass (interpreter start)", [sys.executable, "-c", "pass"], env, False)
            run("chatrelay --help", [*chatrelay, "--help"], ours, False)
        sdk = [sys.executable, "-c", OPENAI_SCRIPT, base_url, PROMPT]
        for _ in range(args.repeats):
            run(
                f"chatrelay ask ({args.chunks:,} chunks)",
                [*chatrelay, "ask", PROMPT],
                ask_env,
                True,
            )
            run(f"openai SDK ({args.chunks:,} chunks)", sdk, env, True)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    names = list(medians)
    help_cpu, ask_cpu, sdk_cpu = medians[names[1]], medians[names[2]], medians[names[3]]
    print(
        f"CPU s per process (user + system), median of {args.help_repeats} runs "
        f"(--help) and {args.repeats} (streaming); {args.chunks:,} content chunks\n"
    )
    print("| process | CPU s (median) | min | max | vs openai SDK |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        values = samples[name]
        print(
            f"| {name} | {medians[name]:.3f} | {min(values):.3f} | {max(values):.3f} "
            f"| {medians[name] / sdk_cpu:.3f}× |"
        )
    help_verdict = "meets" if help_cpu < 0.15 else "MISSES"
    ask_verdict = "meets" if ask_cpu <= 0.10 * sdk_cpu else "MISSES"
    print(f"\nchatrelay --help: {help_cpu:.3f} s CPU ({help_verdict} < 0.15 s).")
    print(
        f"chatrelay ask: {ask_cpu / sdk_cpu:.3f}× the openai SDK's CPU "
        f"({ask_verdict} ≤ 0.10×; 1/{sdk_cpu / ask_cpu:.1f})."
    )


if __name__ == "__main__":
    main()
