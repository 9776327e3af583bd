"""The server writes to the data directory's one audit trail (see :mod:`assay.store.audit`)."""

from __future__ import annotations

from ..store.audit import METRICS_FLUSH_INTERVAL, AuditTrail

__all__ = ["METRICS_FLUSH_INTERVAL", "AuditTrail"]
