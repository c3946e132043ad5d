/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "peer-owner.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tg-error.h"

static gboolean
is_loopback(const struct sockaddr_storage *address)
{
  if (address->ss_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)address)->sin_addr.s_addr) >> 24) == 127;
  return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)address)->sin6_addr);
}

/* Fills the inet_diag id of the socket whose local end is @peer and whose
 * remote end is @local: the connecting socket, seen from its side. */
static void
fill_id(struct inet_diag_sockid *id, const struct sockaddr_storage *local,
        const struct sockaddr_storage *peer)
{
  if (peer->ss_family == AF_INET) {
    const struct sockaddr_in *p = (const struct sockaddr_in *)peer;
    const struct sockaddr_in *l = (const struct sockaddr_in *)local;

    id->idiag_sport = p->sin_port;
    id->idiag_dport = l->sin_port;
    memcpy(id->idiag_src, &p->sin_addr, 4);
    memcpy(id->idiag_dst, &l->sin_addr, 4);
  } else {
    const struct sockaddr_in6 *p = (const struct sockaddr_in6 *)peer;
    const struct sockaddr_in6 *l = (const struct sockaddr_in6 *)local;

    id->idiag_sport = p->sin6_port;
    id->idiag_dport = l->sin6_port;
    memcpy(id->idiag_src, &p->sin6_addr, 16);
    memcpy(id->idiag_dst, &l->sin6_addr, 16);
  }
  id->idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  id->idiag_cookie[1] = INET_DIAG_NOCOOKIE;
}

int
tg_peer_owner_open(GError **error)
{
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

  if (fd < 0)
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Cannot ask the kernel who connected (sock_diag): %s", g_strerror(errno));
  return fd;
}

static gboolean
ask_sock_diag(int fd, const struct sockaddr_storage *local,
              const struct sockaddr_storage *peer, gboolean *found, uid_t *uid,
              GError **error)
{
  struct {
    struct nlmsghdr header;
    struct inet_diag_req_v2 request;
  } message = {
    .header = { .nlmsg_len = sizeof message,
                .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                .nlmsg_flags = NLM_F_REQUEST,
                .nlmsg_seq = 1 },
    .request = { .sdiag_family = (guint8)peer->ss_family,
                 .sdiag_protocol = IPPROTO_TCP,
                 .idiag_states = ~0u },
  };
  union {
    struct nlmsghdr header;
    guint8 bytes[8192];
  } answer;
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  ssize_t received;
  int saved;

  fill_id(&message.request.id, local, peer);
  if (sendto(fd, &message, sizeof message, 0, (struct sockaddr *)&kernel, sizeof kernel) <
      0) {
    saved = errno;
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Cannot ask the kernel who connected (sock_diag): %s", g_strerror(saved));
    return FALSE;
  }
  do
    received = recv(fd, &answer, sizeof answer, 0);
  while (received < 0 && errno == EINTR);
  saved = errno;
  if (received < 0 || !NLMSG_OK(&answer.header, (guint)received)) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "No answer from the kernel about who connected (sock_diag): %s",
                received < 0 ? g_strerror(saved) : "short message");
    return FALSE;
  }
  if (answer.header.nlmsg_type == NLMSG_ERROR) {
    const struct nlmsgerr *nl_error = NLMSG_DATA(&answer.header);

    if (answer.header.nlmsg_len >= NLMSG_LENGTH(sizeof *nl_error) &&
        nl_error->error == -ENOENT) {
      *found = FALSE;
      return TRUE;
    }
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "The kernel cannot say who connected (sock_diag): %s",
                g_strerror(answer.header.nlmsg_len >= NLMSG_LENGTH(sizeof *nl_error)
                               ? -nl_error->error
                               : EPROTO));
    return FALSE;
  }
  if (answer.header.nlmsg_type != SOCK_DIAG_BY_FAMILY ||
      answer.header.nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_FAILED,
                        "The kernel's answer about who connected is not understood");
    return FALSE;
  }
  *found = TRUE;
  *uid = ((const struct inet_diag_msg *)NLMSG_DATA(&answer.header))->idiag_uid;
  return TRUE;
}

gboolean
tg_peer_owner(int fd, int *diag_fd, TgPeerKind *kind, uid_t *uid, GError **error)
{
  struct sockaddr_storage local, peer;
  socklen_t local_length = sizeof local, peer_length = sizeof peer;
  gboolean found = FALSE;

  if (getsockname(fd, (struct sockaddr *)&local, &local_length) != 0 ||
      getpeername(fd, (struct sockaddr *)&peer, &peer_length) != 0) {
    *kind = TG_PEER_GONE; /* the connection is already over */
    return TRUE;
  }
  if (peer.ss_family == AF_UNIX) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
      g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "SO_PEERCRED: %s", g_strerror(errno));
      return FALSE;
    }
    *kind = TG_PEER_LOCAL;
    *uid = credentials.uid;
    return TRUE;
  }
  if (peer.ss_family != AF_INET && peer.ss_family != AF_INET6) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Peer of address family %d",
                peer.ss_family);
    return FALSE;
  }
  if (*diag_fd < 0 && (*diag_fd = tg_peer_owner_open(error)) < 0)
    return FALSE;
  if (!ask_sock_diag(*diag_fd, &local, &peer, &found, uid, error))
    return FALSE;
  *kind = found ? TG_PEER_LOCAL : is_loopback(&peer) ? TG_PEER_GONE : TG_PEER_REMOTE;
  return TRUE;
}
