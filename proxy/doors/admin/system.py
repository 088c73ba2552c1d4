"""The pages about the gateway itself: API stops and maintenance (for every account or one),
the upstream members with their health and the reload of UPSTREAMS_FILE, the audit log."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for

from proxy import audit, operations
from proxy.api_states import ALL_APIS, EVERY_ACCOUNT, MAINTENANCE, STOPPED
from proxy.catalog import CATALOG, PLATFORMS
from proxy.doors import kit
from proxy.doors.admin.access import admin_blp, who
from proxy.doors.admin.forms import text
from proxy.failover import describe_members
from proxy.usage import usage_report

API_STATES = {"stop": STOPPED, "maintenance": MAINTENANCE, "start": None}


@admin_blp.route("/apis", methods=["GET", "POST"])
def apis():
    """The stopped and maintained APIs (?account=KEY: those that hold for that account), and
    the form changing them for every account or for one picked from the list."""
    gateway = kit.gateway()
    if request.method == "POST":
        _change_api_state(gateway)
        return redirect(url_for("admin.apis", account=text("shown") or None))
    every = gateway.accounts.list()
    chosen = request.args.get("account", "").strip()
    chosen_account = next((a for a in every if a.key == chosen), None)
    if chosen and chosen_account is None:
        flash(f"No account has the key {chosen[:64]!r}; showing every account.", "error")
        chosen = ""
    states = gateway.api_states.list()
    if chosen_account is not None:
        states = [s for s in states if s["account_id"] in (EVERY_ACCOUNT, chosen_account.id)]
    return render_template(
        "admin/apis.html",
        states=states,
        accounts=every,
        account_of={a.id: a for a in every},
        chosen=chosen,
        chosen_account=chosen_account,
        every_account=EVERY_ACCOUNT,
        targets=[ALL_APIS, *sorted(PLATFORMS), *sorted(CATALOG)],
    )


def _change_api_state(gateway) -> None:
    """Stop, maintain or start the form's target for every account or the picked one."""
    action, account_key = request.form.get("action", ""), text("account") or None
    try:
        target = text("target", required=True)
        if target != ALL_APIS and target not in PLATFORMS and target not in CATALOG:
            raise ValueError(f"{target!r} is not a method, a platform or `{ALL_APIS}`.")
        if action not in API_STATES:
            raise ValueError("Choose stop, maintenance or start.")
        operations.set_api_state(gateway, who(), target, API_STATES[action], account_key)
        flash(f"{target}: {action} for {account_key or 'every account'}.", "done")
    except LookupError:
        flash(f"No account has the key {account_key[:64]!r}.", "error")
    except ValueError as bad:
        flash(str(bad), "error")


@admin_blp.route("/upstreams")
def upstreams():
    """The members and their health as this worker sees it (shared by every worker and host
    with REDIS_URL), with the calls each answered."""
    gateway = kit.gateway()
    failover = gateway.dispatcher.failover
    failover.router.refresh()  # a reload asked for elsewhere shows here as it does to calls
    report = usage_report(gateway.engine, account_id=None, since_utc=None)
    return render_template(
        "admin/upstreams.html",
        members=describe_members(failover.router, failover.health),
        answered=report["by_upstream"],
        shared=bool(current_app.config["REDIS_URL"]),
        upstreams_file=failover.router.file_path,
    )


@admin_blp.route("/upstreams/reload", methods=["POST"])
def reload_upstreams():
    """`flask upstreams reload` from the console: a bad file is refused with its reason."""
    try:
        reloaded = operations.reload_upstreams(kit.gateway(), who())
    except ValueError as refused:
        flash(f"Refused, the workers keep the upstreams they have: {refused}", "error")
    else:
        members = ", ".join(reloaded["members"])
        flash(
            f"Reload {reloaded['generation']} asked: members {members}. "
            "Every worker on every host takes it within about a second.",
            "done",
        )
    return redirect(url_for("admin.upstreams"))


@admin_blp.route("/audit")
def audit_page():
    return render_template("admin/audit.html", rows=audit.recent(kit.gateway().engine, 200))
