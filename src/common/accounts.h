/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The one walk over the user accounts NSS knows (getpwent), for the
 * firewall's lockdown exemptions and server mode's SFTP-only and jump-host
 * users. getpwent's cursor is process-wide: every walk goes through here,
 * under one lock, so walks on different threads do not disturb each other.
 * Blocks (NSS may be remote): call it off the D-Bus thread where it can run
 * for long. */
#pragma once

#include <glib.h>

typedef struct {
  guint32 uid;
  char *name;
} TgAccount;

/* Every account, in NSS order; an account listed twice (files and another
 * source) appears once, at its first place. The array owns its TgAccount*. */
GPtrArray *tg_accounts_list(void);
