"""patchbay: declared, reusable, observable integrations for Salesforce-centred companies.

The public Python surface:

    import patchbay
    file = patchbay.load("crm.yaml")
    report = patchbay.run_integration("crm.yaml", "legacy-accounts", {"country": "DE"})
"""

from patchbay.errors import (
    ConnectionFailed,
    FatalRunError,
    ParameterError,
    PatchbayError,
    RecordRejected,
    RetriableError,
    RunNotResumable,
    SpecError,
)
from patchbay.model import Change, ObjectSchema, Operation, Outcome, Page, Record, Status
from patchbay.runtime.runner import plan_integration, run_integration, verify_integration
from patchbay.spec import BroadcastSpec, IntegrationFile, IntegrationSpec, MigrationSpec, load, loads

__version__ = "0.1.0"

__all__ = [
    "BroadcastSpec",
    "Change",
    "ConnectionFailed",
    "FatalRunError",
    "IntegrationFile",
    "IntegrationSpec",
    "MigrationSpec",
    "ObjectSchema",
    "Operation",
    "Outcome",
    "Page",
    "ParameterError",
    "PatchbayError",
    "Record",
    "RecordRejected",
    "RetriableError",
    "RunNotResumable",
    "SpecError",
    "Status",
    "load",
    "loads",
    "plan_integration",
    "run_integration",
    "verify_integration",
]
