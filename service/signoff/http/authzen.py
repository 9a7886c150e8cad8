"""AuthZEN 1.0 (the OpenID Authorization API) over the decision core; mapping: docs/http.md."""

from __future__ import annotations

import datetime as dt
import hmac
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from signoff.audit.record import masking_doc
from signoff.engine import model, schema
from signoff.engine.evaluator import Engine
from signoff.errors import InvalidRequest, SignoffError, Unauthenticated
from signoff.http.core import HttpCore
from signoff.http.errors import error_for
from signoff.http.gateway_json import checked, obj, read_json_object, text
from signoff.identity import bearer_token
from signoff.limits import Limits, step
from signoff.views import requirement_doc

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"
WELL_KNOWN = "/.well-known/authzen-configuration"

# AuthZEN subject types signoff knows as principal kinds; "user" is the spec's own example.
KINDS = {
    "user": model.PrincipalKind.HUMAN,
    "human": model.PrincipalKind.HUMAN,
    "agent": model.PrincipalKind.AGENT,
    "service": model.PrincipalKind.SERVICE,
}
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
# context keys that fill the signoff request's own fields instead of context attributes.
CONTEXT_FIELDS = ("environment", "time", "source_ip", "approval_id", "payload", "explain")
# Only ALLOW is a plain `true`. MASK releases data only once masked, which a PEP that knows
# nothing of signoff's context would not do: it gets `false`, and a PEP that applies
# `context.masking_plan` proceeds on `context.verdict == "MASK"` (fail safe by default).
RELEASING = (model.Verdict.ALLOW,)
# Where a lower-case letter or digit meets an upper-case one: ownerID -> owner_ID -> owner_id.
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def routes(core: HttpCore) -> list[BaseRoute]:
    api = AuthZen(core)
    return [
        Route(EVALUATION, api.evaluation, methods=["POST"]),
        Route(EVALUATIONS, api.evaluations, methods=["POST"]),
        Route(WELL_KNOWN, api.configuration, methods=["GET"]),
    ]


class AuthZen:
    """The three AuthZEN endpoints: authenticate the PEP, convert, decide, convert back."""

    def __init__(self, core: HttpCore) -> None:
        self._core = core
        self._limits: Limits = core.limits
        token = str(core.settings.get("authzen_token", ""))
        self._token = token.encode() if token else b""

    # --- endpoints ------------------------------------------------------------------------

    async def evaluation(self, request: Request) -> Response:
        """One AuthZEN 1.0 access evaluation (docs/http.md has the mapping).
        ---
        post:
          summary: AuthZEN access evaluation
          tags: [authzen]
          requestBody:
            required: true
            content:
              application/json:
                schema: {type: object, required: [subject, action, resource]}
          responses:
            '200':
              description: The decision (a deny is `decision` false); signoff's answer in `context`.
              content:
                application/json:
                  schema:
                    type: object
                    required: [decision]
                    properties: {decision: {type: boolean}}
            '400': {$ref: '#/components/responses/BadRequest'}
            '401': {$ref: '#/components/responses/Unauthenticated'}
        """
        self._authenticate(request)
        body = await read_json_object(request, self._limits)
        item = self._to_request(body, "")
        engine = self._core.engine()
        answer = await run_in_threadpool(self._decide, engine, item, None)
        return _json(answer, request)

    async def evaluations(self, request: Request) -> Response:
        """Several AuthZEN 1.0 evaluations, with defaults and `options.evaluations_semantic`.
        ---
        post:
          summary: AuthZEN access evaluations
          tags: [authzen]
          requestBody:
            required: true
            content:
              application/json:
                schema: {type: object, required: [evaluations]}
          responses:
            '200':
              description: One decision per evaluation, in order.
              content:
                application/json:
                  schema:
                    type: object
                    required: [evaluations]
                    properties: {evaluations: {type: array}}
            '400': {$ref: '#/components/responses/BadRequest'}
            '401': {$ref: '#/components/responses/Unauthenticated'}
        """
        self._authenticate(request)
        body = await read_json_object(request, self._limits)
        items = body.get("evaluations")
        if items is None or items == []:
            # The spec: without items, the call behaves as a single evaluation.
            engine = self._core.engine()
            answer = await run_in_threadpool(self._decide, engine, self._to_request(body, ""), None)
            return _json(answer, request)
        if not isinstance(items, list):
            raise InvalidRequest("evaluations", "must be an array")
        if len(items) > self._limits.max_batch_items:
            raise InvalidRequest("evaluations", f"more than {self._limits.max_batch_items} items")
        options = obj(body, "options", "options")
        semantic = options.get("evaluations_semantic", "execute_all")
        if semantic not in SEMANTICS:
            raise InvalidRequest(
                "options.evaluations_semantic", f"must be one of {', '.join(SEMANTICS)}"
            )
        engine = self._core.engine()  # one bundle for the whole batch, even across a reload
        results = await run_in_threadpool(self._batch, engine, body, items, semantic)
        return _json({"evaluations": results}, request)

    async def configuration(self, request: Request) -> Response:
        """The AuthZEN policy decision point's metadata.
        ---
        get:
          summary: AuthZEN configuration
          tags: [authzen]
          responses:
            '200':
              description: The PDP's endpoints.
              content: {application/json: {schema: {type: object}}}
        """
        base = str(self._core.settings.get("public_url", "")).rstrip("/")
        if not base:
            base = f"{request.url.scheme}://{request.url.netloc}"
        return _json(
            {
                "policy_decision_point": base,
                "access_evaluation_endpoint": base + EVALUATION,
                "access_evaluations_endpoint": base + EVALUATIONS,
            },
            request,
        )

    # --- the work ---------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> None:
        """When a PDP token is configured, the PEP must present it as a bearer token."""
        if not self._token:
            return
        try:
            presented = bearer_token(request.headers.items())
        except Unauthenticated:
            raise Unauthenticated("this PDP requires Authorization: Bearer <token>") from None
        if not hmac.compare_digest(presented.encode(), self._token):
            raise Unauthenticated("the bearer token is not this PDP's")

    def _batch(
        self, engine: Engine, body: dict[str, Any], items: list[Any], semantic: str
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            where = f"evaluations[{i}]"
            try:
                if not isinstance(item, dict):
                    raise InvalidRequest(where, "must be an object")
                # Defaults are whole entities: a key the item gives replaces the top level's.
                merged = {
                    key: item[key] if key in item else body.get(key)
                    for key in ("subject", "action", "resource", "context")
                }
                answer = self._decide(engine, self._to_request(merged, where + "."), i, where + ".")
            except SignoffError as exc:
                # An error in one item is that item's decision: false, with the error, as the
                # spec's per-evaluation errors say; the others still count.
                status, error = error_for(exc)
                answer = {"decision": False, "context": {"error": {"status": status, **error}}}
            results.append(answer)
            if semantic == "deny_on_first_deny" and not answer["decision"]:
                break
            if semantic == "permit_on_first_permit" and answer["decision"]:
                break
        return results

    def _decide(
        self, engine: Engine, request: model.Request, item_index: int | None, where: str = ""
    ) -> dict[str, Any]:
        try:
            outcome = self._core.decisions.decide(engine, request, item_index=item_index)
        except InvalidRequest as exc:
            # The schema check names the signoff request's fields; the caller sent AuthZEN's.
            raise InvalidRequest(where + authzen_field(exc.field), exc.message) from None
        decision = outcome.decision
        context: dict[str, Any] = {
            "verdict": decision.verdict.name,
            "reasons": list(decision.reasons),
            "matched_rules": list(decision.matched_rules),
            "decision_id": outcome.decision_id,
            "policy_revision": decision.policy_revision,
        }
        if decision.errored_rules:
            context["errored_rules"] = list(decision.errored_rules)
        if decision.masking_plan:
            # What client.masking.apply_mask applies; HASH entries name the server's key.
            context["masking_plan"] = {
                "fields": [
                    {**doc, "key_id": key_id, "rule_ids": list(m.rule_ids)}
                    for m, doc in zip(
                        decision.masking_plan, masking_doc(decision.masking_plan), strict=True
                    )
                    for key_id in [self._core.hash_key_id if m.op is model.MaskOp.HASH else ""]
                ]
            }
        if decision.approval is not None:
            context["approval"] = {"id": outcome.approval_id, **requirement_doc(decision.approval)}
        return {"decision": decision.verdict in RELEASING, "context": context}

    def _to_request(self, body: dict[str, Any], where: str) -> model.Request:
        """One AuthZEN evaluation request as a signoff Request (mapping: docs/http.md)."""
        limits = self._limits
        subject = obj(body, "subject", where + "subject", required=True)
        kind_name = text(subject, "type", where + "subject.type", limits, required=True)
        kind = KINDS.get(kind_name)
        if kind is None:
            raise InvalidRequest(where + "subject.type", f"must be one of {', '.join(KINDS)}")
        subject_props = dict(obj(subject, "properties", where + "subject.properties"))
        roles = subject_props.pop("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            raise InvalidRequest(
                where + "subject.properties.roles", "must be a list of non-empty strings"
            )
        if len(roles) > limits.max_roles:
            raise InvalidRequest(
                where + "subject.properties.roles", f"more than {limits.max_roles} roles"
            )
        for i, role in enumerate(roles):
            text({"r": role}, "r", f"{where}subject.properties.roles[{i}]", limits)
        principal = model.Principal(
            id=text(subject, "id", where + "subject.id", limits, required=True),
            kind=kind,
            roles=tuple(roles),
            attributes=_attributes(subject_props, where + "subject.properties", limits),
        )
        action = obj(body, "action", where + "action", required=True)
        action_name = text(action, "name", where + "action.name", limits, required=True)
        resource = obj(body, "resource", where + "resource", required=True)
        resource_props = dict(obj(resource, "properties", where + "resource.properties"))
        fields = self._fields(resource_props.pop("fields", []), where + "resource.properties")
        context = dict(obj(body, "context", where + "context"))
        reserved = {key: context.pop(key) for key in CONTEXT_FIELDS if key in context}
        payload = obj(
            {"payload": {**obj(action, "properties", where + "action.properties")}},
            "payload",
            where + "action.properties",
        )
        if "payload" in reserved:
            # The action's data, when the PEP sends it beside the action rather than in it.
            payload = {**payload, **obj(reserved, "payload", where + "context.payload")}
        explain = reserved.get("explain", False)
        if not isinstance(explain, bool):
            raise InvalidRequest(where + "context.explain", "must be a boolean")
        return model.Request(
            principal=principal,
            action=action_name,
            resource=model.Resource(
                kind=text(resource, "type", where + "resource.type", limits, required=True),
                id=text(resource, "id", where + "resource.id", limits),
                attributes=_attributes(resource_props, where + "resource.properties", limits),
                fields=fields,
            ),
            context=model.Context(
                environment=text(reserved, "environment", where + "context.environment", limits),
                time=_time(reserved.get("time"), where + "context.time"),
                source_ip=text(reserved, "source_ip", where + "context.source_ip", limits),
                attributes=_attributes(context, where + "context", limits),
            ),
            payload=_attributes(payload, where + "action.properties", limits),
            approval_id=text(reserved, "approval_id", where + "context.approval_id", limits),
            explain=explain,
        )

    def _fields(self, value: Any, where: str) -> tuple[model.FieldRef, ...]:
        """resource.properties.fields: the fields the action touches, `{path, tags}` each."""
        limits = self._limits
        if not isinstance(value, list):
            raise InvalidRequest(where + ".fields", "must be a list of {path, tags}")
        if len(value) > limits.max_fields:
            raise InvalidRequest(where + ".fields", f"more than {limits.max_fields} fields")
        out = []
        for i, entry in enumerate(value):
            at = f"{where}.fields[{i}]"
            if not isinstance(entry, dict):
                raise InvalidRequest(at, "must be an object {path, tags}")
            path = text(entry, "path", at + ".path", limits, required=True)
            # The plan's paths have no empty segment, so every caller can apply them.
            if "" in path.split("."):
                raise InvalidRequest(at + ".path", "has an empty segment ('a..b', '.a', 'a.')")
            tags = entry.get("tags", [])
            if not isinstance(tags, list):
                raise InvalidRequest(at + ".tags", "must be a list of strings")
            if len(tags) > limits.max_tags_per_field:
                raise InvalidRequest(at + ".tags", f"more than {limits.max_tags_per_field} tags")
            names = tuple(
                text({"t": t}, "t", f"{at}.tags[{j}]", limits, required=True)
                for j, t in enumerate(tags)
            )
            out.append(model.FieldRef(path=path, tags=names))
        return tuple(out)


# signoff request fields (as the schema check names them) -> the AuthZEN fields they came from.
_FIELDS = (
    ("principal.attributes", "subject.properties"),
    ("principal.roles", "subject.properties.roles"),
    ("principal.id", "subject.id"),
    ("principal.kind", "subject.type"),
    ("resource.attributes", "resource.properties"),
    ("resource.fields", "resource.properties.fields"),
    ("resource.kind", "resource.type"),
    ("context.attributes", "context"),
    ("payload", "action.properties"),
    ("action", "action.name"),
)


def authzen_field(field: str) -> str:
    """`field` of a signoff Request as the AuthZEN request named it."""
    for ours, theirs in _FIELDS:
        if field == ours or field.startswith((ours + ".", ours + "[")):
            return theirs + field[len(ours) :]
    return field


def _attributes(props: dict[str, Any], field: str, limits: Limits) -> dict[str, Any]:
    """AuthZEN properties as signoff attributes. Policy attribute names are snake_case
    (`^[a-z][a-z0-9_]*$`), while AuthZEN PEPs often send camelCase (the interop's `ownerID`):
    top-level names are converted (`ownerID` -> `owner_id`); values are left as they are."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        name = _CAMEL.sub("_", key).lower()
        if name in out:
            raise InvalidRequest(field + step(key), f"names the same attribute {name!r} twice")
        out[name] = value
    checked(out, field, limits)
    return out


def _time(value: Any, field: str) -> dt.datetime | None:
    return None if value is None else schema.timestamp(value, field)


def _json(body: dict[str, Any], request: Request) -> JSONResponse:
    return JSONResponse(body)
