"""``finscore campaign plan``: whom to contact with which offer under a budget, and what to say to each.

The work is :func:`engine.marketing.campaign.plan_campaign`'s; the command reads the two files, writes one row
per contact to ``--out`` (Parquet or CSV by its extension) and prints the totals beside those of contacting at
random within the same budget and limits. The lines printed are counts and sums, never a customer's values.

A customer erased with ``finscore forget`` is left out before anything else, as if the table did not hold them
(an erased person is not marketed to again from an older file). Each planned contact is a decision about a person:
written to the audit log under the customer's pseudonym (request id ``<run>/<row>``, the row of the plan's output;
decision the offer, score its expected value) and a closing ``run`` line, once the plan is written; without
``--out`` the plan is only printed (a dry run) and nothing is recorded.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from engine.cli.common import Subparsers, add_repo, positive_int
from engine.errors import UsageError
from engine.settings import resolve_settings

__all__ = ["add_parsers", "campaign_plan_command"]


def add_parsers(sub: Subparsers) -> None:
    campaign = sub.add_parser("campaign", help="marketing campaigns: contacts chosen by expected value under a budget")
    commands = campaign.add_subparsers(dest="campaign_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "plan",
        help="choose contacts (customer, offer) by propensity × value − cost under a budget; consent required",
    )
    p.add_argument("--customers", type=Path, required=True, help="CSV or Parquet: one row per customer")
    p.add_argument(
        "--offers",
        type=Path,
        required=True,
        help="CSV: offer, value, cost; optional capacity (blank: unlimited), model",
    )
    p.add_argument("--budget", type=float, required=True, help="the most the contacts may cost in total (above 0)")
    p.add_argument(
        "--max-contacts-per-customer",
        type=positive_int,
        default=1,
        metavar="N",
        help="contacts per customer (default 1)",
    )
    p.add_argument("--out", type=Path, help="output .parquet or .csv: one row per contact")
    p.add_argument("--id", default="customer_id", help="the customer id column (default customer_id)")
    p.add_argument(
        "--consent",
        default="marketing_consent",
        metavar="COL",
        help="consent column: true/1/yes/y is consent, anything else none (default marketing_consent)",
    )
    p.add_argument(
        "--templates", type=Path, metavar="FILE", help="CSV segment,offer,template (default: the shipped templates)"
    )
    p.add_argument(
        "--method",
        choices=("lp", "greedy"),
        default="lp",
        help="lp: linear relaxation rounded, the better of it and greedy (default); greedy: value per unit of cost",
    )
    p.add_argument(
        "--random-draws", type=positive_int, default=5, metavar="N", help="random plans averaged (default 5)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random plans (default 0)")
    add_repo(p)
    p.set_defaults(func=campaign_plan_command)


def campaign_plan_command(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.budget) and args.budget > 0):
        msg = f"--budget must be a number above 0, got {args.budget:g}"
        raise UsageError(msg)
    from engine.marketing import MessageTemplates, plan_campaign, read_offers
    from engine.security.erasure import without_erased
    from engine.security.trail import DecisionAudit, Trail
    from engine.tables.io import read_table, require_columns, table_format, write_table

    if args.out is not None:
        table_format(args.out)  # an unusable name fails before the work, not after
    offers = read_offers(args.offers)
    templates = MessageTemplates.load(args.templates)
    customers = read_table(args.customers)
    require_columns(customers.columns, [args.id], source=str(args.customers))
    trail = Trail.from_env()
    customers, erased, _ = without_erased(customers, args.id, trail)
    plan = plan_campaign(
        customers,
        offers,
        budget=args.budget,
        max_contacts_per_customer=args.max_contacts_per_customer,
        id_column=args.id,
        consent_column=args.consent,
        templates=templates,
        repo=resolve_settings(repo=args.repo).repo,
        method=args.method,
        random_draws=args.random_draws,
        seed=args.seed,
    )
    if erased:
        print(f"{erased:,} customers erased with finscore forget: left out")
    for line in plan.lines():
        print(line)
    if args.out is None:  # a dry run: nothing is written, so nothing is decided
        return 0
    audit = DecisionAudit(
        trail,
        command="campaign",
        model="campaign",
        version="plan",
        decision="offer",
        score="expected_value",
        subject=args.id,
    )
    audit.record(plan.contacts.with_row_index("row"))
    write_table(plan.contacts, args.out)
    audit.close("written", contacts=plan.contacts.height)
    print(f"{args.out}: {plan.contacts.height:,} contacts; decisions recorded in the audit log {trail.path}")
    return 0
