"""Every ``belegwacht`` command. Thin on purpose: parse, call the module that does the work, print.

User errors (``detect.errors.UserError``) print one clear message and exit non-zero; only real
bugs show a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import getpass
import os
import sys
from pathlib import Path
from typing import NoReturn

from detect.errors import UserError

DEFAULT_DATA_DIR = Path("var")

RUN_ALLOCATOR_ENV: dict[str, str] = {
    "_RJEM_MALLOC_CONF": "oversize_threshold:0,dirty_decay_ms:2000,muzzy_decay_ms:2000"}
"""Memory-allocator settings of a ``belegwacht run`` (its worker processes inherit them); a
variable the user has set is left as it is.

``_RJEM_MALLOC_CONF`` is read by Polars' jemalloc when Polars loads (Polars puts its own
``dirty_decay_ms:500,muzzy_decay_ms:1000`` in front; later keys win). By default every
allocation of 8 MB or more (a column of a million lines) goes to an arena that gives freed
memory back to the kernel at once, and the ordinary arenas give it back after 0.5-1.5 s, so the
next stage faults the same memory in and zeroes it page by page again (~1.1M minor faults per
1M-line run). ``oversize_threshold:0`` keeps large blocks in the ordinary arenas, and 2 s
before freed pages are returned lets a stage reuse what the one before it freed. Measured
(-10 to -15 % page faults, ~-0.25 s system time, peak RSS within the run-to-run spread at 1M
and 10M), and the settings rejected (keeping freed memory for good: +0.5 GB peak), in
docs/performance.md ("Memory allocator")."""


def _data_dir(args: argparse.Namespace) -> Path:
    data_dir = Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def _settings(args: argparse.Namespace):
    from detect.config import load_settings

    return load_settings(Path(args.config) if getattr(args, "config", None) else None,
                         entity=getattr(args, "entity", None))


def _store(args: argparse.Namespace):
    from detect.store import ReviewStore

    return ReviewStore.for_data_dir(_data_dir(args), _settings(args).store_url)


# --- run ---------------------------------------------------------------------------------------

def allocator_env(env: dict[str, str] | os._Environ[str] | None = None) -> dict[str, str]:
    """Set the ``RUN_ALLOCATOR_ENV`` variables that ``env`` (default: this process's
    environment) does not have yet; return those set. Must run before Polars is imported."""
    env = os.environ if env is None else env
    added = {k: v for k, v in RUN_ALLOCATOR_ENV.items() if k not in env}
    env.update(added)
    return added


def cmd_run(args: argparse.Namespace) -> int:
    allocator_env()  # before the first import of Polars (detect.pipeline)
    from detect import pipeline
    from detect.runlog import StepLog
    from detect.summary import print_run_summary

    settings = _settings(args)
    data_dir = _data_dir(args)
    log = StepLog(quiet=args.quiet)
    if args.inbox:
        results = pipeline.run_inbox(Path(args.inbox), fmt=args.format, settings=settings,
                                     data_dir=data_dir, log=log, wait_seconds=args.wait)
        for line in results.lines():
            print(line)
        return results.exit_code()
    if not args.sources:
        raise UserError("name at least one SOURCE file or folder, or use --inbox DIR")
    summary = pipeline.run_delivery(
        [Path(s) for s in args.sources], fmt=args.format, settings=settings, data_dir=data_dir,
        control_totals=Path(args.control_totals) if args.control_totals else None, log=log,
        rescore_history=args.rescore_history, wait_seconds=args.wait)
    print_run_summary(summary.manifest, summary.run_dir)
    return 0


# --- export ------------------------------------------------------------------------------------

def cmd_export_findings(args: argparse.Namespace) -> int:
    from detect.export import export_findings

    rows = export_findings(_data_dir(args), args.run, Path(args.output), lang=args.lang,
                           store_url=_settings(args).store_url, pseudonymise=args.pseudonymise)
    print(f"wrote {rows} findings to {args.output}")
    return 0


# --- rules -------------------------------------------------------------------------------------

def cmd_rules_list(args: argparse.Namespace) -> int:
    from detect.rules import format_catalog_table, load_catalog

    print(format_catalog_table(load_catalog(), lang=args.lang))
    return 0


def cmd_rules_show(args: argparse.Namespace) -> int:
    from detect.rules import describe_rule, find_rule, load_catalog

    print(describe_rule(find_rule(load_catalog(), args.rule_id), lang=args.lang))
    return 0


def cmd_rules_test(args: argparse.Namespace) -> int:
    from detect.rules import find_rule, load_catalog, run_cases

    catalog = load_catalog()
    selected = [find_rule(catalog, args.rule_id)] if args.rule_id else catalog
    results = run_cases(selected)
    failed = [r for r in results if not r.passed]
    for r in results:
        if not r.passed or args.verbose:
            print(f"{'ok  ' if r.passed else 'FAIL'} {r.rule_id} {r.case}"
                  + (f": {r.message}" if r.message else ""))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


# --- review store ------------------------------------------------------------------------------

def cmd_verify_log(args: argparse.Namespace) -> int:
    from detect.store import anchors_from_runs

    result = _store(args).verify_log(anchors=anchors_from_runs(_data_dir(args)))
    print(result.message)
    return 0 if result.ok else 1


def cmd_users(args: argparse.Namespace) -> int:
    from detect import auth

    store = _store(args)
    if args.users_cmd == "add":
        password = args.password or os.environ.get("BELEGWACHT_PASSWORD") \
            or getpass.getpass(f"password for {args.username}: ")
        auth.add_user(store, args.username, password, role=args.role,
                      display_name=args.display_name)
        print(f"added {args.username} ({args.role})")
    elif args.users_cmd == "list":
        for user in store.list_users():
            state = "active" if user["active"] else "disabled"
            print(f"{user['username']:<20} {user['role']:<8} {state}")
    elif args.users_cmd == "disable":
        store.disable_user(args.username)
        print(f"disabled {args.username}")
    elif args.users_cmd == "set-role":
        store.set_role(args.username, args.role)
        print(f"{args.username} is now {args.role}")
    return 0


def cmd_suppressions(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.supp_cmd == "list":
        for s in store.list_suppressions(include_revoked=args.all):
            scope = ", ".join(f"{k}={v}" for k, v in sorted(s["scope"].items()) if k != "rule_id")
            state = "active" if s["active"] else f"revoked by {s['revoked_by']}"
            print(f"{s['id']}  {s['rule_id']}  {scope}  by {s['created_by']} "
                  f"{s['created_at'][:10]}  ({state}): {s['reason']}")
    elif args.supp_cmd == "revoke":
        store.revoke_suppression(args.suppression_id, user=args.user, reason=args.reason)
        print(f"revoked suppression {args.suppression_id}")
    return 0


# --- report and app ----------------------------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    from detect.report import build_report

    out = build_report(_data_dir(args), args.month, entity=args.entity,
                       output=Path(args.output) if args.output else None, lang=args.lang,
                       settings=_settings(args))
    print(f"wrote {out}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parent.parent
    app = root / "app.py"
    # the checkout's app.py only in a checkout: an installed package's parent is site-packages,
    # where a top-level app.py (if any) belongs to some other distribution
    if not (app.exists() and (root / "pyproject.toml").is_file()):
        from importlib.resources import files
        app = Path(str(files("detect") / "app_entry.py"))
    env = dict(os.environ, BELEGWACHT_DATA_DIR=str(_data_dir(args).resolve()))
    if args.config:
        env["BELEGWACHT_CONFIG"] = str(Path(args.config).resolve())
    cmd = [sys.executable, "-m", "streamlit", "run", str(app),
           "--server.port", str(args.port), "--server.headless", "true",
           "--server.enableXsrfProtection", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal", "--client.showErrorDetails", "none",
           "--server.address", args.address]
    # Replace this process with Streamlit: signals (Ctrl-C, systemd stop, a test's SIGTERM)
    # reach the server directly and no orphaned server outlives its launcher.
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


# --- parser ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="belegwacht", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, entity: bool = True) -> None:
        p.add_argument("--data-dir", help="data directory (default ./var)")
        p.add_argument("--config", help="belegwacht.toml (default ./belegwacht.toml if present)")
        if entity:
            p.add_argument("--entity", help="entity (municipality) name")

    p = sub.add_parser("run", help="one nightly run on a delivery")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="files or folders")
    p.add_argument("--format", default="auto",
                   choices=["auto", "datev", "sap", "ads", "gdpdu", "saft", "csv"])
    p.add_argument("--control-totals", help="CSV of per-journal or overall control totals")
    p.add_argument("--inbox", help="process every not yet processed delivery in this folder")
    p.add_argument("--rescore-history", action="store_true",
                   help="create review items for the whole history, not only this delivery")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="wait this long for a running run of the same entity (default: exit)")
    p.add_argument("-q", "--quiet", action="store_true")
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("export", help="export data")
    esub = p.add_subparsers(dest="what", required=True)
    e = esub.add_parser("findings", help="flagged items of a run (CSV, Parquet, XLSX)")
    e.add_argument("--run", help="run id (default: CURRENT)")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--lang", default="de", choices=["de", "en"])
    e.add_argument("--pseudonymise", action="store_true",
                   help="replace employee and private payee names by pseudonyms (for readers "
                        "who need no names, e.g. finance managers)")
    common(e)
    e.set_defaults(func=cmd_export_findings)

    p = sub.add_parser("rules", help="the rule catalog")
    rsub = p.add_subparsers(dest="rules_cmd", required=True)
    r = rsub.add_parser("list")
    r.add_argument("--lang", default="de", choices=["de", "en"])
    r.set_defaults(func=cmd_rules_list)
    r = rsub.add_parser("show")
    r.add_argument("rule_id")
    r.add_argument("--lang", default="de", choices=["de", "en"])
    r.set_defaults(func=cmd_rules_show)
    r = rsub.add_parser("test")
    r.add_argument("rule_id", nargs="?")
    r.add_argument("-v", "--verbose", action="store_true")
    r.set_defaults(func=cmd_rules_test)

    p = sub.add_parser("verify-log", help="recompute the decision hash chain")
    common(p)
    p.set_defaults(func=cmd_verify_log)

    p = sub.add_parser("users", help="local accounts of the review app")
    usub = p.add_subparsers(dest="users_cmd", required=True)
    u = usub.add_parser("add")
    u.add_argument("username")
    u.add_argument("--role", default="auditor", choices=["auditor", "manager", "admin"])
    u.add_argument("--display-name")
    u.add_argument("--password", help="(prefer the prompt or BELEGWACHT_PASSWORD)")
    common(u, entity=False)
    u = usub.add_parser("list")
    common(u, entity=False)
    u = usub.add_parser("disable")
    u.add_argument("username")
    common(u, entity=False)
    u = usub.add_parser("set-role")
    u.add_argument("username")
    u.add_argument("role", choices=["auditor", "manager", "admin"])
    common(u, entity=False)
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("suppressions", help="list or revoke suppressions")
    ssub = p.add_subparsers(dest="supp_cmd", required=True)
    s = ssub.add_parser("list")
    s.add_argument("--all", action="store_true", help="include revoked ones")
    common(s, entity=False)
    s = ssub.add_parser("revoke")
    s.add_argument("suppression_id")
    s.add_argument("--user", default=getpass.getuser())
    s.add_argument("--reason", required=True)
    common(s, entity=False)
    p.set_defaults(func=cmd_suppressions)

    p = sub.add_parser("report", help="monthly summary for finance managers")
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("-o", "--output", help="FILE.html or FILE.pdf")
    p.add_argument("--lang", default="de", choices=["de", "en"])
    common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("app", help="start the review app")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1")
    common(p, entity=False)
    p.set_defaults(func=cmd_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"belegwacht: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("belegwacht: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `belegwacht rules list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def run_program() -> NoReturn:
    """The ``belegwacht`` command: ``main``, then leave without the interpreter's teardown.

    After a 1M-line run, freeing every module and object one by one takes 0.3-0.6 s of wall
    time that the operating system does in a few milliseconds when the process ends. Exit
    handlers still run (logging, the finalizers that stop worker processes) and stdout/stderr
    are flushed first. Tests call ``main`` instead, which returns."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to lose
            pass
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:  # not CPython: the normal, slower exit
        sys.exit(code)
    run_exit_handlers()
    os._exit(code)


if __name__ == "__main__":
    run_program()
