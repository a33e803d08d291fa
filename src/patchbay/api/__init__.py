"""The HTTP API of `patchbay serve`: run integrations on demand, follow their runs, handle
dead letters, read outbox counts; and its web console under /ui (console.py).

    create_app(spec_path, state, token)      the Starlette application
    serve_api(host, port, spec_path, ...)    that application served by uvicorn in a
                                             background thread (refuses to listen beyond
                                             loopback without a token)
"""

from patchbay.api.app import create_app
from patchbay.api.server import (
    TOKEN_VARIABLE,
    VIEWER_VARIABLE,
    ApiConfigError,
    ApiServer,
    api_token,
    serve_api,
    viewer_token,
)

__all__ = ["TOKEN_VARIABLE", "VIEWER_VARIABLE", "ApiConfigError", "ApiServer", "api_token",
           "create_app", "serve_api", "viewer_token"]
