"""The gateway's OpenAPI document, built from the routes themselves and served at /openapi.json.

Every route's endpoint documents its own operation in its docstring, after a `---` line, as
YAML (Starlette's SchemaGenerator reads it); the shared shapes are the components below. The
document is committed as docs/openapi.json; tests/http/test_http_approvals_openapi.py fails
when the served one differs or a route has no operation.
"""

from __future__ import annotations

from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.schemas import EndpointInfo, SchemaGenerator

PATH = "/openapi.json"

_COMPONENTS = """
securitySchemes:
  bearer:
    type: http
    scheme: bearer
    bearerFormat: JWT
    description: A token from the identity provider signoff trusts, verified as gRPC verifies it.
  session:
    type: apiKey
    in: cookie
    name: signoff_session
    description: >-
      The web inbox's session after its OpenID Connect login; state changes by session also
      need the inbox's CSRF token.
parameters:
  ApprovalId:
    name: approval_id
    in: path
    required: true
    schema: {type: string, pattern: '^apr_[A-Za-z0-9_-]{24}$'}
requestBodies:
  Vote:
    required: true
    content:
      application/json:
        schema:
          type: object
          additionalProperties: false
          required: [reason]
          properties:
            reason: {type: string, minLength: 1, maxLength: 2000, description: Why.}
  Cancel:
    required: false
    content:
      application/json:
        schema:
          type: object
          additionalProperties: false
          properties:
            reason: {type: string, maxLength: 2000}
responses:
  Approval:
    description: The approval afterwards.
    content:
      application/json:
        schema: {$ref: '#/components/schemas/Approval'}
  BadRequest:
    description: Malformed input; `error.field` names it.
    content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
  Unauthenticated:
    description: No credential, or one that does not verify.
    content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
  Forbidden:
    description: >-
      The caller may not do this (`error.reason`: not_eligible, self_approval, not_human,
      not_requester, csrf).
    content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
  NotFound:
    description: No such approval.
    content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
  Conflict:
    description: The approval is not in a state that allows this (e.g. already consumed).
    content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
  Overloaded:
    description: All watch slots are taken; retry later or poll.
    content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
  Unavailable:
    description: The approval store cannot be reached; nothing is assumed approved.
    content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
schemas:
  Error:
    type: object
    required: [error]
    properties:
      error:
        type: object
        required: [code, message]
        properties:
          code: {type: string}
          message: {type: string}
          field: {type: string, description: 'The offending input (400 only).'}
          reason: {type: string, description: 'Why the caller may not (403 only).'}
  Time:
    type: [string, 'null']
    format: date-time
  ApprovalPage:
    type: object
    required: [approvals, next_page_token]
    properties:
      approvals: {type: array, items: {$ref: '#/components/schemas/Approval'}}
      next_page_token: {type: string, description: Empty on a page that is not full.}
  Approval:
    type: object
    description: As the gRPC Approval message; `request` is the reviewer view, already masked.
    required: [id, state, requirement, request, votes]
    properties:
      id: {type: string}
      state:
        type: string
        enum: [pending, approved, rejected, cancelled, expired, consumed]
      requirement:
        type: object
        properties:
          approvers:
            type: array
            description: Every set must be satisfied by each approver (a role or a group of it).
            items:
              type: object
              properties:
                roles: {type: array, items: {type: string}}
                groups: {type: array, items: {type: string}}
          quorum: {type: integer, description: Distinct humans who must approve.}
          pending_ttl_seconds: {type: integer}
          grant_ttl_seconds: {type: integer}
          rule_ids: {type: array, items: {type: string}}
          requester_ids: {type: array, items: {type: string}}
      request: {$ref: '#/components/schemas/ReviewerView'}
      votes:
        type: array
        items:
          type: object
          properties:
            approver_id: {type: string}
            decision: {type: string, enum: [approve, reject]}
            reason: {type: string}
            at: {$ref: '#/components/schemas/Time'}
      created_at: {$ref: '#/components/schemas/Time'}
      pending_expires_at: {$ref: '#/components/schemas/Time'}
      approved_at: {$ref: '#/components/schemas/Time'}
      grant_expires_at: {$ref: '#/components/schemas/Time'}
      final_at: {$ref: '#/components/schemas/Time'}
      final_reason: {type: string}
      policy_revision: {type: string}
      decision_id: {type: string}
  ReviewerView:
    type: object
    properties:
      requester_id: {type: string}
      requester_kind: {type: string}
      requester_roles: {type: array, items: {type: string}}
      action: {type: string}
      resource_kind: {type: string}
      resource_id: {type: string}
      environment: {type: string}
      fields:
        type: array
        items:
          type: object
          properties:
            path: {type: string}
            tags: {type: array, items: {type: string}}
      payload: {description: The payload masked by the decision's plan.}
      reasons: {type: array, items: {type: string}}
      matched_rules: {type: array, items: {type: string}}
      masking_plan:
        type: array
        items:
          type: object
          properties:
            path: {type: string}
            operator: {type: string}
            keep_first: {type: integer}
            keep_last: {type: integer}
"""

_BASE: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "signoff HTTP API",
        "version": "1",
        "description": "Policy decisions and human sign-off over HTTP/JSON.",
    },
}


def document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of `routes` (a fresh copy: callers may change it)."""
    base = {**_BASE, "paths": {}, "components": yaml.safe_load(_COMPONENTS)}
    schema: dict[str, Any] = SchemaGenerator(base).get_schema(routes)
    return schema


def undocumented(routes: list[BaseRoute]) -> list[EndpointInfo]:
    """Routes in the schema whose endpoint carries no operation in its docstring."""
    generator = SchemaGenerator({})
    return [e for e in generator.get_endpoints(routes) if not generator.parse_docstring(e.func)]


async def _serve(request: Request) -> Response:
    return JSONResponse(document(request.app.routes))


def routes() -> list[BaseRoute]:
    # The document itself is no operation of the API.
    return [Route(PATH, _serve, methods=["GET"], include_in_schema=False)]
