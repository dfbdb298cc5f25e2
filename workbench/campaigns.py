"""``workbench campaign``: create review campaigns, follow their progress and list what needs adjudication.

A campaign hands each reviewer in the app the next item that still needs them (``--overlap`` reviewers per
item, never the same reviewer twice) beside the campaign's guidelines, and closes itself once every item has its
quota. The same functions back the app's Campaigns and Adjudication tabs; the rules live in
``workbench.store.campaigns``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import sqlite_utils

from trainer.cli import positive_int
from trainer.errors import UserError
from workbench import store


def read_guidelines(path: Path | None) -> str:
    """The guidelines' Markdown from a file (UTF-8), or none."""
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the guidelines ({exc})") from exc


def progress_summary(progress: dict) -> str:
    """One line of a campaign's progress (``store.campaign_progress``), as the CLI and the Campaigns tab say it."""
    return (
        f"{progress['complete']} / {progress['items']} items have their {progress['overlap']} reviewer(s); "
        f"{progress['reviews_done']} / {progress['reviews_needed']} reviews done"
    )


def progress_text(db: sqlite_utils.Database, name: str) -> str:
    """A campaign's progress for people: overall, then one line per reviewer."""
    progress = store.campaign_progress(db, name)
    campaign = store.get_campaign(db, name)
    scope = f"{campaign.dataset}" + (f" (split {campaign.split})" if campaign.split else "")
    lines = [
        f"campaign {name!r} on {scope}, models {', '.join(campaign.models)}: "
        f"{'closed' if progress['closed'] else 'open'}",
        progress_summary(progress),
    ]
    for row in store.reviewer_progress(db, name):
        lines.append(f"  {row['reviewer']}: {row['done']} done, {row['in_progress']} in progress")
    return "\n".join(lines)


def disagreements_text(db: sqlite_utils.Database, name: str, *, unresolved_only: bool = False) -> str:
    rows = store.disagreements(db, name, unresolved_only=unresolved_only)
    if not rows:
        return f"campaign {name!r}: no disagreements to adjudicate"
    lines = [f"campaign {name!r}: {len(rows)} item(s) where reviewers disagree"]
    for row in rows:
        why = []
        if row["grade_spread"] >= store.DISAGREEMENT_SPREAD:
            why.append(f"grades {row['grade_spread']} apart")
        if row["opposite_votes"]:
            why.append("opposite votes")
        state = "resolved" if row["resolved"] else "open"
        lines.append(f"  item {row['position'] + 1} [{state}] {', '.join(why)}: {row['instruction'][:70]}")
    return "\n".join(lines)


# --- CLI --------------------------------------------------------------------------------------------------


def _run_create(args: argparse.Namespace) -> None:
    guidelines = read_guidelines(args.guidelines)
    db = store.open_db(args.db)
    campaign = store.create_campaign(
        db,
        args.name,
        dataset=args.dataset,
        models=args.models,
        overlap=args.overlap,
        split=args.split,
        guidelines=guidelines,
        lease_minutes=args.lease_minutes,
    )
    print(f"created campaign {campaign.name!r}")
    print(progress_text(db, campaign.name))


def _run_list(args: argparse.Namespace) -> None:
    db = store.open_db(args.db)
    rows = store.campaign_overview(db)
    if not rows:
        print("no campaigns yet: workbench campaign create --db DB --name NAME --dataset D --models M1 M2")
    for row in rows:
        print(
            f"{row['campaign']}: {row['status']}, {row['dataset']} ({row['split']}), {row['models']}; "
            f"{row['complete']} / {row['items']} items complete, {row['reviews']} reviews"
        )


def _run_progress(args: argparse.Namespace) -> None:
    print(progress_text(store.open_db(args.db), args.name))


def _run_close(args: argparse.Namespace) -> None:
    db = store.open_db(args.db)
    campaign = store.close_campaign(db, args.name, reopen=args.reopen)
    print(f"campaign {campaign.name!r} is {'open' if campaign.is_open else 'closed'}")


def _run_disagreements(args: argparse.Namespace) -> None:
    print(disagreements_text(store.open_db(args.db), args.name, unresolved_only=args.unresolved))


def add_cli(subparsers: Any) -> None:
    """Register ``campaign`` with its subcommands."""
    parser = subparsers.add_parser(
        "campaign", help="review campaigns: overlap, assignment, progress, adjudication", description=__doc__
    )
    commands = parser.add_subparsers(dest="campaign_command", required=True)

    create = commands.add_parser("create", help="create a campaign over a data set and models")
    create.add_argument("--db", required=True, type=Path)
    create.add_argument("--name", required=True)
    create.add_argument("--dataset", required=True)
    create.add_argument("--models", required=True, nargs="+", help="the models reviewers grade side by side")
    create.add_argument("--split", help="only this split's items (default: all)")
    create.add_argument(
        "--overlap",
        type=positive_int,
        default=store.DEFAULT_OVERLAP,
        help=f"reviewers who must grade each item (default {store.DEFAULT_OVERLAP})",
    )
    create.add_argument("--guidelines", type=Path, help="Markdown file shown to reviewers beside every item")
    create.add_argument(
        "--lease-minutes",
        type=positive_int,
        default=store.DEFAULT_LEASE_MINUTES,
        help="how long an item handed to a reviewer stays reserved for them "
        f"(default {store.DEFAULT_LEASE_MINUTES}); then it goes back to the pool",
    )
    create.set_defaults(func=_run_create)

    listing = commands.add_parser("list", help="every campaign and its progress")
    listing.add_argument("--db", required=True, type=Path)
    listing.set_defaults(func=_run_list)

    progress = commands.add_parser("progress", help="one campaign's progress, per reviewer")
    progress.add_argument("name")
    progress.add_argument("--db", required=True, type=Path)
    progress.set_defaults(func=_run_progress)

    close = commands.add_parser("close", help="stop handing out items (a campaign also closes when complete)")
    close.add_argument("name")
    close.add_argument("--db", required=True, type=Path)
    close.add_argument("--reopen", action="store_true", help="open a closed campaign again")
    close.set_defaults(func=_run_close)

    disagreements = commands.add_parser(
        "disagreements", help="items where reviewers disagree (grades 2+ apart or opposite votes)"
    )
    disagreements.add_argument("name")
    disagreements.add_argument("--db", required=True, type=Path)
    disagreements.add_argument("--unresolved", action="store_true", help="only items not adjudicated yet")
    disagreements.set_defaults(func=_run_disagreements)
