"""The generated contract bindings when running inside a component, else None.

`infergate-plugin build` runs componentize-py, which generates the `wit_world` package from
the WIT this SDK ships. Outside a component (unit tests on the host) there are no bindings:
`log` then writes to stderr and `ops` runs its pure-Python implementations. The imports are
at module top level because componentize-py pre-initializes the plugin at build time: an
import inside a function would run (and load files) on every request.
"""

try:
    from wit_world.imports import host, types  # noqa: F401
    from componentize_py_types import Err  # noqa: F401
except ImportError:  # not inside a component
    host = types = Err = None

try:
    # Contract 0.2.0 and later: the gateway's native ops.
    from wit_world.imports import ops  # noqa: F401
except ImportError:
    ops = None
