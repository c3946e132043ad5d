/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the kernel knows of a TCP connection that its reader may not:
 * libssh reads its socket inside calls of its own (a keepalive's answer is
 * taken in ssh_send_keepalive()), so the bytes the peer sent are counted
 * by the kernel, not by who polled. Apart from session.c because glibc's
 * <netinet/tcp.h> lacks tcpi_bytes_received and clashes with
 * <linux/tcp.h>, which has it. */
#pragma once

#include <glib.h>

/* Payload bytes received on TCP socket @fd so far (RFC 4898
 * HCThruOctetsReceived); FALSE when the kernel cannot say. */
gboolean tg_tcp_bytes_received(int fd, guint64 *bytes);

/* A connection given up on but kept open: no user timeout any more, so
 * that the kernel keeps it (tcp_retries2) until tg_tcp_reset() tells the
 * peer it is over. */
void tg_tcp_keep(int fd);

/* Closes @fd with a reset (SO_LINGER 0): the peer drops the connection at
 * once, whatever it was waiting for. */
void tg_tcp_reset(int fd);
