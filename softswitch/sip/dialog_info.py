"""Dialog state documents (RFC 4235, `application/dialog-info+xml`): what the switch's
NOTIFYs carry to a BLF key. Pure functions; `presence.py` decides what goes in them.

The switch always sends full state (`state="full"`) with at most one `<dialog>`: the
busiest dialog of the resource, so that a phone that looks at one element (many do, and
some look at the last) shows the right colour. An empty document means idle.

    <?xml version="1.0" encoding="UTF-8"?>
    <dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full"
                 entity="sip:102@pbx.example">
      <dialog id="5c0b5e0e9b1f2a47" direction="recipient">
        <state>early</state>
        <remote><identity display="Alice">sip:101@pbx.example</identity></remote>
      </dialog>
    </dialog-info>
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"
CONTENT_TYPE = "application/dialog-info+xml"


@dataclass(frozen=True)
class DialogView:
    """One `<dialog>` element as a watcher sees it."""

    id: str
    state: str  # early / confirmed / terminated
    direction: str = ""  # initiator (the phone called) / recipient (it is called) / ""
    remote: str = ""  # the other party's URI
    remote_display: str = ""  # and their name


def render(entity: str, version: int, dialogs: Iterable[DialogView]) -> bytes:
    """The document for resource `entity` (a SIP URI), `version` counting the NOTIFYs of
    one subscription from 0."""
    root = ET.Element(
        "dialog-info",
        {"xmlns": NAMESPACE, "version": str(version), "state": "full", "entity": entity},
    )
    for d in dialogs:
        attrs = {"id": d.id}
        if d.direction:
            attrs["direction"] = d.direction
        element = ET.SubElement(root, "dialog", attrs)
        ET.SubElement(element, "state").text = d.state
        if d.remote:
            remote = ET.SubElement(element, "remote")
            identity = ET.SubElement(
                remote, "identity", {"display": d.remote_display} if d.remote_display else {}
            )
            identity.text = d.remote
    text = ET.tostring(root, encoding="unicode", short_empty_elements=False)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n").encode()


@dataclass(frozen=True)
class Document:
    entity: str
    version: int
    state: str
    dialogs: tuple[DialogView, ...]


def parse(body: bytes | str) -> Document:
    """Read a dialog-info document (ours, or a test's expectations); raises ValueError."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from exc
    ns = "{" + NAMESPACE + "}"
    if root.tag != ns + "dialog-info":
        raise ValueError(f"not a dialog-info document: {root.tag}")
    dialogs = []
    for element in root.findall(ns + "dialog"):
        identity = element.find(f"{ns}remote/{ns}identity")
        dialogs.append(
            DialogView(
                id=element.get("id", ""),
                state=(element.findtext(ns + "state") or "").strip(),
                direction=element.get("direction", ""),
                remote=(identity.text or "").strip() if identity is not None else "",
                remote_display=identity.get("display", "") if identity is not None else "",
            )
        )
    return Document(
        entity=root.get("entity", ""),
        version=int(root.get("version", "-1")),
        state=root.get("state", ""),
        dialogs=tuple(dialogs),
    )
