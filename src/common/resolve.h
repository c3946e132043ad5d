/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The one way names become addresses: where an R forward's connections go
 * (admission), the SSH server a session connects to (session), PermitServer
 * and ServerPermitOpen names for the firewall's sets (enforcer, server).
 *
 * tg_resolve_sync() blocks: call it only where waiting is allowed (a
 * session's or a worker's thread). tg_resolve_async() runs the lookups on a
 * worker thread and answers in the caller's thread-default main context; the
 * D-Bus thread uses it. */
#pragma once

#include <gio/gio.h>
#include <sys/socket.h>

#include "network.h"

/* Every IPv4 and IPv6 address of @host (a name, or an address as text) as
 * struct sockaddr_storage with @port set, in getaddrinfo's order. @flags are
 * getaddrinfo's ai_flags (AI_ADDRCONFIG, ...). NULL with G_RESOLVER_ERROR
 * when it does not resolve or has no IPv4/IPv6 address; the message is the
 * resolver's reason alone ("Name or service not known"), callers say what
 * they were resolving. */
GArray *tg_resolve_sync(const char *host, guint16 port, int flags, GError **error);

/* Appends every IPv4 and IPv6 address of @name to @networks as a
 * full-length TgNetwork; FALSE when it does not resolve. Blocks. */
gboolean tg_resolve_networks(const char *name, GArray *networks);

/* One name of a batch, as answered by tg_resolve_finish(). */
typedef struct {
  char *host;
  guint16 port;
  GArray *addresses; /* struct sockaddr_storage, or NULL when @error is set */
  GError *error;
} TgResolved;

void tg_resolved_free(TgResolved *resolved);

/* Resolves each of @hosts (with @ports[i], or port 0 when @ports is NULL) on
 * a worker thread (worker.h). Cancelling @cancellable makes the answer
 * G_IO_ERROR_CANCELLED (the callback's user_data may be gone by then: check
 * before using it). */
void tg_resolve_async(const char *const *hosts, const guint16 *ports, guint n_hosts,
                      GCancellable *cancellable, GAsyncReadyCallback callback,
                      gpointer user_data);

/* The answers, one TgResolved per host in the order asked (the array owns
 * them); NULL when cancelled or when no thread could be started. */
GPtrArray *tg_resolve_finish(GAsyncResult *result, GError **error);

/* The address part of a struct sockaddr_storage as a full-length TgNetwork. */
TgNetwork tg_resolve_to_network(const struct sockaddr_storage *address);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgResolved, tg_resolved_free)
