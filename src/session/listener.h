/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Local listeners of L and D forwards: the sockets the daemon binds for a
 * caller. Binding happens on the D-Bus thread before the SSH session starts,
 * so "port in use" is reported at once and the real port of a port-0 forward
 * is known. The sockets listen at once; connections are accepted only when
 * the tunnel is up. */
#pragma once

#include <glib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "counters.h"
#include "credentials.h"
#include "forward-spec.h"
#include "policy-match.h"

typedef struct {
  int fd;
  guint forward_index; /* index of the forward in the tunnel's list */
  char address[INET6_ADDRSTRLEN];
  guint16 port;
  /* ListenerSources: the remote addresses (TgNetwork, full length) that may
   * connect besides loopback; NULL for any. Checked on accept, as well as by
   * the firewall's listener guard. Immutable once the worker has it. */
  GArray *allowed_sources;
  /* ListenerUsers: the local uids (guint32) that may connect besides root;
   * NULL for any. Checked on accept (the peer socket's owner, from the
   * kernel), as well as by the firewall. Immutable once the worker has it. */
  GArray *allowed_uids;
  /* A Unix socket listener: its path (created as owner, removed as owner
   * when the listener is freed); NULL for TCP. */
  char *path;
  TgSocketFile file;
  TgIdentity owner;
  /* MaxListeners and DaemonMaxListeners: the usage records this listener
   * counts in (NULL until charged), given back when it is freed */
  TgUsage *charged_user;
  TgUsage *charged_daemon;
} TgListener;

/* Binds the listening end of forward (TCP, L or D). A forward without a bind
 * address or with "localhost" binds 127.0.0.1 and ::1 on the same port, as
 * OpenSSH does, unless all_addresses (GatewayPorts yes, like ssh -g); "" and
 * "*" bind all addresses. Appends TgListener* to out. */
gboolean tg_listener_bind(const TgForward *forward, guint forward_index,
                          gboolean all_addresses, uid_t caller_uid, GPtrArray *out,
                          GError **error);

/* The Unix socket listener of forward (L local_socket:...), created as
 * @owner with mode 0600, its path resolved in the view @view_fd
 * (tg_open_view_as_user; it blocks: fork, wait; worker threads only). */
TgListener *tg_listener_bind_unix(const TgForward *forward, guint forward_index,
                                  const TgIdentity *owner, int view_fd, GError **error);

void tg_listener_free(TgListener *listener);

/* Counts @listener in @user's and the daemon's listeners until it is freed. */
void tg_listener_charge(TgListener *listener, TgUsage *user, TgUsage *daemon);

/* Whether a connection from @peer (a sockaddr_in/in6) may use @listener. */
gboolean tg_listener_allows_peer(const TgListener *listener,
                                 const struct sockaddr_storage *peer);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgListener, tg_listener_free)
