/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Who is at the other end of an accepted connection: the owner of the
 * connecting socket when it is on this host, from the kernel (sock_diag
 * for TCP, SO_PEERCRED for Unix sockets). Used by ListenerUsers where the
 * firewall does not stand (ListenerGuard off, no nftables) and as a second
 * check where it does. */
#pragma once

#include <glib.h>
#include <sys/types.h>

typedef enum {
  TG_PEER_LOCAL,  /* a socket of this host (network namespace): *uid is its owner */
  TG_PEER_REMOTE, /* no socket of this host has that address and port */
  TG_PEER_GONE,   /* a loopback peer whose socket is already gone */
} TgPeerKind;

/* @diag_fd: a sock_diag socket kept by the caller between calls (-1: opened
 * here the first time and left for the caller to close), so that a
 * connection accepted at the descriptor limit can still be asked about.
 * FALSE with @error when the kernel cannot be asked (sock_diag missing):
 * callers refuse the connection then. */
gboolean tg_peer_owner(int fd, int *diag_fd, TgPeerKind *kind, uid_t *uid,
                       GError **error);
/* Opens the sock_diag socket tg_peer_owner() uses; -1 and @error if it cannot. */
int tg_peer_owner_open(GError **error);
