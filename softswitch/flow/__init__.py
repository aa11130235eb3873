"""Call flows: the `[block.NAME]` blocks a call to the switch's main number walks through
(see docs/flows.md). `hours` holds the opening-hours engine of `type = "hours"` blocks."""
