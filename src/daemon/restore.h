/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The tunnels the daemon opens by itself, with nobody calling: the
 * persistent tunnels of the store (persist.h), restored when the daemon
 * starts, and the administrator's profiles with Autostart yes. Each goes
 * through the same path as OpenTunnel (opener.h), as its owner, against the
 * policy in force: a tunnel the daemon opens by itself gets nothing a
 * caller asking now would be refused. Nobody waits for it, so even its
 * first connection is tried again like a reconnect. It sits above the
 * opener and below the manager. D-Bus thread only. */
#pragma once

#include "daemon.h"

/* Every persistent tunnel in the store, opened again as its owner (looked
 * up by uid with NSS, who must still have the name they had), with the id
 * it had and its local listeners on the ports they had, and the polkit
 * actions granted at its first open. Every id in the store is reserved
 * first (tg_registry_reserve_tunnel_id()), also those of files that cannot
 * be read (skipped with a warning naming them, and left in place). A record
 * refused now (the policy, its profile, the account gone: a verdict) is
 * logged and removed; one that cannot be opened for another reason (NSS
 * not answering, a port in use, the firewall) is logged and kept for the
 * next start. Called once, when the daemon owns its bus name. */
void tg_restore_tunnels(TgDaemon *daemon);

/* Every profile with Autostart yes that has no tunnel running (or being
 * opened) from its Autostart, opened as its AutostartUser (looked up with
 * NSS) like @profile for that user: the profile's AllowUsers and AllowGroups
 * must admit them, the policy its server and forwards; no polkit action is
 * asked. The tunnel reconnects, is Persistent and not stored (its profile
 * opens it again). Refusals are logged (AUTOSTART_REFUSED). Called when the
 * daemon owns its bus name, after tg_restore_tunnels(), and after each
 * reload (which has closed the tunnels of profiles that no longer
 * autostart them). */
void tg_restore_autostart(TgDaemon *daemon);
