/* SPDX-License-Identifier: GPL-2.0-or-later */
/* org.tunnelgate.Manager1 and org.freedesktop.DBus.ObjectManager at
 * /org/tunnelgate/TunnelGate1: opening (the D-Bus side: opener.h opens), listing and
 * closing tunnels, and reloading the policy. The manager drives tunnels;
 * it is the top of the daemon's modules (main.c alone uses it). D-Bus
 * thread only. */
#pragma once

#include "daemon.h"

typedef struct _TgManager TgManager;

/* Exports the manager's interfaces; NULL with the error. */
TgManager *tg_manager_export(TgDaemon *daemon, GError **error);
/* Unexports and frees them: no new call reaches the manager. */
void tg_manager_unexport(TgManager *manager);

/* Loads the policy files; on success replaces the daemon's policy and has
 * every tunnel re-check itself (tg_tunnel_recheck()): tunnels whose server
 * the new policy forbids close, forbidden forwards are removed from the
 * others; the firewall follows the new policy. On error (a broken file, or
 * a firewall the new policy asks for that cannot be installed) nothing
 * changes and the error says why. */
gboolean tg_manager_reload(TgDaemon *daemon, GError **error);

/* SIGTERM: calls still in flight start nothing, every tunnel closes, and
 * this returns once they are all closed and no call waits for the
 * resolver. */
void tg_manager_close_all(TgDaemon *daemon);
