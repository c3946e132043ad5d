/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "tcp-info.h"

#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

gboolean
tg_tcp_bytes_received(int fd, guint64 *bytes)
{
  struct tcp_info info;
  socklen_t length = sizeof info;

  if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0 ||
      length < offsetof(struct tcp_info, tcpi_bytes_received) +
                   sizeof info.tcpi_bytes_received)
    return FALSE;
  *bytes = info.tcpi_bytes_received;
  return TRUE;
}

void
tg_tcp_prepare_orphan(int fd)
{
  unsigned int none = 0;
  char buffer[4096];

  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &none, sizeof none);
  for (int i = 0; i < 64; i++) {
    ssize_t n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);

    if (n <= 0 && !(n < 0 && errno == EINTR))
      break;
  }
}
