"""How a plugin says no: raise one of these, and the client gets its status and message.

    raise BadRequest("query parameter k must be 1 to 10")   # 400 {"error": "query parameter …"}

| raised                          | the client gets                                  |
|---------------------------------|--------------------------------------------------|
| `BadRequest(msg)`               | 400 `{"error": msg}`                             |
| `Unprocessable(msg)`            | 422 `{"error": msg}`                             |
| `Internal(msg)`                 | 500 `{"error": msg}`                             |
| any other exception             | 500 `{"error": "<ExceptionType>: <message>"}`; the traceback goes to the gateway's log |
"""

from __future__ import annotations

__all__ = ["PluginError", "BadRequest", "Unprocessable", "Internal"]


class PluginError(Exception):
    """Base of the three refusals; `status` is the HTTP status the client gets."""

    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = str(message)


class BadRequest(PluginError):
    """The caller sent something wrong (say what to send instead): HTTP 400."""

    status = 400


class Unprocessable(PluginError):
    """Well-formed, but not something this model can answer: HTTP 422."""

    status = 422


class Internal(PluginError):
    """A bug or broken invariant in the plugin, or a model that answered unexpectedly: 500."""

    status = 500
