"""`segdistill fetch`: download and install the tutorial's pretrained teacher and student."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from ._common import console, err_console, styled

ORDER = 10


WHICH_HELP = "teacher, student, a model name, or all (default)."


def _pairs(values: Optional[List[str]], option: str) -> dict[str, str]:
    """`NAME=VALUE` options -> dict (NAME is a model name or teacher/student)."""
    out = {}
    for text in values or ():
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{option} {text!r}: expected NAME=VALUE (NAME: teacher, student "
                              "or a model name)")
        out[name.strip()] = value.strip()
    return out


def fetch(
    which: Optional[List[str]] = typer.Argument(None, help=WHICH_HELP, show_default=False),
    dest: Path = typer.Option(Path("pretrained_model"), "--dest",
                              help="Folder that receives <dest>/<model name>/ and the lock file."),
    mirror: Optional[str] = typer.Option(None, "--mirror", envvar="SEGDISTILL_MIRROR",
                                         help="Base URL replacing the host: <BASE_URL>/<file>."),
    url: Optional[List[str]] = typer.Option(None, "--url", metavar="NAME=URL",
                                            help="Download NAME from URL (repeatable)."),
    sha256: Optional[List[str]] = typer.Option(None, "--sha256", metavar="NAME=HEX",
                                               help="Require this sha256 for NAME (repeatable)."),
    from_file: Optional[List[str]] = typer.Option(None, "--from", metavar="NAME=FILE.tgz",
                                                  help="Install NAME from a tarball on disk."),
    force: bool = typer.Option(False, "--force", help="Fetch again even if present."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of results."),
) -> None:
    """Download, verify (sha256 + lock file), safely extract and check the pretrained models."""
    from ..fetch import fetch_models

    results = fetch_models(
        which or (), dest, mirror=mirror, urls=_pairs(url, "--url"),
        sha256s=_pairs(sha256, "--sha256"), from_files=_pairs(from_file, "--from"), force=force,
        log=lambda text: err_console.print(text))
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
        return
    for r in results:
        console.print(styled(r.status, "green", f" {r.name} -> {r.path} "
                             f"({r.bytes} bytes, sha256 {r.sha256})"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch)
