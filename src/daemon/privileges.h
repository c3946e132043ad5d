/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Dropping what the daemon does not need.
 *
 * tunnelgated starts as root but keeps only these capabilities:
 *  - CAP_SETUID, CAP_SETGID: the child that opens a caller's agent socket or
 *    key file drops to the caller's uid, gid and groups;
 *  - CAP_KILL: that child runs as the caller, so ending it on a timeout is
 *    signalling another user's process;
 *  - CAP_NET_ADMIN: the nftables firewall (netlink);
 *  - CAP_NET_BIND_SERVICE: root callers may forward privileged ports.
 * Everything else is removed from the effective, permitted, inheritable and
 * bounding sets, and no-new-privileges is set. In particular, without
 * CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, root's file access is bounded by
 * file permissions: a path that slipped past the open-as-caller rule still
 * could not reach a user's private files. */
#pragma once

#include <gio/gio.h>

gboolean tg_privileges_drop(GError **error);
