/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Forward specifications: the strings users pass to OpenTunnel/AddForward.
 *
 * Each forward is one string: a letter (L, R or D), one space, and exactly the
 * argument OpenSSH's ssh(1) takes for -L, -R or -D. Parsing follows OpenSSH's
 * parse_forward() (readconf.c): fields separated by ':', a field in [brackets]
 * is taken literally (IPv6 addresses), a field containing '/' is a Unix socket
 * path. This file is pure: no I/O, no name resolution. */
#pragma once

#include <glib.h>

typedef enum {
  TG_FORWARD_LOCAL,   /* L: listen here, connect from the server side */
  TG_FORWARD_REMOTE,  /* R: listen on the server, connect from here */
  TG_FORWARD_DYNAMIC, /* D: SOCKS listener here */
} TgForwardKind;

/* One end of a forward: either a TCP host:port or a Unix socket path. */
typedef struct {
  char *host;   /* TCP: host or address as written, brackets removed. For a
                 * listening end: NULL when no bind address was given (OpenSSH
                 * default: loopback), "" or "*" for all addresses. */
  guint16 port; /* TCP port; 0 is valid only for a listening end */
  char *path;   /* Unix socket path, or NULL for TCP */
} TgEndpoint;

typedef struct {
  TgForwardKind kind;
  TgEndpoint listen;       /* L/D: local listener; R: listener on the server */
  TgEndpoint connect;      /* where connections go; unused (all zero) for D, and
                            * for R with only a listen part (remote dynamic) */
  gboolean remote_dynamic; /* "R [bind:]port" without a target (ssh -R port) */
  char *spec;              /* canonical form, e.g. "L 127.0.0.1:8080:intra:80" */
} TgForward;

/* Parses "L 8080:intra:80" etc. On error returns NULL and sets
 * TG_ERROR_INVALID_ARGUMENT with a message naming the bad part. */
TgForward *tg_forward_parse(const char *spec, GError **error);
TgForward *tg_forward_copy(const TgForward *forward);
void tg_forward_free(TgForward *forward);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgForward, tg_forward_free)

/* TRUE when the listening end is TCP on loopback only: no bind address,
 * "localhost", 127.0.0.0/8 or ::1. */
gboolean tg_forward_listens_on_loopback_only(const TgForward *forward);

/* NULL when @host is a host name or IP address forwards and destinations
 * accept (the same test for SOCKS requests), else what is wrong with it:
 * characters outside letters, digits, '.', '_' and '-', a bad IPv6
 * literal, or an IPv4 address in a form other than a.b.c.d ("10.0x1.2.3",
 * "167772161"), which the resolver reads as an address that a policy
 * comparing names or dotted quads would not. */
const char *tg_forward_host_problem(const char *host);

/* Destinations: "[user@]host[:port]", IPv6 in brackets ("[::1]:2222"),
 * or "@profile" for an administrator's tunnel profile. */
typedef struct {
  char *user;    /* NULL when not given */
  char *host;    /* brackets removed; NULL for a profile */
  guint16 port;  /* 22 when not given */
  char *profile; /* profile name for "@name", else NULL */
} TgDestination;

TgDestination *tg_destination_parse(const char *text, GError **error);
void tg_destination_free(TgDestination *destination);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgDestination, tg_destination_free)
