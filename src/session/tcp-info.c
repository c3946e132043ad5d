/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "tcp-info.h"

#include <unistd.h>
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
tg_tcp_keep(int fd)
{
  unsigned int none = 0;

  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &none, sizeof none);
}

void
tg_tcp_reset(int fd)
{
  struct linger reset = { .l_onoff = 1, .l_linger = 0 };

  setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  close(fd);
}
