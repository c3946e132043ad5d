/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Credentials a caller brings: their ssh-agent and their key files.
 *
 * The daemon runs as root, so it must never open a path a caller names with
 * its own rights. A path is opened in a short-lived child process that first
 * drops to the caller's uid, gid and supplementary groups; the child passes
 * the open descriptor back over a socketpair (SCM_RIGHTS) and exits. The
 * daemon then only reads from a descriptor the caller could open anyway.
 * These functions block (fork, wait); call them from a tunnel's worker
 * thread, never from the D-Bus thread. */
#pragma once

#include <glib.h>
#include <sys/types.h>

typedef struct {
  uid_t uid;
  gid_t gid;
  char *user_name;
} TgIdentity;

/* Connects to the Unix socket at path as the given user. */
int tg_connect_unix_as_user(const TgIdentity *user, const char *path, GError **error);

/* Opens path read-only as the given user. */
int tg_open_file_as_user(const TgIdentity *user, const char *path, GError **error);

/* Creates a listening Unix socket at path as the given user, with mode
 * 0600 (the user's umask does not matter): the user owns the file, and
 * may create it only where they could. Returns it non-blocking. An
 * existing file is not replaced (AddressInUse). */
int tg_listen_unix_as_user(const TgIdentity *user, const char *path, GError **error);

/* Removes path as the given user. */
gboolean tg_unlink_as_user(const TgIdentity *user, const char *path, GError **error);

/* Checks that the process at the other end of a Unix socket runs as uid:
 * a caller may use only their own ssh-agent. */
gboolean tg_socket_peer_is_uid(int fd, uid_t uid, GError **error);

/* Reads a whole key file from fd (regular file, pipe or socket) up to
 * max_bytes, within one overall deadline; fails when the content is longer,
 * when it takes too long, or when cancel_fd becomes readable. */
GBytes *tg_read_key_fd(int fd, gsize max_bytes, int cancel_fd, GError **error);
