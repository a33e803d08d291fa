"""The local org: a Salesforce-compatible server for offline demos, tests and development.

A separate application in the patchbay distribution; it shares nothing with the engine.
The contract it follows is the Salesforce REST, SOAP login, OAuth and Bulk 2.0 subset that
patchbay's connector and real clients (simple-salesforce, jsforce, the Salesforce CLI) use.
"""

from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg, free_port, is_loopback, serve

__all__ = ["LocalOrg", "OrgConfig", "free_port", "is_loopback", "serve"]
