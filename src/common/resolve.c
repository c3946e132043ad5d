/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "resolve.h"

#include "worker.h"

#include <netdb.h>
#include <netinet/in.h>
#include <string.h>

GArray *
tg_resolve_sync(const char *host, guint16 port, int flags, GError **error)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = flags };
  struct addrinfo *result = NULL;
  g_autoptr(GArray) addresses = NULL;
  char service[8];
  int rc;

  g_snprintf(service, sizeof service, "%u", port);
  rc = getaddrinfo(host, service, &hints, &result);
  if (rc != 0) {
    g_set_error_literal(error, G_RESOLVER_ERROR,
                        rc == EAI_AGAIN ? G_RESOLVER_ERROR_TEMPORARY_FAILURE
                                        : G_RESOLVER_ERROR_NOT_FOUND,
                        gai_strerror(rc));
    return NULL;
  }
  addresses = g_array_new(FALSE, TRUE, sizeof(struct sockaddr_storage));
  for (struct addrinfo *a = result; a != NULL; a = a->ai_next) {
    struct sockaddr_storage address = { 0 };

    if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
        a->ai_addrlen > sizeof address)
      continue;
    memcpy(&address, a->ai_addr, a->ai_addrlen);
    g_array_append_val(addresses, address);
  }
  freeaddrinfo(result);
  if (addresses->len == 0) {
    g_set_error_literal(error, G_RESOLVER_ERROR, G_RESOLVER_ERROR_NOT_FOUND,
                        "no IPv4 or IPv6 address");
    return NULL;
  }
  return g_steal_pointer(&addresses);
}

TgNetwork
tg_resolve_to_network(const struct sockaddr_storage *address)
{
  TgNetwork network = { 0 };

  if (address->ss_family == AF_INET) {
    network.family = AF_INET;
    network.prefix = 32;
    memcpy(network.bytes, &((const struct sockaddr_in *)address)->sin_addr, 4);
  } else if (address->ss_family == AF_INET6) {
    network.family = AF_INET6;
    network.prefix = 128;
    memcpy(network.bytes, &((const struct sockaddr_in6 *)address)->sin6_addr, 16);
  }
  return network;
}

gboolean
tg_resolve_networks(const char *name, GArray *networks)
{
  g_autoptr(GArray) addresses = tg_resolve_sync(name, 0, 0, NULL);

  if (addresses == NULL)
    return FALSE;
  for (guint i = 0; i < addresses->len; i++) {
    TgNetwork network =
        tg_resolve_to_network(&g_array_index(addresses, struct sockaddr_storage, i));
    g_array_append_val(networks, network);
  }
  return TRUE;
}

void
tg_resolved_free(TgResolved *resolved)
{
  if (resolved == NULL)
    return;
  g_free(resolved->host);
  if (resolved->addresses != NULL)
    g_array_unref(resolved->addresses);
  g_clear_error(&resolved->error);
  g_free(resolved);
}

static void
resolve_thread(GTask *task, gpointer source, gpointer task_data,
               GCancellable *cancellable)
{
  GPtrArray *batch = task_data;

  for (guint i = 0; i < batch->len && !g_cancellable_is_cancelled(cancellable); i++) {
    TgResolved *resolved = g_ptr_array_index(batch, i);

    resolved->addresses =
        tg_resolve_sync(resolved->host, resolved->port, 0, &resolved->error);
  }
  g_task_return_pointer(task, g_ptr_array_ref(batch), (GDestroyNotify)g_ptr_array_unref);
}

void
tg_resolve_async(const char *const *hosts, const guint16 *ports, guint n_hosts,
                 GCancellable *cancellable, GAsyncReadyCallback callback,
                 gpointer user_data)
{
  g_autoptr(GTask) task = g_task_new(NULL, cancellable, callback, user_data);
  GPtrArray *batch = g_ptr_array_new_full(n_hosts, (GDestroyNotify)tg_resolved_free);

  g_task_set_source_tag(task, tg_resolve_async);
  for (guint i = 0; i < n_hosts; i++) {
    TgResolved *resolved = g_new0(TgResolved, 1);

    resolved->host = g_strdup(hosts[i]);
    resolved->port = ports != NULL ? ports[i] : 0;
    g_ptr_array_add(batch, resolved);
  }
  g_task_set_task_data(task, batch, (GDestroyNotify)g_ptr_array_unref);
  tg_worker_run(task, resolve_thread);
}

GPtrArray *
tg_resolve_finish(GAsyncResult *result, GError **error)
{
  g_return_val_if_fail(g_task_is_valid(result, NULL), NULL);
  return g_task_propagate_pointer(G_TASK(result), error);
}
