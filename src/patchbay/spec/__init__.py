"""Integration files: the pydantic models, and loading YAML with errors that name file, line and field.

The package holds `common` (systems, scope, transform, parameter declarations, the base of
every integration), one module per pattern's spec, `loading`, `parameters` (a run's values)
and `registry` (the patterns files may declare); the public names are re-exported here.

An integration file declares systems once and integrations that refer to them:

    systems:
      legacy: sqlite:///legacy_crm.db
      warehouse: postgresql://app:${PG_PASSWORD}@db.internal/crm
    integrations:
      - name: Legacy CRM to warehouse - Account - migration
        pattern: migration
        source: {system: legacy, object: accounts, key: acct_id, scope: {...}}
        transform: {fields: {...}}
        destination: {system: warehouse, object: accounts, operation: upsert, key: legacy_id}

The models are the documentation: `patchbay schema` prints their JSON Schema.
"""

from patchbay.errors import SpecError
from patchbay.spec.aggregation import (
    AggregateSpec,
    AggregationDestinationSpec,
    AggregationOptions,
    AggregationSourceSpec,
    AggregationSpec,
    EnrichSpec,
    FlushSpec,
    MergeSpec,
    PrecedenceSpec,
    ReportFileSpec,
    Rule,
    ScheduleSpec,
    StreamSourceSpec,
    StreamSpec,
)
from patchbay.spec.broadcast import (
    BroadcastDestinationSpec,
    BroadcastOptions,
    BroadcastSpec,
    OutboundMessagesSpec,
    PushPoint,
    TriggerSpec,
    WebhookSpec,
)
from patchbay.spec.common import (
    COMPARISONS,
    NORMALIZABLE,
    SCOPE_OPERATORS,
    SECRET_MIN_LENGTH,
    DestinationSpec,
    EmailNotifySpec,
    FieldMapping,
    IntegrationSpec,
    Lookup,
    NotifySpec,
    NotifyWhen,
    ParameterSpec,
    ParamRef,
    Scalar,
    Scope,
    SourceSpec,
    SpecModel,
    SystemSpec,
    TransformSpec,
    Value,
    WebhookNotifySpec,
    is_secret_name,
    redact_url,
    redact_urls,
    scrub,
    secret_forms,
    suggest,
)
from patchbay.spec.correlation import CorrelationSideSpec, CorrelationSpec
from patchbay.spec.loading import (
    MAX_DEPTH,
    MAX_VALUES,
    Document,
    IntegrationFile,
    document_model,
    json_schema,
    load,
    load_match,
    loads,
    parse_yaml,
    use_connector_options,
)
from patchbay.spec.match import (
    LevelSpec,
    MatchFieldSpec,
    MatchSpec,
    ScoringSpec,
)
from patchbay.spec.migration import (
    MigrationSpec,
    Options,
)
from patchbay.spec.parameters import (
    resolve_parameters,
)
from patchbay.spec.sync import (
    DeletesSpec,
    FieldMapSpec,
    ParticipantObjectSpec,
    ParticipantSpec,
    SharedFieldSpec,
    SyncObjectSpec,
    SyncSpec,
)

__all__ = [
    "COMPARISONS",
    "MAX_DEPTH",
    "MAX_VALUES",
    "NORMALIZABLE",
    "SCOPE_OPERATORS",
    "SECRET_MIN_LENGTH",
    "AggregateSpec",
    "AggregationDestinationSpec",
    "AggregationOptions",
    "AggregationSourceSpec",
    "AggregationSpec",
    "BroadcastDestinationSpec",
    "BroadcastOptions",
    "BroadcastSpec",
    "CorrelationSideSpec",
    "CorrelationSpec",
    "DeletesSpec",
    "DestinationSpec",
    "Document",
    "EmailNotifySpec",
    "EnrichSpec",
    "FieldMapSpec",
    "FieldMapping",
    "FlushSpec",
    "IntegrationFile",
    "IntegrationSpec",
    "LevelSpec",
    "Lookup",
    "MatchFieldSpec",
    "MatchSpec",
    "MergeSpec",
    "MigrationSpec",
    "NotifySpec",
    "NotifyWhen",
    "Options",
    "OutboundMessagesSpec",
    "ParamRef",
    "ParameterSpec",
    "ParticipantObjectSpec",
    "ParticipantSpec",
    "PrecedenceSpec",
    "PushPoint",
    "ReportFileSpec",
    "Rule",
    "Scalar",
    "ScheduleSpec",
    "Scope",
    "ScoringSpec",
    "SharedFieldSpec",
    "SourceSpec",
    "SpecError",
    "SpecModel",
    "StreamSourceSpec",
    "StreamSpec",
    "SyncObjectSpec",
    "SyncSpec",
    "SystemSpec",
    "TransformSpec",
    "TriggerSpec",
    "Value",
    "WebhookNotifySpec",
    "WebhookSpec",
    "document_model",
    "is_secret_name",
    "json_schema",
    "load",
    "load_match",
    "loads",
    "parse_yaml",
    "redact_url",
    "redact_urls",
    "resolve_parameters",
    "scrub",
    "secret_forms",
    "suggest",
    "use_connector_options",
]
