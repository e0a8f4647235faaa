"""Schemathesis over the app's OpenAPI schema: generated requests, valid and invalid, never get a 5xx.

Schemathesis' pytest plugin does not run under this pytest, so each operation's hypothesis strategy is
driven directly."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from lsr.api.app import Settings, create_app, get_service

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.generation import GenerationMode  # noqa: E402  (positive and negative cases)


def test_no_server_errors(api_index_dir, api_service):
    app = create_app(Settings(index_dir=api_index_dir, warm_up=False))
    app.dependency_overrides[get_service] = lambda: api_service
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/search", "/documents/{doc_id}", "/stats", "/health"}
    seen: dict[int, int] = {}
    for operation, mode in itertools.product(operations, GenerationMode):
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call()
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text}"

        try:
            check()
        except Unsatisfiable:  # an operation with no inputs has no invalid requests to generate
            assert mode is GenerationMode.NEGATIVE, operation.path
    assert any(400 <= code < 500 for code in seen) and 200 in seen  # both sides of the schema were exercised
