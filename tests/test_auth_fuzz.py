"""Whatever arrives at /mqtt/auth/, the answer is never a 500."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BrokerClient

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "username": json_values,
        "password": json_values,
        "clientid": json_values,
        "topic": json_values | st.text(alphabet="ab/+#$\0é", max_size=20),
        "acc": json_values,
    },
)
bodies = st.one_of(st.binary(max_size=200), fields.map(lambda d: json.dumps(d).encode()))
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "",
        "multipart/form-data",
    ]
)
headers = st.sampled_from(["", "Basic", "Basic %%%", "Basic Zm9vOmJhcg==", "Digest x"])
endpoints = st.sampled_from(["user", "acl", "superuser"])
methods = st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(endpoint=endpoints, method=methods, body=bodies, content_type=content_types)
def test_fuzzed_bodies_never_produce_a_500(
    broker: BrokerClient, endpoint: str, method: str, body: bytes, content_type: str
) -> None:
    response = broker.generic(method, f"/mqtt/auth/{endpoint}", body, content_type)
    assert response.status_code in (200, 400, 403, 405)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=headers, endpoint=endpoints, body=bodies)
def test_fuzzed_callers_are_refused_cleanly(header: str, endpoint: str, body: bytes) -> None:
    client = BrokerClient(HTTP_AUTHORIZATION=header)
    response = client.generic("POST", f"/mqtt/auth/{endpoint}", body, "application/json")
    assert response.status_code == 403
