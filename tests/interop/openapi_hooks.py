"""Schemathesis hooks for tests/openapi_conformance.rs (loaded through SCHEMATHESIS_HOOKS).

One refusal of the API cannot be written in JSON Schema: `POST /calls` answers 400
`invalid_callee` when `calleeId` is the caller (`callerId`, or the token's user when it is left
out): a schema cannot say "differs from another field" or "differs from the caller". The
`positive_data_acceptance` check (ST202) sees a schema-valid body refused with 400 and reports it.
This hook drops exactly that failure -- ST202, on POST /calls, status 400, error code
`invalid_callee`, for a body whose callee really is the caller -- and keeps every other one.
Schemathesis counts what it drops in its summary ("dropped by `filter_failure`").
"""

import json
import os

import schemathesis

# The user the run's bearer token speaks for (set by tests/openapi_conformance.rs).
CALLER = os.environ.get("OPENAPI_CALLER", "")


def _json(raw):
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _is_self_call(response):
    body = _json(response.request.body)
    if not isinstance(body, dict):
        return False
    caller = body.get("callerId") or CALLER
    return bool(caller) and body.get("calleeId") == caller


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if getattr(failure, "code", None) != "ST202":
        return True
    if case.operation.method.upper() != "POST" or case.operation.path != "/calls":
        return True
    answer = _json(response.content)
    code = answer.get("error", {}).get("code") if isinstance(answer, dict) else None
    refused_self_call = (
        response.status_code == 400 and code == "invalid_callee" and _is_self_call(response)
    )
    return not refused_self_call
