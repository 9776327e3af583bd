"""The assay server: REST under ``/api``, the live stream, auth and audit, the MLflow protocol.

Start it with ``assay server`` (or ``python -m assay.api.cli server``); build it in code with
:func:`create_app`. Tokens: ``assay token create NAME --role researcher``.

The names below load on first use: the command line imports ``assay.api.cli`` for every
command, and FastAPI and LanceDB would otherwise cost each ``assay --help`` seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _lazy

__all__ = ["PUBLIC_PATHS", "Principal", "Role", "TokenStore", "create_app"]

_LAZY = {"PUBLIC_PATHS": ".app", "create_app": ".app", "Principal": ".auth", "Role": ".auth",
         "TokenStore": ".auth"}

if TYPE_CHECKING:  # the real names for type checkers; loaded lazily at run time
    from .app import PUBLIC_PATHS, create_app
    from .auth import Principal, Role, TokenStore


def __getattr__(name: str) -> Any:
    return _lazy.load(__name__, _LAZY, name, globals())
