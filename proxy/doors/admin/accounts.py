"""The accounts pages: the list (search, create with the secret shown once, stop/start), one
account (its keys: create with the secret shown once, revoke; top-up), and the forms editing
an account's limits and its keys' (operations.update_account / update_key)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for

from proxy import operations
from proxy.doors import kit
from proxy.doors.admin.access import admin_blp, who
from proxy.doors.admin.forms import day, limit, names, text, whole
from proxy.keys import parse_list, parse_networks
from proxy.usage import usage_report


@admin_blp.route("/accounts", methods=["GET", "POST"])
def accounts():
    created = None
    if request.method == "POST":
        try:
            created = operations.create_account(
                kit.gateway(),
                who(),
                text("name", required=True),
                daily_quota=whole("daily_quota", minimum=0),
                balance=whole("balance", minimum=0, most=operations.MOST_CREDITS),
                rpm=whole("rpm", minimum=1),
            )
        except ValueError as bad:
            flash(str(bad), "error")
    return _accounts_page(created)


def _accounts_page(created=None):
    gateway = kit.gateway()
    query = request.args.get("q", "").strip()
    rows = [
        a
        for a in gateway.accounts.list()
        if not query or query.lower() in a.name.lower() or query in a.key
    ]
    figures = {a.id: gateway.meter.today_figures(a.id) for a in rows}
    return render_template(
        "admin/accounts.html", accounts=rows, figures=figures, query=query, created=created
    )


@admin_blp.route("/accounts/<key>")
def account(key: str, new_key=None):
    gateway = kit.gateway()
    try:
        found = gateway.accounts.get(key)
        keys = gateway.accounts.keys_of(key)
    except LookupError:
        abort(404)
    return render_template(
        "admin/account.html",
        account=found,
        keys=keys,
        today=gateway.meter.today_figures(found.id),
        usage=usage_report(gateway.engine, account_id=found.id, since_utc=None),
        new_key=new_key,
    )


@admin_blp.route("/accounts/<key>/<action>", methods=["POST"])
def account_action(key: str, action: str):
    gateway = kit.gateway()
    try:
        if action == "stop":
            operations.stop_account(gateway, who(), key)
            flash(f"Account {key} stopped: its calls now answer 4007.", "done")
        elif action == "start":
            operations.start_account(gateway, who(), key)
            flash(f"Account {key} started.", "done")
        elif action == "topup":
            credits = whole("credits", minimum=1, most=operations.MOST_CREDITS)
            calls = whole("calls", minimum=1)
            if credits is None and calls is None:
                raise ValueError("Say what to add: credits, calls for today, or both.")
            operations.top_up(gateway, who(), key, credits=credits, calls=calls)
            flash(f"Account {key} topped up.", "done")
        elif action == "keys":
            new_key = operations.create_key(
                gateway,
                who(),
                key,
                label=text("label"),
                models=parse_list(text("models") or None),
                ips=parse_networks(text("ips") or None),
                rpm=whole("rpm", minimum=1),
                tpm=whole("tpm", minimum=1),
                expires_on=day("expires"),
            )
            return account(key, new_key=new_key)
        else:
            abort(404)
    except LookupError:
        abort(404)
    except ValueError as bad:
        flash(str(bad), "error")
    back = request.form.get("back", "")
    if not back.startswith("/admin/") or "//" in back:  # only to a console page
        back = url_for("admin.account", key=key)
    return redirect(back)


@admin_blp.route("/keys/<key>/revoke", methods=["POST"])
def revoke_key(key: str):
    gateway = kit.gateway()
    try:
        revoked = operations.revoke_key(gateway, who(), key)
    except LookupError:
        abort(404)
    flash(f"Key {key} revoked: its calls now answer 4005.", "done")
    account_key = gateway.accounts.account_key_of(revoked.account_id)
    return redirect(url_for("admin.account", key=account_key))


# -- editing an account's limits and its keys' (operations.update_account / update_key) ------


@admin_blp.route("/accounts/<key>/limits", methods=["POST"])
def account_limits(key: str):
    """The account page's Limits form: every field sent, a blank one meaning no limit."""
    try:
        edited = operations.update_account(
            kit.gateway(),
            who(),
            key,
            name=text("name", required=True),
            daily_quota=limit("daily_quota", minimum=0, required=True),
            concurrency=limit("concurrency", minimum=1),
            rpm=limit("rpm", minimum=1),
            tpm=limit("tpm", minimum=1),
            expires=day("expires"),
            apis=names("apis"),
        )
        flash(_saved(f"Limits of account {key}", edited), "done")
    except LookupError:
        abort(404)
    except ValueError as bad:
        flash(str(bad), "error")
    return redirect(url_for("admin.account", key=key))


@admin_blp.route("/keys/<key>/edit", methods=["POST"])
def edit_key(key: str):
    """A key row's edit form: every field sent, a blank one meaning no limit or list."""
    gateway = kit.gateway()
    try:
        account_key = gateway.accounts.account_key_of(gateway.accounts.get_key(key).account_id)
    except LookupError:
        abort(404)
    try:
        edited = operations.update_key(
            gateway,
            who(),
            key,
            label=text("label"),
            models=names("models"),
            ips=names("ips"),
            rpm=limit("rpm", minimum=1),
            tpm=limit("tpm", minimum=1),
            expires=day("expires"),
        )
        flash(_saved(f"Key {key}", edited), "done")
    except ValueError as bad:
        flash(str(bad), "error")
    return redirect(url_for("admin.account", key=account_key))


def _saved(what: str, edited: operations.Edited) -> str:
    if not edited.changed:
        return f"{what}: nothing changed."
    return f"{what} saved: {operations.edit_detail(edited.changed)}."
