"""The assay server: REST under ``/api``, the live stream, auth and audit, the MLflow protocol.

Start it with ``assay server`` (or ``python -m assay.api.cli server``); build it in code with
:func:`create_app`. Tokens: ``assay token create NAME --role researcher``.
"""

from __future__ import annotations

from .app import PUBLIC_PATHS, create_app
from .auth import Principal, Role, TokenStore

__all__ = ["PUBLIC_PATHS", "Principal", "Role", "TokenStore", "create_app"]
