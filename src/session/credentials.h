/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Credentials a caller brings: their ssh-agent and their key files; and
 * the socket files of their Unix-socket listeners.
 *
 * The daemon runs as root, so it must never open a path a caller names with
 * its own rights. A path is opened in a short-lived child process that first
 * drops to the caller's uid, gid and supplementary groups; the child passes
 * the open descriptor back over a socketpair (SCM_RIGHTS) and exits. The
 * daemon then only reads from a descriptor the caller could open anyway.
 *
 * A path means what it means to the caller: it is resolved in the calling
 * process's file-system view (its root directory, /proc/PID/root, with the
 * mounts of its mount namespace), never in the daemon's own, which systemd
 * sandboxes (its own /tmp, homes read-only). tg_open_view_as_user() opens
 * that view, as the caller; the functions taking a view_fd resolve paths
 * beneath it (openat2 RESOLVE_IN_ROOT).
 *
 * These functions block (fork, wait); call them from a tunnel's worker
 * thread, never from the D-Bus thread. */
#pragma once

#include <glib.h>
#include <sys/types.h>

typedef struct {
  uid_t uid;
  gid_t gid;
  char *user_name;
  pid_t pid; /* the calling process, whose view paths are resolved in; 0: none */
} TgIdentity;

/* The root directory of user->pid (an O_PATH descriptor), opened as user:
 * the kernel allows it only if the process runs as that user (its uid and
 * primary gid), is dumpable and holds no capabilities, so a pid reused by
 * another user's process cannot be opened. Without a pid, and for root
 * (uid 0) when the kernel refuses (a process with capabilities the daemon
 * lacks), the daemon's own root: its view is the host's, mostly read-only.
 * Otherwise -1 with error (the process has exited, or is not the user's). */
int tg_open_view_as_user(const TgIdentity *user, GError **error);

/* Connects to the Unix socket at path (in the view view_fd) as the user. */
int tg_connect_unix_as_user(const TgIdentity *user, int view_fd, const char *path,
                            GError **error);

/* Opens path (in the view view_fd) read-only as the given user. */
int tg_open_file_as_user(const TgIdentity *user, int view_fd, const char *path,
                         GError **error);

/* A socket file made by tg_listen_unix_as_user(): the directory it is in
 * (O_PATH, found in the view it was made in), its name there and its inode. */
typedef struct {
  int dir_fd;
  char *name;
  dev_t dev;
  ino_t ino;
} TgSocketFile;

/* Creates a listening Unix socket at path (in the view view_fd) as the
 * given user, with mode 0600 (the user's umask does not matter): the user
 * owns the file, and may create it only where they could. Returns it
 * non-blocking, and fills file. An existing file (a symbolic link too) is
 * neither replaced nor followed (AddressInUse). */
int tg_listen_unix_as_user(const TgIdentity *user, int view_fd, const char *path,
                           TgSocketFile *file, GError **error);

/* Removes the socket file as the given user, if it is still the one made
 * (a file the user put in its place stays). */
gboolean tg_unlink_socket_as_user(const TgIdentity *user, const TgSocketFile *file,
                                  GError **error);

/* Closes file's directory and frees its name. */
void tg_socket_file_clear(TgSocketFile *file);

/* Checks that the process at the other end of a Unix socket runs as uid:
 * a caller may use only their own ssh-agent. */
gboolean tg_socket_peer_is_uid(int fd, uid_t uid, GError **error);

/* Reads a whole key file from fd (regular file, pipe or socket) up to
 * max_bytes, within one overall deadline; fails when the content is longer,
 * when it takes too long, or when cancel_fd becomes readable. */
GBytes *tg_read_key_fd(int fd, gsize max_bytes, int cancel_fd, GError **error);
