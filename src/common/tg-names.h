/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The public names of tunnelgate (SPEC.md): the one place the daemon, the
 * command line and the tests take them from. The integration tests read
 * this file (tests/integration/names.py), so each name stays a plain
 * `#define NAME "value"` on one line. Error names are in tg-error.c's
 * table, next to the codes they map. */
#pragma once

#define TG_BUS_NAME "org.tunnelgate.TunnelGate1"
#define TG_MANAGER_PATH "/org/tunnelgate/TunnelGate1"
#define TG_TUNNEL_PATH_PREFIX "/org/tunnelgate/TunnelGate1/tunnel/"
#define TG_MANAGER_INTERFACE "org.tunnelgate.Manager1"
#define TG_TUNNEL_INTERFACE "org.tunnelgate.Tunnel1"
#define TG_ERROR_PREFIX "org.tunnelgate.Error."

#define TG_ACTION_ID_OPEN "org.tunnelgate.open"
#define TG_ACTION_ID_OPEN_REMOTE "org.tunnelgate.open-remote"
#define TG_ACTION_ID_BIND_ANY "org.tunnelgate.bind-any"
#define TG_ACTION_ID_USE_PROFILE "org.tunnelgate.use-profile"
#define TG_ACTION_ID_MANAGE "org.tunnelgate.manage"

#define TG_DBUS_PROPERTIES_INTERFACE "org.freedesktop.DBus.Properties"
#define TG_DBUS_OBJECT_MANAGER_INTERFACE "org.freedesktop.DBus.ObjectManager"
