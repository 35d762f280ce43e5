"""`cadenza doctor`: what is installed, what is missing, and what that costs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="report what is installed and what is missing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cadenza.doctor import check_environment

    ok = True
    for check in check_environment():
        mark = "ok " if check.ok else ("-- " if check.optional else "!! ")
        ok &= check.ok or check.optional
        print(f"{mark} {check.name:<14} {check.detail}")
        if not check.ok and check.cost:
            print(f"    {'':<14} {check.cost}")
    return 0 if ok else 1
