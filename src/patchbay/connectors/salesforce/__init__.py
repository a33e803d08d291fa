"""Salesforce: the connector (REST, Bulk 2.0), scope as SOQL, Change Data Capture over CometD.

`connector` imports `cdc` (the event stream), which knows the connector only by the `Org`
protocol it needs; `soql` is shared by both.
"""

from patchbay.connectors.salesforce.connector import SalesforceConnector
from patchbay.connectors.salesforce.soql import soql_literal, to_soql

__all__ = ["SalesforceConnector", "soql_literal", "to_soql"]
