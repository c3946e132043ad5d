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

/* A connection given up on: no user timeout any more, and what the peer
 * sent and nobody will read dropped, so that close() sends a FIN, which
 * the kernel keeps retransmitting (tcp_orphan_retries) until the path is
 * back and the peer hears that the session is over, instead of a single
 * RST lost on a dead path. */
void tg_tcp_prepare_orphan(int fd);
