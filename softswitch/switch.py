"""`Switch`: the switch as a Python object, for developers who script flows.

    from softswitch import Switch, Call

    switch = Switch.from_config("office.toml")

    @switch.flow("taxi")
    async def taxi(call: Call) -> str | None:
        ...

    switch.run()

A block `type = "script"` with `function = "taxi"` (a registered name) or
`function = "module:function"` (imported at start) runs the flow. What it returns is the
next block's name; None continues at the script block's own `next` (and "" hangs up).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from softswitch.config import load_config
from softswitch.config_types import Config
from softswitch.flow.blocks import ScriptFlow


class Switch:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.flows: dict[str, ScriptFlow] = {}

    @classmethod
    def from_config(cls, path: str | Path) -> Switch:
        """Load and validate a config file (raises softswitch.config.ConfigError)."""
        return cls(load_config(path))

    def flow(self, name: str | None = None) -> Callable[[ScriptFlow], ScriptFlow]:
        """Register an `async def flow(call)` under `name` (default: its function name);
        it is also reachable as "module:function"."""

        def register(fn: ScriptFlow) -> ScriptFlow:
            self.flows[name or fn.__name__] = fn
            self.flows[f"{fn.__module__}:{fn.__name__}"] = fn
            return fn

        return register

    def run(self) -> int:
        """Start the switch and block until SIGINT/SIGTERM."""
        from softswitch.coordinator import run

        return run(self.config, scripts=self.flows)
