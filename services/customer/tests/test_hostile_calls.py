"""Hostile input sent straight to the customer service over gRPC, past the gateway (issue 29): the interceptor's
text check refuses a control character in any field of any call with INVALID_ARGUMENT naming the field, and
garbled page tokens are refused rather than answered as an empty page or a database error."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from crm.common.v1 import paging_pb2
from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc, import_service_pb2_grpc
from crm.customer.v1 import import_service_pb2 as ipb
from crm_customer.server import SPEC
from crm_platform.grpc_client import parse_failure
from crm_testing.nats_server import NatsServer
from crm_testing.services import identity, running_service

RM1 = identity("rm1", permissions=("customer:read", "customer:write", "customer:create", "customer:import"))


async def _refused(call: object) -> list[str]:
    """The fields an INVALID_ARGUMENT answer names (the call must fail so)."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return [v.field for v in parse_failure(err.value).violations]


async def test_control_characters_and_garbled_tokens_are_refused(
    db_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        bad = customer_service_pb2.CreateCustomerRequest(kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name="a\x00b")
        bad.profile.occupation = "clerk\x1b[31m"
        assert set(await _refused(stub.CreateCustomer(bad, metadata=svc.md(RM1), timeout=5))) == {
            "name",
            "profile.occupation",
        }
        # Tab is no part of a name either (the domain's single-line rule), though free text may hold it.
        tabbed = customer_service_pb2.CreateCustomerRequest(kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name="a\tb")
        assert await _refused(stub.CreateCustomer(tabbed, metadata=svc.md(RM1), timeout=5)) == ["name"]
        search = customer_service_pb2.ListCustomersRequest(tags=["vip", "x\x00"])
        assert await _refused(stub.ListCustomers(search, metadata=svc.md(RM1), timeout=5)) == ["tags[1]"]

        segments = customer_service_pb2.ListSegmentsRequest(page=paging_pb2.PageRequest(page_token="garbage!!"))
        assert await _refused(stub.ListSegments(segments, metadata=svc.md(RM1), timeout=5)) == ["page.page_token"]

        imports = import_service_pb2_grpc.CustomerImportServiceStub(svc.channel)
        rows = ipb.ListImportRowsRequest(import_id="x", page=paging_pb2.PageRequest(page_token="9" * 30))
        assert await _refused(imports.ListImportRows(rows, metadata=svc.md(RM1), timeout=5)) == ["page_token"]

        # A well-formed call still works: the checks refuse only what no field may hold.
        good = customer_service_pb2.CreateCustomerRequest(kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name="李明")
        created = await stub.CreateCustomer(good, metadata=svc.md(RM1), timeout=5)
        assert created.customer.name == "李明"
