"""The Cloud Scheduler method table agrees with the official client: paths, message classes, HTTP rules."""

from __future__ import annotations

from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport
from google.cloud.scheduler_v1.services.cloud_scheduler.transports.rest_base import (
    _BaseCloudSchedulerRestTransport,
)

from local_runner.api import grpc_methods, grpc_scheduler_methods
from tests.local_runner.test_grpc_methods import assert_same_messages, client_stubs


def test_every_client_method_is_served_with_its_messages() -> None:
    stubs = client_stubs(CloudSchedulerGrpcTransport)
    table = {m.full_name: m for m in (*grpc_scheduler_methods.METHODS, *grpc_methods.METHODS)}
    assert set(stubs) <= set(table)
    assert {m.full_name for m in grpc_scheduler_methods.METHODS} <= set(stubs)
    assert_same_messages(stubs, table)


def test_http_rules_match_the_rest_transport() -> None:
    for method in grpc_scheduler_methods.METHODS:
        base = getattr(_BaseCloudSchedulerRestTransport, f"_Base{method.name}")
        (rule,) = base._get_http_options()
        assert rule["method"].upper() == method.verb, method.name
        assert rule["uri"] == method.prefix + method.path == "/v1/" + method.path, method.name
        assert rule.get("body", "") == method.body, method.name


def test_the_update_rule_binds_the_jobs_name() -> None:
    update = next(m for m in grpc_scheduler_methods.METHODS if m.name == "UpdateJob")
    (variable,) = update.variables
    assert (variable.field, update.body_field) == ("job.name", "job")
    assert variable.regex.fullmatch("projects/p/locations/l/jobs/j")
