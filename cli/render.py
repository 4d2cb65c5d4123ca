"""Console output of the CLI (rich): startup progress, the "stack is up" table, status."""

from __future__ import annotations

import json
import os
from typing import Any

from rich.console import Console
from rich.status import Status
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class ConsoleReporter:
    """Renders supervisor events: a spinner while steps run, one line per finished step."""

    def __init__(self, detached: bool = False) -> None:
        self.detached = detached
        self.pending: dict[str, str] = {}
        self.status: Status | None = None

    def emit(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "begin":
            self.pending[event["step"]] = event["text"]
            self._spin()
        elif kind == "done":
            self.pending.pop(event["step"], None)
            self._print(
                f"  [green]✓[/] {event['step']:<10} {event['detail']}  [dim]{event['seconds']:.1f}s[/]"
            )
            self._spin()
        elif kind == "note":
            self._print(f"  [yellow]![/] {event['text']}")
        elif kind == "stopping":
            self._print(f"  [yellow]■[/] stopping {event['step']}")
        elif kind == "error":
            self.pending.clear()
            self._spin()
            err_console.print(f"[red bold]✗ startup failed:[/] {event['message']}")
        elif kind == "ready":
            self.pending.clear()
            self._spin()
            print_ready(event["info"], event.get("admin_key"), self.detached)

    def close(self) -> None:
        self.pending.clear()
        self._spin()

    def _print(self, line: str) -> None:
        console.print(line)

    def _spin(self) -> None:
        if not self.pending:
            if self.status is not None:
                self.status.stop()
                self.status = None
            return
        text = "waiting for " + ", ".join(self.pending)
        if self.status is None:
            self.status = console.status(text)
            self.status.start()
        else:
            self.status.update(text)


class PipeReporter:
    """In a detached supervisor: sends events to the ``nexus up --detach`` parent over a pipe.

    The admin key only ever travels through this pipe, never into a log file.
    """

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def emit(self, event: dict[str, Any]) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (json.dumps(event) + "\n").encode())
        except OSError:  # the parent went away; the stack keeps running
            self.close()
            return
        if event["type"] in ("ready", "error"):
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def print_ready(info: dict[str, str], admin_key: str | None, detached: bool = False) -> None:
    table = Table(title="NexusAI is up", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("where", overflow="fold")
    for name, value in info.items():
        table.add_row(name, value)
    console.print(table)
    if admin_key:
        console.print("[bold yellow]Admin API key (owner of tenant 'default') - shown ONCE, store it now:[/]")
        # Plain print: rich must not wrap or truncate the key on narrow terminals.
        print(f"  {admin_key}", flush=True)
        console.print(f"Try: curl -H 'Authorization: Bearer <key>' {info['API']}/v1/keys", soft_wrap=True)
    stop = "`nexus down`" if detached else "Ctrl-C"
    console.print(f"Stop with {stop}; status: `nexus status`; logs: `nexus logs -f`.")


def print_status(rows: list[dict[str, Any]]) -> None:
    table = Table(title="NexusAI stack")
    for column in ("component", "state", "pid", "url", "health"):
        table.add_column(column, overflow="fold")
    for row in rows:
        state = "[green]up[/]" if row["up"] else "[red]down[/]" if row.get("enabled", True) else "[dim]off[/]"
        health = {True: "[green]healthy[/]", False: "[red]unhealthy[/]", None: "-"}[row["healthy"]]
        table.add_row(row["component"], state, str(row["pid"] or "-"), row["url"], health)
    console.print(table)
