"""SQLite storage: calls, legs and registrar bindings, written as events happen."""

from softswitch.store.db import Store

__all__ = ["Store"]
