/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The registry: what the daemon keeps about everyone, and nothing about
 * what a tunnel is.
 *
 *   tunnels    id -> tunnel (opaque here) with its owner's uid; the
 *              registry frees a tunnel it drops with the function given to
 *              tg_registry_new()
 *   usage      per uid: the connections of all their tunnels (TgUsage,
 *              shared with the workers)
 *   resolving  per uid: calls waiting for the resolver (a quota)
 *   watchers   which bus connections hear signals about whose tunnels
 *   running    the daemon's state: once stopping, calls that finish after
 *              waiting start nothing
 *
 * Requires: the D-Bus thread, always. It calls no tunnel code (tunnels
 * and the manager use it, never the other way round). */
#pragma once

#include <gio/gio.h>

#include "authz.h"
#include "counters.h"

typedef struct _TgRegistry TgRegistry;

/* @bus and @authz NULL: a registry nobody watches (unit tests). */
TgRegistry *tg_registry_new(GDBusConnection *bus, TgAuthz *authz,
                            GDestroyNotify free_tunnel);
/* Frees every tunnel left. */
void tg_registry_free(TgRegistry *registry);

/* ---- tunnels ---- */

/* A new tunnel id ("1", "2", ...); ids are never reused. */
char *tg_registry_new_tunnel_id(TgRegistry *registry);
/* Makes sure no new id is @id or below it: a tunnel restored after a restart
 * keeps its id ("12", digits only), and no new tunnel may take it. */
void tg_registry_reserve_tunnel_id(TgRegistry *registry, const char *id);
void tg_registry_add_tunnel(TgRegistry *registry, const char *id, uid_t owner,
                            gpointer tunnel);
/* Drops (and frees) the tunnel with this id. */
void tg_registry_remove_tunnel(TgRegistry *registry, const char *id);
/* The tunnel exported at @path, or NULL. */
gpointer tg_registry_find_tunnel(TgRegistry *registry, const char *path);
/* Every tunnel, in creation order (borrowed pointers), or those of @owner
 * and, with @manage, everyone's (who may see what: tg_registry_sees()). */
GPtrArray *tg_registry_list_tunnels(TgRegistry *registry);
GPtrArray *tg_registry_visible_tunnels(TgRegistry *registry, uid_t uid, gboolean manage);
guint tg_registry_count_tunnels(TgRegistry *registry, uid_t owner);
/* The ids of the tunnels the connection @bus_name may see, as a watcher
 * (below); none when it is not one (yet). NULL-terminated, g_strfreev(). */
char **tg_registry_visible_ids(TgRegistry *registry, const char *bus_name);
guint tg_registry_n_tunnels(TgRegistry *registry);

/* Who may see a tunnel of @owner (in lists and in signals): its owner, and
 * whoever has org.tunnelgate.manage. */
gboolean tg_registry_sees(uid_t uid, gboolean manage, uid_t owner);

/* ---- per-user usage ---- */

/* The usage record of @uid, created on first use; tg_usage_unref() it. */
TgUsage *tg_registry_usage(TgRegistry *registry, uid_t uid);
/* Everyone's usage (the DaemonMax... limits); tg_usage_unref() it. */
TgUsage *tg_registry_daemon_usage(TgRegistry *registry);

/* ---- calls waiting for the resolver ---- */

/* R destinations are resolved in a thread (getaddrinfo may take seconds):
 * at most TG_MAX_RESOLVING_PER_USER calls of one user at a time (a user
 * with names whose DNS never answers must not tie up the thread pool), and
 * the daemon waits for them before it exits. FALSE with LimitExceeded. */
#define TG_MAX_RESOLVING_PER_USER 4
gboolean tg_registry_begin_resolving(TgRegistry *registry, uid_t uid, GError **error);
void tg_registry_end_resolving(TgRegistry *registry, uid_t uid);
guint tg_registry_n_resolving(TgRegistry *registry);

/* ---- the daemon's state ---- */

/* SIGTERM: calls still in flight are refused when they come back. */
void tg_registry_stop(TgRegistry *registry);
/* FALSE with Failed once the daemon is stopping: for calls that finish
 * after waiting (a resolver, polkit), which must not start anything then. */
gboolean tg_registry_check_running(TgRegistry *registry, GError **error);

/* ---- who hears signals ---- */

/* Signals about tunnels go only to connections that may read them: a
 * connection becomes a watcher with its first authorized call (which tells
 * its uid and whether org.tunnelgate.manage was granted) and stops being
 * one when it leaves the bus. A watcher hears about its uid's tunnels, and
 * with manage about everyone's; polkit is asked again (without interaction)
 * every TG_WATCHER_RECHECK_SECONDS whether it still has manage, so a
 * one-shot or expired grant, or a changed rule, ends it. */
#define TG_WATCHER_RECHECK_SECONDS 10

/* Emits @signal_name of @interface at @path with @parameters (consumed if
 * floating) to each watcher that may see tunnels of @owner. */
void tg_registry_emit(TgRegistry *registry, uid_t owner, const char *path,
                      const char *interface, const char *signal_name,
                      GVariant *parameters);
