# SPDX-License-Identifier: GPL-2.0-or-later
"""tunnelgate's public names, read from src/common/tg-names.h (the header the
daemon and tunnelgatectl are built with), so the tests cannot drift from them.

Each `#define TG_NAME "value"` line becomes NAME here: BUS_NAME, MANAGER_PATH,
TUNNEL_PATH_PREFIX, MANAGER_INTERFACE, TUNNEL_INTERFACE, ERROR_PREFIX,
ACTION_ID_OPEN, ACTION_ID_OPEN_REMOTE, ACTION_ID_BIND_ANY,
ACTION_ID_USE_PROFILE, ACTION_ID_MANAGE, DBUS_PROPERTIES_INTERFACE,
DBUS_OBJECT_MANAGER_INTERFACE. ALL is {NAME: value} of every define.
"""

import re
from pathlib import Path

HEADER = Path(__file__).resolve().parents[2] / "src" / "common" / "tg-names.h"

_DEFINE = re.compile(r'^\s*#\s*define\s+TG_(\w+)\s+"([^"\\]*)"\s*(?:/\*.*\*/\s*)?$')


def parse(path=HEADER):
    """{NAME: value} of the header's `#define TG_NAME "value"` lines."""
    return {m.group(1): m.group(2) for m in map(_DEFINE.match, Path(path).read_text().splitlines())
            if m}


ALL = parse()


def _name(key):
    try:
        return ALL[key]
    except KeyError:
        raise ImportError(f"{HEADER} defines no TG_{key}") from None


BUS_NAME = _name("BUS_NAME")
MANAGER_PATH = _name("MANAGER_PATH")
TUNNEL_PATH_PREFIX = _name("TUNNEL_PATH_PREFIX")
MANAGER_INTERFACE = _name("MANAGER_INTERFACE")
TUNNEL_INTERFACE = _name("TUNNEL_INTERFACE")
ERROR_PREFIX = _name("ERROR_PREFIX")
ACTION_ID_OPEN = _name("ACTION_ID_OPEN")
ACTION_ID_OPEN_REMOTE = _name("ACTION_ID_OPEN_REMOTE")
ACTION_ID_BIND_ANY = _name("ACTION_ID_BIND_ANY")
ACTION_ID_USE_PROFILE = _name("ACTION_ID_USE_PROFILE")
ACTION_ID_MANAGE = _name("ACTION_ID_MANAGE")
DBUS_PROPERTIES_INTERFACE = _name("DBUS_PROPERTIES_INTERFACE")
DBUS_OBJECT_MANAGER_INTERFACE = _name("DBUS_OBJECT_MANAGER_INTERFACE")
