"""Methods the gateway answers itself, from its upstreams and its database: the merged model
list and the image jobs. Each takes the dispatcher's services, the call and validated args."""

from __future__ import annotations

from marshmallow import fields, validate

from proxy.errors import GatewayError
from proxy.handlers import openai as openai_handlers
from proxy.handlers.openai import ImageGenerationArgs, _UpstreamArgs


class ImageSubmitArgs(ImageGenerationArgs):
    """images/submit: the arguments of v1/images/generations; the model defaults in config."""


class ImageGetArgs(_UpstreamArgs):
    imgid = fields.String(
        required=True,
        validate=validate.Regexp(r"^\d{1,32}$", error="must be the imgid images/submit returned"),
    )


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


def generate_for_job(router, args: dict) -> dict:
    """What an image job runs in the background: v1/images/generations on the model's upstream."""
    client = router.client_for(router.route_model(args.get("model")))
    return openai_handlers.generate_images(client, args)
