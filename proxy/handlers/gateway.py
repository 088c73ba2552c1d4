"""Methods the gateway answers itself, from its upstreams and its database: the merged model
list, the image jobs and the files, which each account owns. Each takes the dispatcher's
services, the call and validated args."""

from __future__ import annotations

import logging

from proxy.errors import INTERNAL_ERROR, TARGET_SERVER_ERROR, WRONG_PAGE_TOKEN, GatewayError
from proxy.files import bad_cursor_reason
from proxy.handlers import openai as openai_handlers
from proxy.schemas import FILE_ID

log = logging.getLogger("proxy")


def list_models_everywhere(services, call, args: dict) -> dict:
    """Every upstream's models, each listed by the upstream its id routes to. An upstream that
    fails is named in `unavailable_upstreams` (and the answer is not cached); when all fail,
    the first failure is the answer."""
    router = services.router
    data, seen, unavailable, failures = [], set(), [], []
    for upstream in router.upstreams():
        try:
            listing = openai_handlers.list_models(router.client_for(upstream), args)
        except GatewayError as exc:
            unavailable.append(upstream.name)
            failures.append(exc)
            continue
        for model in listing.get("data") or []:
            model_id = model.get("id") if isinstance(model, dict) else None
            if model_id and model_id not in seen and router.lists_model(upstream, model_id):
                seen.add(model_id)
                data.append(model)
    if failures and len(failures) == len(router.upstreams()):
        raise failures[0]
    answer = {"object": "list", "data": data}
    if unavailable:
        answer["unavailable_upstreams"] = unavailable
    return answer


def submit_image_job(services, call, args: dict) -> dict:
    return {"imgid": services.jobs.submit(call.account_id, args, call.request_id)}


def get_image_job(services, call, args: dict) -> dict:
    """A pending or running job answers 0000 with its status; a failed one answers its own
    code and reason, with the job in `response`."""
    job = services.jobs.get(call.account_id, args["imgid"])
    if job["status"] == "failed":
        raise GatewayError(job["error"]["code"], job["error"]["reason"], response=job)
    return job


def list_or_upload_files(services, call, args: dict) -> dict:
    """Upload a file (it becomes the caller's), or list the caller's own files."""
    if "file" in args:
        return _upload_file(services, call, args)
    after = args.get("after")
    if after is not None and FILE_ID.match(after) is None:
        raise GatewayError(WRONG_PAGE_TOKEN, bad_cursor_reason(after))
    listing = {name: args[name] for name in ("purpose", "order", "limit") if name in args}
    return services.files.page(call.account_id, after=after, **listing)


def _upload_file(services, call, args: dict) -> dict:
    client = services.router.client_for(services.router.default)
    uploaded = openai_handlers.upload_file(client, args)
    file_id = uploaded.get("id")
    if not isinstance(file_id, str) or FILE_ID.match(file_id) is None:
        raise GatewayError(
            TARGET_SERVER_ERROR, "the upstream's answer to the upload has no file id"
        )
    try:
        services.files.record(call.account_id, uploaded)
    except Exception:  # an upload nobody owns could never be reached again: take it back
        log.exception("recording file %s failed in request %s", file_id, call.request_id)
        _delete_quietly(client, file_id)
        raise GatewayError(
            INTERNAL_ERROR,
            f"the upload could not be recorded as this account's; upload it again "
            f"(see log of {call.request_id})",
        ) from None
    return uploaded


def _delete_quietly(client, file_id: str) -> None:
    try:
        openai_handlers.delete_file(client, {"file_id": file_id})
    except GatewayError:
        log.warning("file %s stays upstream with no owner", file_id)


def retrieve_file(services, call, args: dict) -> dict:
    return openai_handlers.retrieve_file(_own_file_client(services, call, args), args)


def file_content(services, call, args: dict) -> dict:
    return openai_handlers.file_content(_own_file_client(services, call, args), args)


def delete_file(services, call, args: dict) -> dict:
    """Delete upstream, then forget the owner; a file the upstream no longer has (it expired
    there) is forgotten too, and its 404 answered."""
    try:
        deleted = openai_handlers.delete_file(_own_file_client(services, call, args), args)
    except GatewayError as exc:
        if exc.upstream_status == 404:
            services.files.forget(args["file_id"])
        raise
    services.files.forget(args["file_id"])
    return deleted


def _own_file_client(services, call, args: dict):
    """The files upstream's client, once `file_id` is the caller's own (else not found)."""
    services.files.check(call.account_id, args["file_id"])
    return services.router.client_for(services.router.default)


def generate_for_job(failover, args: dict) -> dict:
    """What an image job runs in the background: v1/images/generations on the model's pool."""
    _, answer = failover.call(
        args.get("model"), lambda client: openai_handlers.generate_images(client, args)
    )
    return answer
