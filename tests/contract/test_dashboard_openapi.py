"""schemathesis against the running dashboard's OpenAPI document: no request makes it answer 5xx, and
every response matches its documented schema (authorised requests included, so commands run too)."""

from __future__ import annotations

import asyncio

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.support.dashboard import running_dashboard
from volguard_common.settings import Settings

TOKEN = "schemathesis-token"
EXAMPLES_PER_OPERATION = 20


def fuzz(base_url: str) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
            check_with(operation, base_url, headers)
        checked.append(f"{operation.method.upper()} {operation.path}")
    return checked


def check_with(operation: schemathesis.APIOperation, base_url: str, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=headers)
        case.validate_response(
            response, checks=[not_a_server_error, response_schema_conformance, status_code_conformance]
        )

    check()


async def test_no_request_gets_a_5xx_and_responses_match_the_schema(settings: Settings) -> None:
    dashboard_settings = settings.model_copy(update={"dashboard_token": SecretStr(TOKEN)})
    async with running_dashboard(dashboard_settings) as running:
        checked = await asyncio.to_thread(fuzz, running.base_url)
    assert "POST /api/emergency/kill-switch" in checked
    assert "GET /api/chain/{expiry}" in checked
    assert len(checked) >= 30
