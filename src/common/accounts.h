/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The one walk over the user accounts NSS knows (getpwent), for the
 * firewall's lockdown exemptions and server mode's SFTP-only and jump-host
 * users, and the one over the groups (getgrent) that tells server mode
 * which groups NSS enumerates. getpwent's cursor is process-wide: every walk goes through
 * here, under one lock, so walks on different threads do not disturb each other. Blocks
 * (NSS may be remote): call it off the D-Bus thread where it can run for long. */
#pragma once

#include <glib.h>

typedef struct {
  guint32 uid;
  char *name;
} TgAccount;

/* Every account, in NSS order; an account listed twice (files and another
 * source) appears once, at its first place. The array owns its TgAccount*. */
GPtrArray *tg_accounts_list(void);

/* The name of every group NSS enumerates, in NSS order, each once. */
GPtrArray *tg_accounts_list_groups(void);

/* Lookups by name or uid, for names the policy gives and peers the kernel
 * reports. Blocking (NSS). The first two answer 1 found, 0 not found, -1
 * NSS could not answer. */
int tg_accounts_lookup_user(const char *name, guint32 *uid);
/* Appends (g_strdup) the members group @name lists (getent group NAME). */
int tg_accounts_group_members(const char *name, GPtrArray *members);
/* The user name of @uid, or NULL if NSS does not know it. */
char *tg_accounts_name_of(guint32 uid);
/* The name and primary group of @uid: 1 found (*@name and *@gid set), 0 not
 * found, -1 NSS could not answer. */
int tg_accounts_lookup_uid(guint32 uid, char **name, guint32 *gid);
