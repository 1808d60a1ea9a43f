"""``graywave token issue|list|revoke``: the REST API's bearer tokens."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from graywave.cli.common import CommandFailed, console, err_console, failing, print_frame
from graywave.cli.options import JsonOption, check_user
from graywave.config import Settings
from graywave.errors import GraywaveError

token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens of the REST API.")


@token_app.command("issue")
def token_issue(
    label: Annotated[
        str | None, typer.Argument(help="The user id the token is for (or a label, with --admin).")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="A token for every route and every user.")] = False,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="Issue a user token to each user id of this file (one a line; - for stdin) and print"
            " 'user<TAB>token' lines. Every line is checked first: a bad line issues nothing.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Create a token, store its SHA-256 in the token store, and print it (this once)."""
    from graywave.service.tokens import open_token_store

    if from_file is not None:
        if label is not None or admin:
            raise typer.BadParameter("--from-file issues user tokens only: give no USER and no --admin")
        _issue_from_file(from_file)
        return
    if label is None:
        raise typer.BadParameter("give the USER the token is for (or a label with --admin), or --from-file")
    if not admin:
        check_user(label)
    with failing("no token issued"):  # a user id that cannot be one, a damaged token store
        store = open_token_store(Settings())
        try:
            token = store.issue(label, admin)
        finally:
            store.close()
    typer.echo(token)


def _issue_from_file(path: Path) -> None:
    """``token issue --from-file``: the user ids read and checked, then their tokens issued a chunk
    at a time, each chunk's lines printed once it is stored."""
    from graywave.service.tokens import open_token_store, read_user_ids

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        why = f"{path} cannot be read ({type(error).__name__}: {error})"
        raise CommandFailed("no token issued", why, stderr=True) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    with failing("no token issued", stderr=True):
        users = read_user_ids(lines)
        store = open_token_store(Settings())
    done = 0
    try:
        for issued in store.issue_many(users):
            sys.stdout.write("".join(f"{user}\t{token}\n" for user, token in issued))
            sys.stdout.flush()
            done += len(issued)
    except GraywaveError as error:
        what = (
            f"tokens issued to the first {done} users only (lines 1 to {done}, printed above); none to the"
            f" {len(users) - done} users from line {done + 1} on"
        )
        raise CommandFailed(what, str(error), stderr=True) from error
    finally:
        store.close()
    err_console.print(f"issued {done} tokens")


@token_app.command("list")
def token_list(
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000, help="Tokens on this page.")] = 100,
    after: Annotated[
        str, typer.Option("--after", help="Start after this token id (the last id of the page before).")
    ] = "",
) -> None:
    """The tokens, a page at a time in token id order: id, label, user, admin (the tokens themselves are
    not stored). The next page: --after the last id shown."""
    import polars as pl

    from graywave.service.tokens import open_token_store

    store = open_token_store(Settings())
    try:
        tokens = store.page(limit, after.lower())
    finally:
        store.close()
    schema = {"token_id": pl.String, "label": pl.String, "user_id": pl.String, "admin": pl.Boolean}
    more = f"; the next page: --after {tokens[-1].token_id}" if len(tokens) == limit else ""
    print_frame(pl.DataFrame([vars(t) for t in tokens], schema=schema), as_json, f"{len(tokens)} tokens{more}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's id, from `graywave token list`.")]) -> None:
    """Revoke a token: every API process refuses it within 0.5 s."""
    from graywave.service.tokens import open_token_store

    with failing("no token revoked"):
        store = open_token_store(Settings())
        try:
            revoked = store.revoke(token_id)
        finally:
            store.close()
    console.print(f"revoked token {revoked.token_id} ({revoked.label}{', admin' if revoked.admin else ''})")
