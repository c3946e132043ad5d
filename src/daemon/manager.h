/* SPDX-License-Identifier: GPL-2.0-or-later */
/* org.tunnelgate.Manager1 and org.freedesktop.DBus.ObjectManager at
 * /org/tunnelgate/TunnelGate1: opening, listing and closing tunnels. */
#pragma once

#include "daemon.h"

/* The table of watchers (see tg_daemon_emit_to_watchers()), for
 * daemon->watchers. */
GHashTable *tg_manager_new_watchers(void);
gboolean tg_manager_export(TgDaemon *daemon, GError **error);
void tg_manager_unexport(TgDaemon *daemon);
