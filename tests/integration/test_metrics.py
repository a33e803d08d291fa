"""`GET /metrics` of a real `patchbay serve`, after a migration into the local org that sets
records aside and a broadcast with dead letters: the figures are the runs' own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from patchbay import metrics
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg
from patchbay.spec import SystemSpec
from patchbay.store import Store
from tests.integration.observing import (
    BROADCAST,
    ITEMS,
    MIGRATION,
    NAMELESS,
    ORG_SCHEMA,
    TOO_LONG,
    build,
    serving,
    wait_until,
)


@pytest.fixture
def org() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig(custom_schema=ORG_SCHEMA)) as local:
        yield local


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_of_a_served_migration_and_broadcast(tmp_path: Path, org: LocalOrg) -> None:
    spec = build(tmp_path, org.port)
    with serving(tmp_path, spec) as served:
        assert httpx.get(served.url + "/metrics").status_code == 401, "the token is required"
        run = served.run(MIGRATION)
        assert run["status"] == "complete_with_rejects", run
        store = Store.open(directory=tmp_path / "state")
        wait_until(lambda: sum(b.dead for b in store.outbox.backlog()) == 4,
                   what="the broadcast's dead letters: deal 2 in small, every deal offline")
        wait_until(lambda: value(samples(served.get("/metrics").text),
                                 "patchbay_records_written_total", integration=BROADCAST) == 2,
                   what="the deliveries to small counted")
        scrape = served.get("/metrics")

    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    found = samples(scrape.text)
    written = ITEMS - len(TOO_LONG) - len(NAMELESS)
    assert value(found, "patchbay_records_read_total", integration=MIGRATION) == ITEMS
    assert value(found, "patchbay_records_written_total", integration=MIGRATION) == written
    assert value(found, "patchbay_records_set_aside_total", integration=MIGRATION,
                 code="STRING_TOO_LONG") == len(TOO_LONG)
    set_aside = {dict(labels)["code"]: n for (name, labels), n in found.items()
                 if name == "patchbay_records_set_aside_total"
                 and dict(labels)["integration"] == MIGRATION}
    assert sum(set_aside.values()) == len(TOO_LONG) + len(NAMELESS), set_aside
    assert value(found, "patchbay_run_seconds_count", integration=MIGRATION,
                 pattern="migration") == 1

    # the broadcast: two deals fit small, one is refused there; offline takes none
    assert value(found, "patchbay_outbox_dead", integration=BROADCAST, destination="small") == 1
    assert value(found, "patchbay_outbox_dead", integration=BROADCAST, destination="offline") == 3
    assert value(found, "patchbay_outbox_pending", integration=BROADCAST,
                 destination="small") == 0
    assert value(found, "patchbay_records_failed_total", integration=BROADCAST,
                 code="ATTEMPTS_EXHAUSTED") == 3
    assert sum(n for (name, labels), n in found.items()
               if name == "patchbay_records_failed_total"
               and dict(labels)["integration"] == BROADCAST) == 4
    assert value(found, "patchbay_delivery_latency_seconds_count", integration=BROADCAST,
                 destination="small") == 2

    # the org's allowance, as its last answer said: every call the migration made counts
    used = value(found, "patchbay_salesforce_api_calls_used", system="org")
    assert 0 < used <= org.org.limits.used
    assert value(found, "patchbay_salesforce_api_calls_max", system="org") == \
        org.org.limits.max_requests
    assert value(found, "patchbay_salesforce_api_calls_remaining", system="org") == \
        org.org.limits.max_requests - used


def test_the_org_s_limit_header_sets_the_allowance_of_its_system(org: LocalOrg) -> None:
    from patchbay.connectors.salesforce import SalesforceConnector

    org.org.limits.max_requests, org.org.limits.used = 5000, 1200
    crm = SalesforceConnector(SystemSpec(
        url=f"salesforce+http://127.0.0.1:{org.port}", name="limits-org", options={
            "username": "integration@patchbay.local", "password": "password",
            "security_token": "TOKEN"}))
    try:
        crm.describe("Account")
    finally:
        crm.close()
    used, most = metrics.allowances()["limits-org"]
    assert most == 5000 and used == org.org.limits.used
    assert metrics.REGISTRY.get_sample_value("patchbay_salesforce_api_calls_remaining",
                                             {"system": "limits-org"}) == 5000 - used


@pytest.mark.parametrize(("header", "expected"), [
    ("api-usage=25/15000", (25, 15000)),
    ("per-app-api-usage=1/10(appName=x), api-usage=7/100", (7, 100)),
    ("api-usage=abc/100", None),
    ("something-else=1/2", None)])
def test_the_limit_header_is_read_or_left(header: str, expected: tuple[int, int] | None) -> None:
    system = f"header-{abs(hash(header))}"
    metrics.api_usage(system, header)
    assert metrics.allowances().get(system) == expected


def test_conflicts_and_review_items_are_read_from_the_state(tmp_path: Path) -> None:
    from patchbay.runtime.observed import StateCollector
    from patchbay.store.conflicts import NewConflict
    from patchbay.store.pairs import Pair

    store = Store.open(directory=tmp_path / "state")
    store.conflicts.add("accounts-sync", [
        NewConflict("Account", f"g{n}", "Phone", "field", "manual", {"crm": "1", "erp": "2"},
                    None, status) for n, status in enumerate(["held", "held", "resolved"])])
    store.pairs.save("patients", [Pair("L1", "R1", "review"), Pair("L2", "R2", "review"),
                                  Pair("L3", "R3", "link", gid="g3")])
    registry = CollectorRegistry()
    registry.register(StateCollector(store, ["accounts-sync", "patients", "nothing-here"]))
    found = {(s.name, frozenset(s.labels.items())): s.value
             for family in registry.collect() for s in family.samples}
    assert value(found, "patchbay_sync_conflicts", integration="accounts-sync", status="held") == 2
    assert value(found, "patchbay_sync_conflicts", integration="accounts-sync",
                 status="resolved") == 1
    assert value(found, "patchbay_correlation_pairs", integration="patients", status="review") == 2
    assert value(found, "patchbay_correlation_pairs", integration="patients", status="link") == 1
    assert not any(dict(labels).get("integration") == "nothing-here" for _, labels in found)
