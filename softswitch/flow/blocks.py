"""The ready-made blocks of `[block.NAME]`, each an async function over the call API.

A block runs and returns the name of the next block ("" or None: hang up). So a TOML
scheme and a scripted Python flow drive the same engine: a script block is just a
function that the user wrote instead of one of these.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softswitch.config_types import (
    Config,
    DialBlock,
    HangupBlock,
    HoursBlock,
    MenuBlock,
    PlayBlock,
    QueueBlock,
    ScriptBlock,
    VoicemailBlock,
)
from softswitch.flow.call import Call

log = logging.getLogger(__name__)

MAX_STEPS = 200  # blocks one call may pass through (config check refuses silent loops)

ScriptFlow = Callable[[Call], Awaitable[str | None]]


@dataclass
class FlowContext:
    """What blocks need besides the call: the config, scripted flows, the clock, and
    where voicemail goes (a callable so this module stays free of storage code)."""

    config: Config
    scripts: dict[str, ScriptFlow] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    save_voicemail: Callable[..., Any] | None = None
    schedules: dict[str, Any] = field(default_factory=dict)  # block name -> Schedule


async def run_flow(call: Call, ctx: FlowContext, start: str) -> None:
    """Run blocks from `start` until one returns no next block."""
    name: str | None = start
    steps = 0
    while name:
        steps += 1
        if steps > MAX_STEPS:
            log.warning("call %s: more than %d blocks, hanging up", call.call_id, MAX_STEPS)
            return
        block = ctx.config.blocks.get(name)
        if block is None:
            log.error("call %s: no block %r", call.call_id, name)
            return
        call.vars["block"] = name
        runner = RUNNERS[type(block)]
        name = await runner(call, block, ctx)


async def run_play(call: Call, block: PlayBlock, ctx: FlowContext) -> str | None:
    await call.play(block.prompt)
    return block.next


async def run_hangup(call: Call, block: HangupBlock, ctx: FlowContext) -> str | None:
    await call.hangup()
    return None


async def run_dial(call: Call, block: DialBlock, ctx: FlowContext) -> str | None:
    result = await call.dial(list(block.targets), timeout=block.timeout)
    call.vars["dial"] = result
    return None if result.answered else block.on_no_answer


async def run_hours(call: Call, block: HoursBlock, ctx: FlowContext) -> str | None:
    schedule = ctx.schedules.get(block.name)
    if schedule is None:
        from softswitch.flow.hours import Schedule

        schedule = Schedule.parse(
            list(block.schedule),
            list(block.holidays),
            list(block.working_days),
            ctx.config.switch.timezone,
        )
        ctx.schedules[block.name] = schedule
    is_open = schedule.is_open(ctx.clock())
    call.vars["open"] = is_open
    return block.open if is_open else block.closed


async def run_menu(call: Call, block: MenuBlock, ctx: FlowContext) -> str | None:
    """Greeting; a digit picks an option; with `dial_extensions` the caller may dial an
    extension number instead (digits collected with the inter-digit timeout)."""
    numbers = {ext.number for ext in ctx.config.extensions}
    longest = max((len(n) for n in numbers), default=1)
    prompt: str | None = block.prompt
    for _attempt in range(block.retries + 1):
        first = await call.gather(prompt, max_digits=1, timeout=block.timeout, terminator="")
        prompt = block.prompt
        if not first:
            continue  # timeout: repeat the greeting
        if first in block.options and not (
            block.dial_extensions and any(n.startswith(first) and n != first for n in numbers)
        ):
            return block.options[first]
        if not block.dial_extensions:
            await call.play(block.invalid_prompt)
            continue
        dialed = first
        while len(dialed) < longest and not (
            dialed in numbers and not any(n.startswith(dialed) and n != dialed for n in numbers)
        ):
            digit = await call.next_digit(block.inter_digit_timeout)
            if digit is None or digit == "#":
                break
            dialed += digit
        if dialed in numbers:
            call.vars["extension"] = dialed
            result = await call.dial(dialed, timeout=ctx.config.switch.ring_timeout)
            if result.answered:
                return None
            await call.play(block.unknown_extension_prompt)
            continue
        if dialed in block.options:
            return block.options[dialed]
        await call.play(block.unknown_extension_prompt if len(dialed) > 1 else block.invalid_prompt)
    return block.on_timeout


async def run_voicemail(call: Call, block: VoicemailBlock, ctx: FlowContext) -> str | None:
    await call.answer()
    await call.play(block.greeting, interrupt=not block.greeting_only)
    call.take_digits()
    if block.greeting_only:
        call.outcome = call.outcome or "completed"
        return None
    recording = await call.record(
        max_seconds=block.max_seconds, beep=block.beep, silence_timeout=block.silence_timeout
    )
    if ctx.save_voicemail is not None and recording.seconds >= 1.0 and recording.sound:
        await ctx.save_voicemail(call, block, recording)
        call.outcome = "voicemail"
    elif recording.path.exists():
        recording.path.unlink()  # nothing said: nothing kept
    if not call.hung_up:
        await call.play("goodbye")
    return None


async def run_queue(call: Call, block: QueueBlock, ctx: FlowContext) -> str | None:
    """The call-centre block: wait for an operator; afterwards the caller goes where the
    queue sent them (timeout, full, empty, exit key) or to `next` ("" hangs up)."""
    result = await call.queue(block.name)
    call.vars["queue"] = result
    if result.answered:
        return None
    # A target of "" hangs up; None (not configured) falls back to `next`.
    return (result.target if result.target is not None else block.next) or None


async def run_script(call: Call, block: ScriptBlock, ctx: FlowContext) -> str | None:
    fn = ctx.scripts.get(block.function) or load_function(block.function)
    result = await fn(call)
    return result if result is not None else block.next


def load_function(spec: str) -> ScriptFlow:
    """Import `module:function` (the config dir is on sys.path for `softswitch run`)."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    return fn


RUNNERS: dict[type, Callable[[Call, Any, FlowContext], Awaitable[str | None]]] = {
    PlayBlock: run_play,
    HangupBlock: run_hangup,
    DialBlock: run_dial,
    HoursBlock: run_hours,
    MenuBlock: run_menu,
    VoicemailBlock: run_voicemail,
    ScriptBlock: run_script,
    QueueBlock: run_queue,
}


def prompt_path(name: str, config: Config, base_dir: Path | None) -> Path:
    """Where a prompt name or file is: tones and music by prefix, then the audio
    module's resolution (media/<language>/NAME.wav or a file path)."""
    from softswitch import audio

    media_dir = config.switch.media_dir or audio.MEDIA_DIR
    if name == "beep":
        return media_dir / "tones" / "beep.wav"
    if name.startswith("music:"):
        return media_dir / "music" / f"{name[6:]}.wav"
    return audio.resolve_prompt(name, config.switch.language, base_dir, media_dir)
