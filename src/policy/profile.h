/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tunnel profiles: tunnels an administrator prepared in
 * /etc/tunnelgate/profiles.d/NAME.conf, which users start with
 * OpenTunnel("@NAME", ...) without ever seeing the key. Same syntax as the
 * policy (config-tokenizer.h):
 *
 *   Description  Intranet database for the DBA team
 *   Server       gw.corp.example.com:22
 *   User         tunnel-db
 *   IdentityFile /etc/tunnelgate/keys/db_ed25519
 *   HostKey      SHA256:...
 *   Forward      "L 127.0.0.1:5432:db.corp:5432"
 *   AllowGroups  dba,!contractors
 *
 * Server, User, IdentityFile, HostKey, at least one Forward, and AllowUsers
 * or AllowGroups are required. The forwards are still checked against the
 * policy for the user who starts the profile. Autostart yes (default no)
 * asks the daemon to open the tunnel itself and keep it up, owned by the
 * local account AutostartUser, which it then requires; AutostartUser needs
 * an Autostart line (yes, or no to keep it switched off). The daemon looks
 * the account up with NSS and lets it own the tunnel only if the profile's
 * AllowUsers/AllowGroups admit it (tg_profile_decide()). */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "policy.h"

typedef struct {
  char *name;
  char *file;
  char *description;   /* NULL when not given */
  char *server_host;   /* name or address, brackets removed */
  guint16 server_port; /* 22 when not given */
  char *user;          /* the remote user the key logs in as */
  char *identity_file; /* absolute; see tg_profile_check_identity_fd() */
  char *host_key;      /* "SHA256:<43 base64 characters>" */
  GPtrArray *forwards; /* TgForward, in file order */
  char **allow_users;  /* pattern list, or NULL */
  char **allow_groups; /* pattern list, or NULL */
  guint allow_users_line, allow_groups_line; /* first line of each; 0: not given */
  gboolean autostart;                        /* Autostart yes */
  char *autostart_user;      /* local account name (syntax checked only), or NULL */
  guint autostart_line;      /* line of Autostart; 0: not given */
  guint autostart_user_line; /* line of AutostartUser; 0: not given */
} TgProfile;

/* 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'. */
gboolean tg_profile_name_is_valid(const char *name);

/* Reads @dir/@name.conf. TG_ERROR_NOT_FOUND when there is no such profile,
 * TG_ERROR_INVALID_ARGUMENT for a bad name or a bad file (naming file:line). */
TgProfile *tg_profile_load(const char *dir, const char *name, GError **error);

/* Parses profile text; @file names it in messages. */
TgProfile *tg_profile_parse_string(const char *name, const char *file, const char *text,
                                   gssize length, GError **error);

void tg_profile_free(TgProfile *profile);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgProfile, tg_profile_free)

/* The profile names in @dir (valid names of *.conf files), sorted; an empty
 * list when @dir does not exist. The files are not parsed. */
char **tg_profile_list(const char *dir, GError **error);

/* AllowUsers and AllowGroups as in sshd: when both are given, the user must
 * match both; a matching "!pattern" excludes. The decision names the
 * profile's file, the line and the keyword that decided. */
TgPolicyDecision *tg_profile_decide(const TgProfile *profile,
                                    const TgPolicySubject *subject);
gboolean tg_profile_may_start(const TgProfile *profile, const TgPolicySubject *subject);

/* The key file, opened by the daemon: a regular file owned by @owner (root
 * for the daemon) with no permissions for group or others, as ssh(1)
 * demands of private keys. TG_ERROR_FAILED naming @path otherwise. */
gboolean tg_profile_check_identity_fd(int fd, const char *path, uid_t owner,
                                      GError **error);
