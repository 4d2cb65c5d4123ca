"""How the conformance suite drives each connector against its simulator.

A ``Harness`` names the connector's idempotent create/upsert and compensable actions, and how
to inspect or change the simulator state directly (the simulator runs in-process).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectors.base import Connector

SEEDED = 57  # not a multiple of the page size, with modstamp ties (3 records per second)


@dataclass
class Harness:
    """Everything the suite needs to know about one connector and its simulator."""

    type: str
    make_simulator: Callable[[], Any]
    connector_class: Callable[[], builtins.type[Connector]]
    config: Callable[[str], dict[str, Any]]
    credentials: Callable[[str], dict[str, Any]]
    bad_credentials: Callable[[str], dict[str, Any]]
    secrets: tuple[str, ...]
    sync_object: str
    touch: Callable[[Any, int], str]
    """Change seeded record ``i`` in the simulator; returns its external id."""
    upsert_action: tuple[str, dict[str, Any]]
    count_by_key: Callable[[Any, str], int]
    record_id: Callable[[dict[str, Any]], str]
    compensable_action: tuple[str, dict[str, Any]]
    is_undone: Callable[[Any, dict[str, Any]], bool]
    seeded: int = SEEDED
    tls: bool = False
    paginate: Callable[[Connector, int], Awaitable[list[str]]] | None = None
    paginate_label: str = ""


async def call(connector: Connector, method: str, *args: Any) -> Any:
    """Call a connector method: on a worker thread when the connector is blocking."""
    fn = getattr(connector, method)
    if connector.blocking:
        return await asyncio.to_thread(fn, *args)
    return await fn(*args)


async def _paginate_action(
    conn: Connector,
    name: str,
    payload: dict[str, Any],
    page: Callable[[dict[str, Any]], tuple[list[str], Any]],
) -> list[str]:
    ids: list[str] = []
    cursor: Any = None
    for _ in range(10_000):
        out = await call(
            conn, "run_action", name, payload if cursor is None else {**payload, **cursor}, "read-only"
        )
        got, cursor = page(out)
        ids.extend(got)
        if cursor is None:
            return ids
    raise AssertionError("pagination never ended")


# --- ServiceNow ---------------------------------------------------------------------------


def servicenow() -> Harness:
    """ServiceNow Table API on its simulator."""
    from connectors.servicenow import ServiceNowConnector
    from connectors.simulators.servicenow import ServiceNowSimulator, sys_id_for

    def touch(sim: ServiceNowSimulator, i: int) -> str:
        sys_id = sys_id_for("incident", i)
        sim.update("incident", sys_id, {"urgency": "1"})
        return sys_id

    async def paginate(conn: Connector, size: int) -> list[str]:
        def page(out: dict[str, Any]) -> tuple[list[str], Any]:
            ids = [r["sys_id"] for r in out["records"]]
            return ids, None if out["next_offset"] is None else {"offset": out["next_offset"]}

        return await _paginate_action(
            conn,
            "query",
            {"table": "incident", "fields": ["sys_id"], "limit": size, "query": "ORDERBYnumber"},
            page,
        )

    return Harness(
        type="servicenow",
        make_simulator=lambda: ServiceNowSimulator(records=SEEDED),
        connector_class=lambda: ServiceNowConnector,
        config=lambda url: {"instance_url": url},
        credentials=lambda url: {"username": "integration", "password": "sn-secret"},
        bad_credentials=lambda url: {"username": "integration", "password": "wrong-sn-secret"},
        secrets=("sn-secret", "wrong-sn-secret"),
        sync_object="incident",
        touch=touch,
        upsert_action=("create_incident", {"short_description": "Conformance incident", "urgency": "2"}),
        count_by_key=lambda sim, key: sim.count("incident", correlation_id=key),
        record_id=lambda out: str(out["sys_id"]),
        compensable_action=("create_incident", {"short_description": "Compensated incident"}),
        is_undone=lambda sim, out: sim.tables["incident"][out["sys_id"]]["state"] == "8",
        paginate=paginate,
        paginate_label="query action (sysparm_offset)",
    )


# --- Salesforce ----------------------------------------------------------------------------


def salesforce() -> Harness:
    """Salesforce REST (simple-salesforce) on its TLS simulator, client-credentials flow."""
    from connectors.salesforce import IDEMPOTENCY_FIELD, SalesforceConnector
    from connectors.simulators.salesforce import SalesforceSimulator, record_id

    def touch(sim: SalesforceSimulator, i: int) -> str:
        rid = record_id("Case", i)
        sim.update("Case", rid, {"Priority": "High"})
        return rid

    async def paginate(conn: Connector, size: int) -> list[str]:
        def page(out: dict[str, Any]) -> tuple[list[str], Any]:
            ids = [r["Id"] for r in out["records"]]
            nxt = out["next_records_url"]
            return ids, None if nxt is None else {"soql": None, "next_records_url": nxt}

        return await _paginate_action(conn, "query", {"soql": "SELECT Id FROM Case ORDER BY Id"}, page)

    return Harness(
        type="salesforce",
        tls=True,
        make_simulator=lambda: SalesforceSimulator(records=SEEDED, batch_size=20),
        connector_class=lambda: SalesforceConnector,
        config=lambda url: {"login_url": url},
        credentials=lambda url: {"client_id": "nexus-client", "client_secret": "sf-secret"},
        bad_credentials=lambda url: {"client_id": "nexus-client", "client_secret": "wrong-sf-secret"},
        secrets=("sf-secret", "wrong-sf-secret"),
        sync_object="Case",
        touch=touch,
        upsert_action=("create_case", {"subject": "Conformance case", "priority": "High"}),
        count_by_key=lambda sim, key: sim.count("Case", **{IDEMPOTENCY_FIELD: key}),
        record_id=lambda out: str(out["id"]),
        compensable_action=("create_case", {"subject": "Compensated case"}),
        is_undone=lambda sim, out: sim.objects["Case"][out["id"]]["Status"] == "Closed",
        paginate=paginate,
        paginate_label="query action (nextRecordsUrl, batches of 20)",
    )


# --- SAP -------------------------------------------------------------------------------------


def sap(odata_version: str = "v2") -> Harness:
    """SAP S/4HANA OData (v2 by default) on its simulator."""
    from connectors.sap import SapConnector
    from connectors.simulators.sap import SapSimulator

    def touch(sim: SapSimulator, i: int) -> str:
        key = f"{i + 1:010d}"
        sim.update("A_SalesOrder", key, {"TotalNetAmount": "999.00"})
        return key

    async def paginate(conn: Connector, size: int) -> list[str]:
        def page(out: dict[str, Any]) -> tuple[list[str], Any]:
            ids = [r["SalesOrder"] for r in out["records"]]
            nxt = out["next_link"]
            return ids, None if nxt is None else {"next_link": nxt}

        return await _paginate_action(conn, "read_entities", {"entity": "A_SalesOrder"}, page)

    def count_by_key(sim: SapSimulator, key: str) -> int:
        from connectors.sap import reference

        return sim.count("A_SalesOrder", PurchaseOrderByCustomer=reference(key, 35))

    order = {"sales_organization": "1010", "sold_to_party": "17100001"}
    return Harness(
        type="sap",
        make_simulator=lambda: SapSimulator(records=SEEDED, page_size=20),
        connector_class=lambda: SapConnector,
        config=lambda url: {"base_url": url, "odata_version": odata_version},
        credentials=lambda url: {"username": "COMM_USER", "password": "sap-secret"},
        bad_credentials=lambda url: {"username": "COMM_USER", "password": "wrong-sap-secret"},
        secrets=("sap-secret", "wrong-sap-secret"),
        sync_object="A_SalesOrder",
        touch=touch,
        upsert_action=("create_sales_order", order),
        count_by_key=count_by_key,
        record_id=lambda out: str(out["sales_order"]),
        compensable_action=("create_sales_order", order),
        is_undone=lambda sim, out: out["sales_order"] not in sim.entities["A_SalesOrder"],
        paginate=paginate,
        paginate_label=f"read_entities (OData {odata_version} server paging, 20 per page)",
    )


# --- Microsoft 365 ---------------------------------------------------------------------------


def m365() -> Harness:
    """Microsoft Graph + identity platform on one simulator."""
    from connectors.m365 import M365Connector
    from connectors.simulators.m365 import DRIVE, M365Simulator, item_id

    def touch(sim: M365Simulator, i: int) -> str:
        sim.touch(item_id(i), b"changed\n")
        return item_id(i)

    async def paginate(conn: Connector, size: int) -> list[str]:
        def page(out: dict[str, Any]) -> tuple[list[str], Any]:
            nxt = out["next_link"]
            return [i["id"] for i in out["items"]], None if nxt is None else {"next_link": nxt}

        return await _paginate_action(conn, "list_files", {"drive_id": DRIVE, "top": size}, page)

    upload = {"drive_id": DRIVE, "path": "conformance/report.txt", "content_base64": "aGVsbG8K"}
    message = {"team_id": "team-1", "channel_id": "19:general", "content": "Compensated message"}
    return Harness(
        type="m365",
        make_simulator=lambda: M365Simulator(records=SEEDED),
        connector_class=lambda: M365Connector,
        config=lambda url: {
            "tenant_id": "contoso",
            "authority_url": url,
            "graph_url": url,
            "drive_id": DRIVE,
        },
        credentials=lambda url: {"client_id": "nexus-app", "client_secret": "m365-secret"},
        bad_credentials=lambda url: {"client_id": "nexus-app", "client_secret": "wrong-m365-secret"},
        secrets=("m365-secret", "wrong-m365-secret"),
        sync_object="drive_items",
        touch=touch,
        upsert_action=("upload_file", upload),
        count_by_key=lambda sim, key: sum(1 for i in sim.live() if i["name"] == upload["path"]),
        record_id=lambda out: str(out["item_id"]),
        compensable_action=("post_channel_message", message),
        is_undone=lambda sim, out: sim.messages[out["message_id"]]["deletedDateTime"] is not None,
        paginate=paginate,
        paginate_label="list_files (@odata.nextLink)",
    )


HARNESSES: dict[str, Callable[[], Harness]] = {
    "salesforce": salesforce,
    "sap": sap,
    "servicenow": servicenow,
    "m365": m365,
}
