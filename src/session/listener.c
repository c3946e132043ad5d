/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tg-error.h"

/* Ports below this need root, as for any unprivileged process: the daemon
 * must not lend its privilege to a caller who asks for port 80. */
#define FIRST_UNPRIVILEGED_PORT 1024

void
tg_listener_charge(TgListener *listener, TgUsage *user, TgUsage *daemon)
{
  g_return_if_fail(listener->charged_user == NULL);

  listener->charged_user = tg_usage_ref(user);
  listener->charged_daemon = tg_usage_ref(daemon);
  atomic_fetch_add(&user->listeners, 1);
  atomic_fetch_add(&daemon->listeners, 1);
}

void
tg_listener_free(TgListener *listener)
{
  if (listener == NULL)
    return;
  if (listener->fd >= 0)
    close(listener->fd);
  if (listener->allowed_sources != NULL)
    g_array_unref(listener->allowed_sources);
  if (listener->allowed_uids != NULL)
    g_array_unref(listener->allowed_uids);
  if (listener->charged_user != NULL) {
    atomic_fetch_sub(&listener->charged_user->listeners, 1);
    atomic_fetch_sub(&listener->charged_daemon->listeners, 1);
    tg_usage_unref(listener->charged_user);
    tg_usage_unref(listener->charged_daemon);
  }
  if (listener->path != NULL) {
    g_autoptr(GError) error = NULL;

    if (!tg_unlink_socket_as_user(&listener->owner, &listener->file, &error))
      g_warning("Cannot remove the socket %s of a closed forward: %s", listener->path,
                error->message);
    tg_socket_file_clear(&listener->file);
    g_free(listener->path);
    g_free(listener->owner.user_name);
  }
  g_free(listener);
}

TgListener *
tg_listener_bind_unix(const TgForward *forward, guint forward_index,
                      const TgIdentity *owner, int view_fd, GError **error)
{
  TgSocketFile file = { .dir_fd = -1 };
  TgListener *listener;
  int fd = tg_listen_unix_as_user(owner, view_fd, forward->listen.path, &file, error);

  if (fd < 0) {
    g_prefix_error(error, "Forward '%s': ", forward->spec);
    return NULL;
  }
  listener = g_new0(TgListener, 1);
  listener->fd = fd;
  listener->forward_index = forward_index;
  listener->path = g_strdup(forward->listen.path);
  listener->file = file;
  listener->owner.uid = owner->uid;
  listener->owner.gid = owner->gid;
  listener->owner.user_name = g_strdup(owner->user_name);
  return listener;
}

gboolean
tg_listener_allows_peer(const TgListener *listener, const struct sockaddr_storage *peer)
{
  static const guint8 v6_loopback[16] = { [15] = 1 };
  static const guint8 v4_mapped[12] = { [10] = 0xff, [11] = 0xff };
  guint8 bytes[16];
  int family;

  if (peer->ss_family == AF_INET) {
    family = AF_INET;
    memcpy(bytes, &((const struct sockaddr_in *)peer)->sin_addr, 4);
  } else if (peer->ss_family == AF_INET6) {
    const guint8 *raw = ((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr;

    if (memcmp(raw, v4_mapped, 12) == 0) {
      family = AF_INET;
      memcpy(bytes, raw + 12, 4);
    } else {
      family = AF_INET6;
      memcpy(bytes, raw, 16);
    }
  } else {
    /* a Unix socket: its file mode (0600, the caller's) decides */
    return peer->ss_family == AF_UNIX;
  }
  if ((family == AF_INET && bytes[0] == 127) ||
      (family == AF_INET6 && memcmp(bytes, v6_loopback, 16) == 0))
    return TRUE;
  if (listener->allowed_sources == NULL)
    return TRUE;
  for (guint i = 0; i < listener->allowed_sources->len; i++) {
    const TgNetwork *source = &g_array_index(listener->allowed_sources, TgNetwork, i);
    if (source->family == family &&
        memcmp(source->bytes, bytes, family == AF_INET ? 4 : 16) == 0)
      return TRUE;
  }
  return FALSE;
}

static gboolean
parse_bind_address(const char *text, int *family, struct sockaddr_storage *address,
                   GError **error)
{
  struct sockaddr_in *v4 = (struct sockaddr_in *)address;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)address;

  memset(address, 0, sizeof *address);
  if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
    v4->sin_family = *family = AF_INET;
    return TRUE;
  }
  if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
    v6->sin6_family = *family = AF_INET6;
    return TRUE;
  }
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
              "Bind address '%s' must be an IP address, 'localhost' or '*'", text);
  return FALSE;
}

static TgListener *
bind_one(const struct sockaddr_storage *address, guint16 port, guint forward_index,
         const char *spec, GError **error)
{
  g_autoptr(TgListener) listener = g_new0(TgListener, 1);
  struct sockaddr_storage bound = *address;
  socklen_t length = bound.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                : sizeof(struct sockaddr_in6);
  int one = 1;

  if (bound.ss_family == AF_INET)
    ((struct sockaddr_in *)&bound)->sin_port = htons(port);
  else
    ((struct sockaddr_in6 *)&bound)->sin6_port = htons(port);

  listener->forward_index = forward_index;
  listener->fd = socket(bound.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener->fd < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Forward '%s': socket: %s", spec,
                g_strerror(errno));
    return NULL;
  }
  setsockopt(listener->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bound.ss_family == AF_INET6)
    setsockopt(listener->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);

  if (bind(listener->fd, (struct sockaddr *)&bound, length) != 0) {
    int saved = errno;
    char text[INET6_ADDRSTRLEN] = "";
    const void *raw = bound.ss_family == AF_INET
                          ? (const void *)&((struct sockaddr_in *)&bound)->sin_addr
                          : (const void *)&((struct sockaddr_in6 *)&bound)->sin6_addr;

    inet_ntop(bound.ss_family, raw, text, sizeof text);
    g_set_error(error, TG_ERROR,
                saved == EADDRINUSE ? TG_ERROR_ADDRESS_IN_USE : TG_ERROR_INVALID_ARGUMENT,
                "Forward '%s': cannot listen on %s%s%s port %u: %s", spec,
                bound.ss_family == AF_INET6 ? "[" : "", text,
                bound.ss_family == AF_INET6 ? "]" : "", port, g_strerror(saved));
    errno = saved; /* bind_pair() skips an address this host lacks */
    return NULL;
  }

  /* listen at once: two sockets with SO_REUSEADDR may both bind one port as
   * long as neither listens, so only listen() makes the port ours. Clients
   * wait in the backlog until the tunnel is up (or are reset if it fails). */
  if (listen(listener->fd, SOMAXCONN) != 0) {
    int saved = errno;
    g_set_error(
        error, TG_ERROR, saved == EADDRINUSE ? TG_ERROR_ADDRESS_IN_USE : TG_ERROR_FAILED,
        "Forward '%s': cannot listen on port %u: %s", spec, port, g_strerror(saved));
    errno = saved;
    return NULL;
  }

  length = sizeof bound;
  getsockname(listener->fd, (struct sockaddr *)&bound, &length);
  if (bound.ss_family == AF_INET) {
    inet_ntop(AF_INET, &((struct sockaddr_in *)&bound)->sin_addr, listener->address,
              sizeof listener->address);
    listener->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  } else {
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&bound)->sin6_addr, listener->address,
              sizeof listener->address);
    listener->port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
  }
  return g_steal_pointer(&listener);
}

/* Binds the addresses in order on one port; the first decides a port 0. The
 * second address of a pair is optional when the host lacks it (no IPv6). */
static gboolean
bind_pair(const char *first, const char *second, guint16 port, guint forward_index,
          const char *spec, GPtrArray *out, GError **error)
{
  struct sockaddr_storage address;
  int family;
  TgListener *listener;

  if (!parse_bind_address(first, &family, &address, error))
    return FALSE;
  listener = bind_one(&address, port, forward_index, spec, error);
  if (listener == NULL)
    return FALSE;
  g_ptr_array_add(out, listener);
  if (second == NULL)
    return TRUE;

  parse_bind_address(second, &family, &address, NULL);
  g_autoptr(GError) local_error = NULL;
  listener = bind_one(&address, listener->port, forward_index, spec, &local_error);
  if (listener != NULL) {
    g_ptr_array_add(out, listener);
    return TRUE;
  }
  if (errno == EADDRNOTAVAIL || errno == EAFNOSUPPORT)
    return TRUE; /* no IPv6 (or IPv4) on this host */
  g_propagate_error(error, g_steal_pointer(&local_error));
  return FALSE;
}

gboolean
tg_listener_bind(const TgForward *forward, guint forward_index, gboolean all_addresses,
                 uid_t caller_uid, GPtrArray *out, GError **error)
{
  const char *host = forward->listen.host;
  guint16 port = forward->listen.port;

  g_return_val_if_fail(forward->kind != TG_FORWARD_REMOTE, FALSE);
  if (forward->listen.path != NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_SUPPORTED,
                "Forward '%s': listening on a Unix socket is not supported yet",
                forward->spec);
    return FALSE;
  }
  if (port != 0 && port < FIRST_UNPRIVILEGED_PORT && caller_uid != 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                "Forward '%s': port %u is a privileged port (below %d); only root "
                "may listen on it",
                forward->spec, port, FIRST_UNPRIVILEGED_PORT);
    return FALSE;
  }

  if (host == NULL && all_addresses)
    return bind_pair("0.0.0.0", "::", port, forward_index, forward->spec, out, error);
  if (host == NULL || g_ascii_strcasecmp(host, "localhost") == 0)
    return bind_pair("127.0.0.1", "::1", port, forward_index, forward->spec, out, error);
  if (host[0] == '\0' || g_str_equal(host, "*"))
    return bind_pair("0.0.0.0", "::", port, forward_index, forward->spec, out, error);
  return bind_pair(host, NULL, port, forward_index, forward->spec, out, error);
}
