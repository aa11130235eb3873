"""The switch's HTTP server: a JSON API under /api/ (bearer token), a WebSocket event
stream and the dashboard's files (softswitch/http/static/). docs/api.md describes it,
softswitch/http/openapi.yaml specifies it; `[http]` configures it (docs/configuration.md)."""

from softswitch.http.app import HttpApi

__all__ = ["HttpApi"]
