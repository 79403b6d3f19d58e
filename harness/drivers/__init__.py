"""Protocol drivers under the simulated SDK (see harness/sdk/driver.py and docs/drivers.md).

``DRIVERS`` maps a protocol name (``target.protocol``) to ``"module:Class"``; classes are
imported on first use, so a run pays only for the protocol it speaks."""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DRIVERS", "get_driver_class"]

DRIVERS: dict[str, str] = {
    "tim": "harness.drivers.tim:TimDriver",
    "xmpp": "harness.drivers.xmpp.driver:XmppDriver",
}


def get_driver_class(name: str) -> Any:
    """The driver class for protocol ``name``; ``ValueError`` naming the known ones otherwise."""
    where = DRIVERS.get(name)
    if where is None:
        raise ValueError(f"unknown protocol {name!r} (known: {', '.join(sorted(DRIVERS))})")
    module, _, cls = where.partition(":")
    return getattr(importlib.import_module(module), cls)
