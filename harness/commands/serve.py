"""`faultline serve [RESULTS] [--port N]`: browse a results folder over local HTTP.

The standard library's http.server, bound to the loopback interface unless told
otherwise: the reports are plain files, so serving them is serving the folder. The
index is rendered afresh on each request for it, so runs finished since the server
started are listed.
"""

from __future__ import annotations

import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click

from harness import exit_codes


class ResultsHandler(SimpleHTTPRequestHandler):
    """Serves the results folder; re-renders index.html before handing it out."""

    def __init__(self, *args: Any, results: Path, **kwargs: Any) -> None:
        self.results = results
        super().__init__(*args, directory=str(results), **kwargs)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0].split("#", 1)[0] in ("/", "/index.html"):
            from harness.report import render_index

            render_index(self.results)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        # One line per request on stderr, without the base class's client address and
        # date: it is always this machine.
        sys.stderr.write(f"{format % args}\n")


@click.command("serve")
@click.argument("results", type=click.Path(file_okay=False, path_type=Path),
                default=Path("results"))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port; 0 picks a free one (the address is printed).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; the default is reachable from this machine "
                   "only (0.0.0.0 shares the results with the network).")
def serve(results: Path, port: int, host: str) -> None:
    """Serve RESULTS (default: results/) over HTTP: the index of runs and campaigns,
    each run's report.html, each campaign's campaign.html, and results/latest, the last
    run. Ctrl-C stops the server."""
    if not results.is_dir():
        click.echo(f"error: {results} is not a folder; give the folder `faultline run --out` "
                   "wrote into (default results/)", err=True)
        sys.exit(exit_codes.BAD_INPUT)
    from harness.report import render_index

    render_index(results)
    handler = partial(ResultsHandler, results=results.resolve())
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port} ({exc.strerror}); pick another "
                   "--port", err=True)
        sys.exit(exit_codes.BAD_INPUT)
    address = f"{host}:{server.server_port}"
    click.echo(f"serving {results} at http://{address}/ "
               f"(latest run: http://{address}/latest/report.html); "
               "Ctrl-C stops")
    sys.stdout.flush()
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            click.echo("stopped")
